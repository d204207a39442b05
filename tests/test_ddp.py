"""DDP: `fit` under torchrun with 2 gloo processes on CPU ends with the same weights on both ranks, close to one process.
'mixed2' is the mixed run at two threads per process (under DDP the thread policy leaves torch's count alone)."""
import os, shutil, subprocess, sys, textwrap
from pathlib import Path
import pytest
import torch

WORKER = textwrap.dedent('''
    import os, sys, torch
    from multistage_nbdev.train import fit
    from multistage_nbdev.schedules import VPSchedule
    from multistage_nbdev.testing import synthetic_images
    from multistage_nbdev.multistage import build_model
    out, world = sys.argv[1], int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    if world > 1: torch.distributed.init_process_group('gloo')  # one group for the three runs (fit would join and leave per call)
    data = synthetic_images(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for mode in ('stage', 'rank', 'mixed', 'mixed2'):
        if world == 1 and mode == 'rank': continue
        torch.set_num_threads(2 if mode == 'mixed2' else 1)
        torch.manual_seed(0)  # same initial weights everywhere
        model = build_model('tiny', 'multistage')  # dropout 0: one process and two compute the same thing
        res = fit(model, data, VPSchedule('linear'), iters=6, batch_size=8, lr=1e-3, time_sampling=mode[:5], progress=False,
                  log_every=3, ckpt_dir=os.path.join(out, f'ckpt_{mode}_{world}'), seed=3)
        torch.save({'model': res.model.state_dict(), 'ema': res.ema.state_dict(), 'history': res.history},
                   os.path.join(out, f'{mode}_w{world}_r{rank}.pt'))
    if world > 1: torch.distributed.destroy_process_group()
''')


def _run(cmd, env):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    pytest.importorskip('multistage_nbdev.multistage')
    d = tmp_path_factory.mktemp('ddp')
    (d / 'worker.py').write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k not in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')}
    env.update(OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    torchrun = shutil.which('torchrun') or str(Path(sys.executable).parent / 'torchrun')
    _run([torchrun, '--standalone', '--nproc_per_node=2', str(d / 'worker.py'), str(d)], env)
    _run([sys.executable, str(d / 'worker.py'), str(d)], env)
    return d


def _load(d, name): return torch.load(d / name, weights_only=True)


@pytest.mark.parametrize('mode', ['stage', 'rank', 'mixed', 'mixed2'])
def test_ranks_end_with_identical_weights(runs, mode):
    # 'rank' sends each rank's batch to its own decoder, so some decoders are unused on some rank in every step
    a, b = _load(runs, f'{mode}_w2_r0.pt'), _load(runs, f'{mode}_w2_r1.pt')
    for part in ('model', 'ema'):
        for k in a[part]: assert torch.equal(a[part][k], b[part][k]), f'{mode}: {part}.{k} differs between ranks'
    strip = lambda h: [{k: v for k, v in r.items() if k != 'img_per_s'} for r in h]
    assert strip(a['history']) == strip(b['history'])  # losses are averaged over ranks before logging
    assert sorted(os.listdir(runs / f'ckpt_{mode}_2')) == ['ckpt_00000006.pt', 'log.jsonl']  # written once, by rank 0


@pytest.mark.parametrize('mode', ['stage', 'mixed', 'mixed2'])
def test_two_processes_match_one_with_the_same_global_batch(runs, mode):
    two, one = _load(runs, f'{mode}_w2_r0.pt'), _load(runs, f'{mode}_w1_r0.pt')
    worst = max((two['model'][k] - one['model'][k]).abs().max().item() for k in one['model'])
    assert worst < 1e-5, worst  # same data, times and noise; only the order of float sums differs
    for r2, r1 in zip(two['history'], one['history']):
        assert abs(r2['loss'] - r1['loss']) < 1e-5 * r1['loss']
