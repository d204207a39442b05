"""The library on a CUDA device: `fit` with bf16/fp16 autocast, DDP over nccl under torchrun, exact resume, and `sample`,
`optimal_eps`, `cluster_timesteps` agreeing with the CPU. Skipped where no CUDA device is visible.

`DEVICE` and `BACKEND` name what the tests run on; a CPU run of the same bodies (DEVICE='cpu', BACKEND='gloo') is how
they were checked on a machine without a GPU. TF32 is switched off where GPU results are compared with the CPU, so the
tolerances are those of float32 rounding, not of 10-bit mantissas."""
import os, shutil, subprocess, sys, textwrap
from pathlib import Path
import pytest
import torch
from multistage_nbdev.clustering import cluster_timesteps
from multistage_nbdev.multistage import build_model
from multistage_nbdev.optimal import optimal_eps
from multistage_nbdev.samplers import sample, paper_sampler
from multistage_nbdev.schedules import VPSchedule
from multistage_nbdev.testing import synthetic_images
from multistage_nbdev.train import fit, list_checkpoints, read_checkpoint
from multistage_nbdev.unet import randomize_

DEVICE, BACKEND = 'cuda', 'nccl'
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


@pytest.fixture
def no_tf32():
    "Full float32 convolutions and matrix products on the GPU while a test compares with the CPU (restored afterwards)."
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _data(n=64, size=8, seed=0): return synthetic_images(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')}
    env.update(OMP_NUM_THREADS='1', **extra)
    return env


def _run(cmd, env, timeout=300):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_fit_with_autocast_trains(amp):
    model = build_model('tiny', 'multistage', seed=0)
    res = fit(model, _data(), VPSchedule('linear'), iters=40, batch_size=16, lr=2e-3, amp=amp, device=DEVICE,
              log_every=10, progress=False, seed=0)
    losses = [r['loss'] for r in res.history]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0], losses  # the zero-initialised output starts at loss ~1 and must come down
    p = next(res.model.parameters())
    assert p.device.type == torch.device(DEVICE).type and p.dtype == torch.float32  # autocast leaves the weights in float32
    assert all(torch.isfinite(v).all() for v in res.ema.state_dict().values())


WORKER = textwrap.dedent('''
    import os, sys, torch
    import torch.distributed as dist
    from multistage_nbdev.multistage import build_model
    from multistage_nbdev.schedules import VPSchedule
    from multistage_nbdev.testing import synthetic_images
    from multistage_nbdev.train import fit
    out, device_type, backend = sys.argv[1], sys.argv[2], sys.argv[3]
    world, rank = int(os.environ.get('WORLD_SIZE', '1')), int(os.environ.get('RANK', '0'))
    local = int(os.environ.get('LOCAL_RANK', '0'))
    device = torch.device(device_type, local) if device_type == 'cuda' else torch.device(device_type)
    if 'WORLD_SIZE' in os.environ:  # under torchrun: join the group first, so that fit runs inside it even with one process
        if device.type == 'cuda': torch.cuda.set_device(device)
        dist.init_process_group(backend)
        assert dist.get_backend() == backend, dist.get_backend()
        x = torch.ones(1, device=device); dist.all_reduce(x)
        assert x.item() == world
    tag = f'w{world}_r{rank}' if 'WORLD_SIZE' in os.environ else 'plain'
    data = synthetic_images(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model = build_model('tiny', 'multistage', seed=0)
    res = fit(model, data, VPSchedule('linear'), iters=6, batch_size=8, lr=1e-3, progress=False, log_every=3,
              device=device, ckpt_dir=os.path.join(out, 'ckpt_' + tag.split('_')[0]), seed=3)
    torch.save({'model': {k: v.cpu() for k, v in res.model.state_dict().items()}, 'history': res.history},
               os.path.join(out, f'{tag}.pt'))
    if dist.is_initialized(): dist.destroy_process_group()
''')


def _torchrun(tmp_path, nproc):
    (tmp_path / 'worker.py').write_text(WORKER)
    torchrun = shutil.which('torchrun') or str(Path(sys.executable).parent / 'torchrun')
    env = _clean_env()
    _run([torchrun, '--standalone', f'--nproc_per_node={nproc}', str(tmp_path / 'worker.py'), str(tmp_path), DEVICE, BACKEND], env)
    _run([sys.executable, str(tmp_path / 'worker.py'), str(tmp_path), DEVICE, BACKEND], env)
    load = lambda name: torch.load(tmp_path / f'{name}.pt', weights_only=True)
    return [load(f'w{nproc}_r{r}') for r in range(nproc)], load('plain')


def _close_weights(a, b, tol):
    worst = max((a['model'][k] - b['model'][k]).abs().max().item() for k in b['model'])
    assert worst < tol, worst
    for ra, rb in zip(a['history'], b['history']): assert abs(ra['loss'] - rb['loss']) < 1e-5 * rb['loss']


def test_fit_under_torchrun_one_process(tmp_path):
    (one,), plain = _torchrun(tmp_path, 1)
    _close_weights(one, plain, 1e-5)  # the same steps, inside a process group or not
    assert sorted(os.listdir(tmp_path / 'ckpt_w1')) == ['ckpt_00000006.pt', 'log.jsonl']


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='DDP over two ranks needs two CUDA devices')
def test_ddp_two_ranks(tmp_path):
    (r0, r1), plain = _torchrun(tmp_path, 2)
    for k in r0['model']: assert torch.equal(r0['model'][k], r1['model'][k]), k  # DDP keeps the ranks in step
    _close_weights(r0, plain, 1e-5)  # the same global batch split over two ranks


