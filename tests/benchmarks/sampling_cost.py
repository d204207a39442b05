"""Sampling cost of the unified and the multistage model of one preset: measured time against counted GFLOPs.

Not collected by pytest (the file name does not start with `test_`). Run from the repository root:

    python tests/benchmarks/sampling_cost.py                          # 'small' preset, DPM-Solver-3, 20 NFE, batch 32, CPU, 1 thread
    python tests/benchmarks/sampling_cost.py --threads 0              # torch's default thread count
    python tests/benchmarks/sampling_cost.py --spacing time           # calls spread uniformly in t
    python tests/benchmarks/sampling_cost.py --preset cifar10 --batch 64 --device cuda

Both models are built untrained by `multistage.build_model(preset, arch)` with the paper's intervals and sample the same
starting noise with `samplers.sample` (the paper's DPM-Solver setting by default: single-step order 3, log-SNR grid, end
time 1e-4). Their runs are timed interleaved, best of `--repeats`. The sampling GFLOPs per image are what `sample` reports:
the sum over model calls of the GFLOPs of the stage that served the call (per-stage counts from `multistage.gflops`, in the
paper's convention, multiply-adds of conv and linear layers, and in `torch.utils.flop_counter`'s, 2 per multiply-add).
The paper's claim (Table 2) is that the multistage model samples at no higher cost than the unified one; the measured time
ratio should track the GFLOPs ratio (within 10% once the layers are big enough that per-layer overheads do not dominate).
The last line is `ratio=<x> multistage/unified sampling time per image`, followed by the GFLOPs ratio for comparison.
"""
import argparse, time
import torch
from multistage_nbdev.multistage import build_model, gflops
from multistage_nbdev.samplers import sample, paper_sampler, SOLVERS, SPACINGS
from multistage_nbdev.schedules import VPSchedule


def timed(fn, device) -> float:
    if device.type == 'cuda': torch.cuda.synchronize(device)
    t0 = time.perf_counter(); out = fn()
    if device.type == 'cuda': torch.cuda.synchronize(device)
    return time.perf_counter() - t0, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--preset', default='small', help="a preset of multistage.build_model ('tiny', 'small', 'cifar10', 'ldm')")
    p.add_argument('--solver', default=None, choices=list(SOLVERS), help="default: the paper's DPM-Solver preset")
    p.add_argument('--nfe', type=int, default=None, help='default: the preset (20)')
    p.add_argument('--spacing', default=None, choices=list(SPACINGS), help="default: the preset's ('logsnr')")
    p.add_argument('--batch', type=int, default=32, help='images sampled per run')
    p.add_argument('--repeats', type=int, default=3, help='timed runs of each model (best is reported)')
    p.add_argument('--threads', type=int, default=1, help="torch CPU threads; 0 leaves torch's default (on a busy shared "
                   "machine thread synchronisation, not arithmetic, then sets the time of these small layers)")
    p.add_argument('--device', default='cpu')
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sch = VPSchedule('linear')
    kw = paper_sampler('dpm-solver', sch)
    if a.solver: kw['solver'] = a.solver
    if a.nfe: kw['nfe'] = a.nfe
    if a.spacing: kw['spacing'] = a.spacing
    models = {arch: build_model(a.preset, arch, device=dev).eval() for arch in ('unified', 'multistage')}
    m0 = models['unified']
    shape = (a.batch, m0.in_ch, m0.img_size, m0.img_size)
    noise = torch.randn(shape, generator=torch.Generator(device=dev).manual_seed(a.seed), device=dev) * float(sch.noise_std(1.))
    print(f"preset={a.preset} batch={a.batch} image={tuple(shape[1:])} sampler={kw} device={dev} "
          f"threads={torch.get_num_threads()} torch {torch.__version__}")
    counts = {arch: gflops(m) for arch, m in models.items()}
    for arch, c in counts.items():
        print(f"{arch:10s} per-call GFLOPs by stage (t near 0 first): paper convention (MACs) "
              f"{[round(v, 4) for v in c['gmacs']]}, FlopCounter {[round(v, 4) for v in c['gflops']]}")

    run = lambda arch: sample(models[arch], sch, noise=noise, stage_gflops=counts[arch]['gmacs'], **kw)
    for arch in models: run(arch)  # warm-up
    best, res = {arch: float('inf') for arch in models}, {}
    for _ in range(a.repeats):
        for arch in models:
            dt, res[arch] = timed(lambda: run(arch), dev)
            best[arch] = min(best[arch], dt)
    for arch, r in res.items():
        flop_counter = sum(n * g for n, g in zip(r.steps_per_stage, counts[arch]['gflops']))
        print(f"{arch:10s} calls per stage {r.steps_per_stage}, sampling GFLOPs per image {r.gflops_per_image:.4f} (paper) "
              f"{flop_counter:.4f} (FlopCounter); best of {a.repeats}: {best[arch]:.3f} s, "
              f"{best[arch] / (a.batch * r.nfe) * 1e3:.4f} ms per image per NFE")
    t_ratio = best['multistage'] / best['unified']
    g_ratio = res['multistage'].gflops_per_image / res['unified'].gflops_per_image
    print(f"time ratio / GFLOPs ratio = {t_ratio / g_ratio:.3f} ({'within' if abs(t_ratio / g_ratio - 1) <= 0.1 else 'outside'} 10%)")
    print(f"ratio={t_ratio:.3f} multistage/unified sampling time per image (GFLOPs ratio {g_ratio:.3f}, paper convention)")


if __name__ == '__main__':
    main()
