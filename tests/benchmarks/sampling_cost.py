"""Sampling cost of the unified and the multistage model of one preset: measured time against counted GFLOPs.

Not collected by pytest (the file name does not start with `test_`). Run from the repository root:

    python tests/benchmarks/sampling_cost.py                          # 'small' preset, DPM-Solver-3, 20 NFE, batch 32, CPU, 1 and default threads
    python tests/benchmarks/sampling_cost.py --threads 0              # torch's default thread count only
    python tests/benchmarks/sampling_cost.py --threads 1,2            # any list of thread counts
    python tests/benchmarks/sampling_cost.py --spacing time           # calls spread uniformly in t
    python tests/benchmarks/sampling_cost.py --preset cifar10 --batch 64 --device cuda

Both models are built untrained by `multistage.build_model(preset, arch)` with the paper's intervals and sample the same
starting noise with `samplers.sample` (the paper's DPM-Solver setting by default: single-step order 3, log-SNR grid, end
time 1e-4). Their runs are timed interleaved, best of `--repeats`. The sampling GFLOPs per image are what `sample` reports:
the sum over model calls of the GFLOPs of the stage that served the call (per-stage counts from `multistage.gflops`, in the
paper's convention, multiply-adds of conv and linear layers, and in `torch.utils.flop_counter`'s, 2 per multiply-add).
The paper's claim (Table 2) is that the multistage model samples at no higher cost than the unified one; the measured time
ratio should track the GFLOPs ratio (within 10% once the layers are big enough that per-layer overheads do not dominate).
At each thread count of `--threads` (0: torch's default; both models timed there, interleaved) it prints, per model, the
time per image, the achieved GFLOP/s (FlopCounter GFLOPs per image / time per image) and ms per paper-convention GFLOP,
then the time ratio, the GFLOPs ratio and their quotient. On shared cores the multi-thread times include OpenMP's
spin-waiting (set `OMP_WAIT_POLICY=PASSIVE` before starting to leave it out; see `fit_step.py`).
The last line is `ratio=<x> multistage/unified sampling time per image`: the largest over the thread counts, followed by
the GFLOPs ratio for comparison and the time ratio / GFLOPs ratio at each thread count.
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
    p.add_argument('--threads', default='1,0', help="comma-separated torch CPU thread counts; 0 is torch's default (on a busy "
                   "shared machine thread synchronisation, not arithmetic, then sets the time of these small layers)")
    p.add_argument('--device', default='cpu')
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args(argv)
    default_threads = torch.get_num_threads()
    threads = [int(v) or default_threads for v in str(a.threads).split(',')]
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
          f"threads={threads} (default {default_threads}) torch {torch.__version__}")
    counts = {arch: gflops(m) for arch, m in models.items()}
    for arch, c in counts.items():
        print(f"{arch:10s} per-call GFLOPs by stage (t near 0 first): paper convention (MACs) "
              f"{[round(v, 4) for v in c['gmacs']]}, FlopCounter {[round(v, 4) for v in c['gflops']]}")

    run = lambda arch: sample(models[arch], sch, noise=noise, stage_gflops=counts[arch]['gmacs'], **kw)
    best, res = {(n, arch): float('inf') for n in threads for arch in models}, {}
    for n in threads:  # warm-up at every thread count
        torch.set_num_threads(n)
        for arch in models: res[arch] = run(arch)
    for r in range(a.repeats):
        for n in threads[::1 if r % 2 == 0 else -1]:
            torch.set_num_threads(n)
            for arch in list(models)[::1 if r % 2 == 0 else -1]:
                dt, res[arch] = timed(lambda: run(arch), dev)
                best[n, arch] = min(best[n, arch], dt)
    torch.set_num_threads(default_threads)
    flop_counter = {arch: sum(c * g for c, g in zip(r.steps_per_stage, counts[arch]['gflops'])) for arch, r in res.items()}
    for arch, r in res.items():
        print(f"{arch:10s} calls per stage {r.steps_per_stage}, sampling GFLOPs per image {r.gflops_per_image:.4f} (paper) "
              f"{flop_counter[arch]:.4f} (FlopCounter)")
    g_ratio = res['multistage'].gflops_per_image / res['unified'].gflops_per_image
    t_ratios = {}
    for n in threads:
        print(f"threads {n}, best of {a.repeats}:")
        for arch, r in res.items():
            per_img = best[n, arch] / a.batch
            print(f"  {arch:10s} {best[n, arch]:.3f} s, {per_img * 1e3:.3f} ms per image, {per_img / r.nfe * 1e3:.4f} ms per image "
                  f"per NFE, {flop_counter[arch] / per_img:.2f} GFLOP/s (FlopCounter), "
                  f"{per_img * 1e3 / r.gflops_per_image:.3f} ms per GFLOP (paper)")
        t_ratios[n] = best[n, 'multistage'] / best[n, 'unified']
        q = t_ratios[n] / g_ratio
        print(f"  time ratio {t_ratios[n]:.3f}, GFLOPs ratio {g_ratio:.3f}, time ratio / GFLOPs ratio = {q:.3f} "
              f"({'within' if abs(q - 1) <= 0.1 else 'outside'} 10%)")
    worst = max(t_ratios, key=t_ratios.get)
    print(f"ratio={t_ratios[worst]:.3f} multistage/unified sampling time per image, largest over threads {threads} (at {worst}; "
          f"GFLOPs ratio {g_ratio:.3f}, paper convention; time/GFLOPs "
          + ', '.join(f"{t_ratios[n] / g_ratio:.3f} at {n}" for n in threads) + ")")


if __name__ == '__main__':
    main()
