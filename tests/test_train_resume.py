"Exact resume: N steps in one go == N/2 steps, SIGKILL, resume for the rest (bit-identical weights on CPU)."
import os, signal, subprocess, sys, textwrap
from pathlib import Path
import pytest
import torch

ITERS, CKPT_EVERY, KILL_AT = 12, 6, 8

SCRIPT = textwrap.dedent('''
    import sys, time, torch
    from multistage_nbdev.train import fit
    from multistage_nbdev.schedules import VPSchedule
    from multistage_nbdev.testing import synthetic_images
    ckpt_dir, iters, kill_at, resume = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == 'resume'
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same initial weights in every process
    try:  # the real multistage model, with dropout so that the global RNG state matters
        from multistage_nbdev.multistage import build_model
        model = build_model('tiny', 'multistage', dropout=0.2)
    except ImportError:
        from multistage_nbdev.testing import tiny_denoiser
        model = tiny_denoiser(hidden=8)
    data = synthetic_images(24, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    def hang(info):
        if info['step'] == kill_at:
            print('READY', flush=True)
            time.sleep(600)
    fit(model, data, VPSchedule('linear'), iters=iters, batch_size=8, lr=1e-3, ema_decay=0.9, ckpt_dir=ckpt_dir,
        ckpt_every=%d, log_every=2, progress=False, resume=resume, callback=None if kill_at < 0 else hang)
''' % CKPT_EVERY)


def run(tmp, *args, **kw):
    script = tmp / 'train_job.py'
    script.write_text(SCRIPT)
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=subprocess.PIPE, text=True, **kw)


def final(d):
    from multistage_nbdev.train import read_checkpoint, list_checkpoints
    return read_checkpoint(list_checkpoints(d)[0])


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    ref = run(tmp_path, straight, ITERS, -1, 'fresh')                # uninterrupted, in parallel with the killed one
    job = run(tmp_path, killed, ITERS, KILL_AT, 'fresh')
    line = job.stdout.readline()
    assert line.strip() == 'READY', f'child did not reach step {KILL_AT}: {line!r}'
    os.kill(job.pid, signal.SIGKILL)
    assert job.wait(30) == -signal.SIGKILL
    from multistage_nbdev.train import list_checkpoints
    assert [p.name for p in list_checkpoints(killed)] == [f'ckpt_{CKPT_EVERY:08d}.pt']  # steps 7..8 were lost
    (killed / f'.ckpt_{KILL_AT:08d}.pt.x.tmp').write_bytes(b'half')  # what a kill during a save would leave
    resumed = run(tmp_path, killed, ITERS, -1, 'resume')
    assert resumed.wait(120) == 0 and ref.wait(120) == 0
    a, b = final(straight), final(killed)
    assert a['step'] == b['step'] == ITERS
    for part in ('model', 'ema'):
        assert a[part].keys() == b[part].keys()
        for k in a[part]: assert torch.equal(a[part][k], b[part][k]), f'{part}.{k} differs after resume'
    la = [(r['step'], r['loss'], r['stage_loss']) for r in a['history']]
    lb = [(r['step'], r['loss'], r['stage_loss']) for r in b['history']]
    assert la == lb                                                  # the log is the same too
    assert a['optimizer']['state'].keys() == b['optimizer']['state'].keys()
    for k, s in a['optimizer']['state'].items():
        for n, v in s.items(): assert torch.equal(torch.as_tensor(v), torch.as_tensor(b['optimizer']['state'][k][n]))


def test_checkpoint_of_the_earlier_format_resumes_exactly(tmp_path):
    "Checkpoints from before NumPy's and Python's random states were dropped (the loop never used them) still resume, exactly."
    import random
    import numpy as np
    from multistage_nbdev.multistage import build_model
    from multistage_nbdev.schedules import VPSchedule
    from multistage_nbdev.testing import synthetic_images
    from multistage_nbdev.train import fit, list_checkpoints, read_checkpoint
    data = synthetic_images(24, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    def model():
        torch.manual_seed(0)
        return build_model('tiny', 'multistage', dropout=0.2)
    kw = dict(batch_size=8, ckpt_every=4, log_every=2, progress=False, threads=1)
    whole = fit(model(), data, VPSchedule('linear'), iters=8, ckpt_dir=tmp_path / 'whole', **kw)
    fit(model(), data, VPSchedule('linear'), iters=4, ckpt_dir=tmp_path / 'old', **kw)
    path = list_checkpoints(tmp_path / 'old')[0]
    ck = read_checkpoint(path)
    name, keys, pos, has_gauss, gauss = np.random.get_state()        # the earlier format's extra entries
    ck['rng']['numpy'] = {'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': int(pos), 'has_gauss': int(has_gauss),
                          'gauss': float(gauss)}
    ck['rng']['python'] = random.getstate()
    torch.save(ck, path)
    again = fit(model(), data, VPSchedule('linear'), iters=8, ckpt_dir=tmp_path / 'old', resume=True, **kw)
    for a, b in ((whole.model, again.model), (whole.ema, again.ema)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
