"""What batch sizes that change every step cost the multistage model on CPU, with oneDNN's kernel caches at their default
size (1,024 entries) and raised (as importing `multistage_nbdev.multistage` does).

Not collected by pytest (the file name does not start with `test_`). Run from the repository root:

    python tests/benchmarks/varying_batches.py                      # 150 steps, 1 thread, caches 1024 and 65536
    python tests/benchmarks/varying_batches.py --steps 150 --window 25 --threads 1 --capacities 1024,65536

A mixed batch of 64 gives each decoder of the `small` multistage model a different number of samples at every step, and
oneDNN compiles a convolution kernel for every exact shape. Each capacity runs in a fresh process (the caches are sized
when oneDNN builds its first kernel, from `ONEDNN_PRIMITIVE_CACHE_CAPACITY` and `LRU_CACHE_CAPACITY`). In each process the
unified and the multistage `small` models (Algorithm 1 intervals of the bundled digits, 0.196 / 0.406) alternate forward +
backward of the eps loss on batch 64, with fresh times every step (the same times for both models); the median wall time
over each window of `--window` steps is printed with the peak memory of the process.

The last line is `ratio=<x>`: the multistage / unified time over the last window with the largest capacity.
"""
import argparse, json, os, resource, statistics, subprocess, sys, time
from multistage_nbdev.cpu import ONEDNN_CACHE_VARS


def child(steps:int, window:int, threads:int):
    "One process: alternate the two models' steps, print a JSON line per window."
    import torch
    from multistage_nbdev.intervals import Intervals
    from multistage_nbdev.multistage import build_model
    from multistage_nbdev.losses import eps_loss
    from multistage_nbdev.schedules import VPSchedule
    torch.set_num_threads(threads)
    iv = Intervals([0.196, 0.406])
    models = {'unified': build_model('small', 'unified', iv, seed=0), 'multistage': build_model('small', 'multistage', iv, seed=0)}
    sch, g = VPSchedule('linear'), torch.Generator().manual_seed(0)
    x0, noise = torch.rand(64, 1, 16, 16, generator=g) * 2 - 1, torch.randn(64, 1, 16, 16, generator=g)
    times = {k: [] for k in models}
    for step in range(steps):
        t = torch.rand(64, generator=g)
        for k, m in models.items():
            m.zero_grad(set_to_none=True)
            t0 = time.perf_counter(); eps_loss(m, x0, t, sch, noise).mean().backward()
            times[k].append(time.perf_counter() - t0)
        if (step + 1) % window == 0:
            med = {k: statistics.median(v[-window:]) for k, v in times.items()}
            print(json.dumps(dict(steps=[step + 2 - window, step + 1], unified_ms=med['unified'] * 1e3,
                                  multistage_ms=med['multistage'] * 1e3, ratio=med['multistage'] / med['unified'],
                                  maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=150)
    p.add_argument('--window', type=int, default=25)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--capacities', default='1024,65536', help='comma-separated cache capacities, one process each')
    p.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child: return child(a.steps, a.window, a.threads)
    if a.steps < a.window or a.window < 1: raise SystemExit('--window must be >= 1 and at most --steps')
    import torch
    print(f"torch {torch.__version__}, threads {a.threads}, {a.steps} steps, median per window of {a.window}, "
          f"load average {os.getloadavg()[0]:.1f}")
    last = None
    for cap in sorted(int(c) for c in a.capacities.split(',')):
        env = {**os.environ, **{k: str(cap) for k in ONEDNN_CACHE_VARS}}
        out = subprocess.run([sys.executable, __file__, '--child', '--steps', str(a.steps), '--window', str(a.window),
                              '--threads', str(a.threads)], env=env, capture_output=True, text=True, check=True).stdout
        print(f"\ncache capacity {cap}: steps, unified ms, multistage ms, ratio, peak memory")
        for line in out.splitlines():
            r = json.loads(line)
            print(f"  {r['steps'][0]:4d}-{r['steps'][1]:<4d} {r['unified_ms']:8.1f} {r['multistage_ms']:8.1f} "
                  f"{r['ratio']:6.3f} {r['maxrss_mb']:7.0f} MB")
            last = (cap, r['ratio'])
    print(f"ratio={last[1]:.3f} multistage / unified forward+backward, last window, caches {last[0]}, {a.threads} thread(s)")


if __name__ == '__main__':
    main()
