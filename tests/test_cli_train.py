"The installed console commands: --help lists every option; msd_train trains, refuses bad input without touching files, resumes."
import inspect, json, os, shutil, subprocess, sys
from pathlib import Path
import pytest
import torch

BIN = Path(sys.executable).parent
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}
TINY = ['--preset', 'tiny', '--batch-size', '8', '--warmup', '0', '--ckpt-every', '2', '--log-every', '2', '--no-progress']


def cmd(name, *args, timeout=120):
    exe = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if exe is None: pytest.skip(f'{name} is not installed: run `pip install -e .`')
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)


def snapshot(d): return {p.name: p.read_bytes() for p in Path(d).iterdir()} if Path(d).exists() else {}


@pytest.mark.parametrize('name,func', [('msd_train', 'train_cli'), ('msd_cluster', 'cluster_cli')])
def test_help_lists_every_option(name, func):
    import multistage_nbdev.cli as cli
    out = cmd(name, '--help')
    assert out.returncode == 0, out.stderr
    params = inspect.signature(getattr(cli, func)).parameters
    for p in params.values():
        flag = f'--no-{p.name}' if p.default is True else f'--{p.name}'
        assert flag in out.stdout, f'{flag} missing from {name} --help'


def test_train_refuse_and_resume(tmp_path):
    d = tmp_path / 'run'
    r = cmd('msd_train', *TINY, '--iters', '4', '--ckpt-dir', d)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'per stage' in r.stdout and (d / 'ckpt_00000004.pt').exists() and (d / 'loss.png').exists()
    before = snapshot(d)
    # the same folder again without --resume: refused, nothing touched
    r = cmd('msd_train', *TINY, '--iters', '4', '--ckpt-dir', d)
    assert r.returncode == 2 and 'already holds checkpoints' in r.stderr and 'Traceback' not in r.stderr
    # resuming with another configuration: refused, naming the difference
    r = cmd('msd_train', *TINY, '--iters', '6', '--ckpt-dir', d, '--resume', '--arch', 'unified')
    assert r.returncode == 2 and 'another configuration' in r.stderr and 'arch' in r.stderr, r.stderr[-2000:]
    assert snapshot(d) == before
    r = cmd('msd_train', *TINY, '--iters', '6', '--ckpt-dir', d, '--resume')
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith('step 6') and (d / 'ckpt_00000006.pt').exists()
    log = [json.loads(l) for l in (d / 'log.jsonl').read_text().splitlines()]
    assert [x['step'] for x in log] == [2, 4, 6]


def test_bad_input_is_reported_and_writes_nothing(tmp_path):
    from multistage_nbdev.testing import write_image_folder
    folder = tmp_path / 'imgs'
    write_image_folder(folder / 'train', [torch.full((6, 6), 10 * i, dtype=torch.uint8) for i in range(3)], [0, 1, 0], ['a', 'b'])
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'iv.json').write_text(json.dumps({'boundaries': [0.5]}))
    (tmp_path / 'bad.json').write_text('{"boundaries": [0.7, 0.2]}')
    d = tmp_path / 'run'
    cases = [
        (['--dataset', tmp_path / 'missing'], 'neither a known name'),
        (['--dataset', tmp_path / 'empty'], 'is empty'),
        (['--dataset', folder], 'larger than the dataset (3 images)'),
        (['--intervals', tmp_path / 'iv.json', '--overrides', 'dec_chs=(12,8,4)'], 'has 2 stages but the model has 3'),
        (['--intervals', tmp_path / 'bad.json'], 'strictly increasing'),
        (['--preset', 'huge'], '--preset must be one of'),
    ]
    for args, msg in cases:
        r = cmd('msd_train', *TINY, '--iters', '2', '--ckpt-dir', d, *args)
        assert r.returncode == 2 and msg in r.stderr and 'Traceback' not in r.stderr, (args, r.stderr[-2000:])
    assert not d.exists() or not any(d.iterdir())