@pytest.mark.usefixtures('no_tf32')
@pytest.mark.parametrize('solver,nfe', [('dpm-solver-3', 20), ('dpm-solver++2m', 10), ('ddim', 8)])
def test_sample_matches_cpu(solver, nfe):
    model = randomize_(build_model('tiny', 'multistage', seed=0), std=0.05, generator=torch.Generator().manual_seed(1)).eval()
    sch = VPSchedule('linear')
    noise = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    kw = dict(solver=solver, nfe=nfe, t_end=1e-3)
    cpu = sample(model, sch, noise=noise, **kw)
    dev = sample(model.to(DEVICE), sch, noise=noise.to(DEVICE), **kw)
    assert dev.x.device.type == torch.device(DEVICE).type
    assert dev.steps_per_stage == cpu.steps_per_stage and torch.equal(dev.call_times, cpu.call_times)
    scale = cpu.x.abs().max().item()
    assert (dev.x.cpu() - cpu.x).abs().max().item() < 1e-4 * scale  # float32 rounding only


@pytest.mark.usefixtures('no_tf32')
@pytest.mark.parametrize('dtype,rtol', [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_optimal_eps_matches_cpu(dtype, rtol):
    data = _data(300).to(dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 1, 8, 8, generator=g, dtype=dtype)
    t = torch.cat([torch.tensor([1e-3, 0.05, 0.5, 1.], dtype=torch.float64), torch.rand(20, generator=g, dtype=torch.float64)])
    sch = VPSchedule('linear')
    cpu = optimal_eps(x, t, data, sch, chunk_size=64)  # several chunks: the streaming log-sum-exp is exercised
    dev = optimal_eps(x.to(DEVICE), t.to(DEVICE), data.to(DEVICE), sch, chunk_size=64)
    assert dev.device.type == torch.device(DEVICE).type and dev.dtype == dtype
    err = ((dev.cpu() - cpu).abs().amax((1, 2, 3)) / cpu.abs().amax((1, 2, 3))).max().item()
    assert err < rtol, err


def test_cluster_timesteps_matches_cpu():
    data = _data(256).double()  # float64: the similarity counts cannot flip at the threshold between devices
    sch = VPSchedule('linear')
    kw = dict(K=400, batch_size=128, chunk_size=128)
    cpu = cluster_timesteps(data, sch, generator=torch.Generator().manual_seed(0), **kw)
    dev = cluster_timesteps(data.to(DEVICE), sch, generator=torch.Generator().manual_seed(0), **kw)
    assert dev.intervals.boundaries == cpu.intervals.boundaries
    assert 0 < cpu.intervals.boundaries[0] < cpu.intervals.boundaries[1] < 1
    assert torch.allclose(dev.s0, cpu.s0, atol=1e-12) and torch.allclose(dev.s1, cpu.s1, atol=1e-12)


RESUME = textwrap.dedent('''
    import sys, torch
    from multistage_nbdev.multistage import build_model
    from multistage_nbdev.schedules import VPSchedule
    from multistage_nbdev.testing import synthetic_images
    from multistage_nbdev.train import fit
    ckpt_dir, iters, resume, mode, device = sys.argv[1], int(sys.argv[2]), sys.argv[3] == 'resume', sys.argv[4], sys.argv[5]
    torch.use_deterministic_algorithms(True)  # bit-exact is only defined for deterministic kernels
    torch.backends.cudnn.benchmark = False
    model = build_model('tiny', 'multistage', dropout=0.2, seed=0)  # dropout: the device RNG state must be restored too
    data = synthetic_images(24, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    fit(model, data, VPSchedule('linear'), iters=iters, batch_size=8, lr=1e-3, ema_decay=0.9, time_sampling=mode,
        device=device, ckpt_dir=ckpt_dir, ckpt_every=3, log_every=2, progress=False, resume=resume)
''')


@pytest.mark.parametrize('mode', ['stage', 'mixed'])
def test_exact_resume(tmp_path, mode):
    n = 6
    script = tmp_path / 'resume_job.py'
    script.write_text(RESUME)
    env = _clean_env(CUBLAS_WORKSPACE_CONFIG=':4096:8')  # deterministic cuBLAS, read when the process creates its handle
    straight, halves = tmp_path / 'straight', tmp_path / 'halves'
    _run([sys.executable, str(script), str(straight), str(2 * n), 'fresh', mode, DEVICE], env)
    _run([sys.executable, str(script), str(halves), str(n), 'fresh', mode, DEVICE], env)
    _run([sys.executable, str(script), str(halves), str(2 * n), 'resume', mode, DEVICE], env)  # a new process: state from disk
    a, b = (read_checkpoint(list_checkpoints(d)[0]) for d in (straight, halves))
    assert a['step'] == b['step'] == 2 * n
    assert 'cuda' in a['rng']['ranks'][0] or torch.device(DEVICE).type != 'cuda'  # the device RNG is checkpointed
    for part in ('model', 'ema'):
        for k in a[part]: assert torch.equal(a[part][k], b[part][k]), f'{part}.{k} differs after resume'
    assert [(r['step'], r['loss'], r['stage_loss']) for r in a['history']] == [(r['step'], r['loss'], r['stage_loss']) for r in b['history']]
    for k, s in a['optimizer']['state'].items():
        for name, v in s.items(): assert torch.equal(torch.as_tensor(v), torch.as_tensor(b['optimizer']['state'][k][name]))
