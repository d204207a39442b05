"""Benchmark of `optimal_eps` (Prop. 1) against a plain matrix product of the same shape.

Not collected by pytest (the file name does not start with `test_`). Run from the repository root:

    python tests/benchmarks/optimal_denoiser.py                 # 1,024 queries vs 50,000 x 3x32x32, float32, CPU
    python tests/benchmarks/optimal_denoiser.py --queries 2000 --device cuda

`optimal_eps` does two matrix products per chunk of the training set (the B x n distances z.y and the weighted sum P Y),
so its useful work is 4*B*N*D flops; the reference is one (B,D) @ (D,N) product, 2*B*N*D flops. Both are timed
interleaved, best of `--repeats`, so that load from other processes hits both alike. The last line is
`ratio=<x> optimal_eps/matmul GFLOP/s` (goal: >= 0.5). Peak memory is the process's maximum resident set size
(`resource.getrusage(...).ru_maxrss`, which includes the training set itself) and, on CUDA, the allocator's peak.
"""
import argparse, resource, sys, time
from pathlib import Path
import torch
from multistage_nbdev.optimal import optimal_eps
from multistage_nbdev.schedules import VPSchedule
sys.path.insert(0, str(Path(__file__).parent))
from matmul_peak import matmul_gflops


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def timed(fn, device) -> float:
    if device.type == 'cuda': torch.cuda.synchronize(device)
    t0 = time.perf_counter(); fn()
    if device.type == 'cuda': torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--queries', type=int, default=1024, help='B, queries per call, each at its own t')
    p.add_argument('--n', type=int, default=50_000, help='N, training-set size')
    p.add_argument('--shape', type=int, nargs=3, default=(3, 32, 32), help='C H W of one image (D = C*H*W)')
    p.add_argument('--chunk-size', type=int, default=4096, help='training points per chunk')
    p.add_argument('--repeats', type=int, default=3, help='timed runs of each (best is reported)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args(argv)
    dev = torch.device(a.device)
    g = torch.Generator(device=dev).manual_seed(a.seed)
    B, N, D = a.queries, a.n, a.shape[0] * a.shape[1] * a.shape[2]
    data = torch.rand(N, *a.shape, generator=g, device=dev).mul_(2).sub_(1)  # synthetic training set in [-1,1]
    x = torch.randn(B, *a.shape, generator=g, device=dev)
    t = torch.rand(B, generator=g, device=dev) * 0.98 + 0.02                  # a time per query
    sch = VPSchedule()
    q = torch.randn(B, D, generator=g, device=dev)
    flat = data.reshape(N, D)
    print(f'B={B} queries, N={N} training points, D={D}, chunk_size={a.chunk_size}, device={dev}, '
          f'threads={torch.get_num_threads()}, torch {torch.__version__}')
    print(f'training set {data.numel() * 4 / 2**30:.2f} GiB float32; peak RSS after setup {peak_rss_gib():.2f} GiB')

    # warm-up (BLAS thread pools, allocator), then interleaved timed runs
    optimal_eps(x[:8], t[:8], data[:2 * a.chunk_size], sch, chunk_size=a.chunk_size)
    q[:8] @ flat[:2 * a.chunk_size].T
    t_opt, t_mm = [], []
    for _ in range(a.repeats):
        t_opt.append(timed(lambda: optimal_eps(x, t, data, sch, chunk_size=a.chunk_size), dev))
        rss_opt = peak_rss_gib()
        t_mm.append(timed(lambda: q @ flat.T, dev))
    rss = peak_rss_gib()
    gf_opt, gf_mm = 4 * B * N * D / min(t_opt) / 1e9, 2 * B * N * D / min(t_mm) / 1e9

    # accuracy of the float32 path against float64 on a few queries
    k = min(B, 8)
    e32 = optimal_eps(x[:k], t[:k], data, sch, chunk_size=a.chunk_size)
    e64 = optimal_eps(x[:k].double(), t[:k].double(), data, sch, chunk_size=a.chunk_size)
    print(f'float32 vs float64 on {k} queries: max |diff| = {(e32.double() - e64).abs().max().item():.2e}')

    print(f'optimal_eps: {min(t_opt):.2f} s (runs: {", ".join(f"{v:.2f}" for v in t_opt)}), {gf_opt:.1f} GFLOP/s counting 4*B*N*D')
    print(f'matmul ({B},{D}) @ ({D},{N}): {min(t_mm):.2f} s (runs: {", ".join(f"{v:.2f}" for v in t_mm)}), {gf_mm:.1f} GFLOP/s')
    print(f'peak RSS: {rss_opt:.2f} GiB after optimal_eps, {rss:.2f} GiB overall (limit 4 GiB)')
    print(f'context: square {2048}x{2048} float32 matmul peak {matmul_gflops(2048, device=dev, repeats=3):.1f} GFLOP/s')
    if dev.type == 'cuda': print(f'peak CUDA memory: {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB')
    if rss >= 4: print('WARNING: peak memory above 4 GiB', file=sys.stderr)
    print(f'ratio={gf_opt / gf_mm:.3f} optimal_eps/matmul GFLOP/s')


if __name__ == '__main__':
    main()
