"""Algorithm 1 (optimal-denoiser timestep clustering) at the paper's CIFAR-10 size: throughput against matmul peak.

Not collected by pytest (the file name does not start with `test_`). Run from the repository root:

    python tests/benchmarks/clustering.py                     # K = 2000 triples, 50,000 x 3072 synthetic set, CPU
    python tests/benchmarks/clustering.py --K 500 --N 10000   # a quicker look

`cluster_timesteps` with the default exact limits evaluates the optimal denoiser once per triple, streamed over the training
set: two matrix products per chunk, (B x D) @ (D x n) for the distances and (B x n) @ (n x D) for the weighted mean, so
4 K N D floating-point operations in all (the exp, max and float64 updates are O(K N) and O(K D) per chunk and not counted).
Achieved GFLOP/s = 4 K N D / wall time of the whole `cluster_timesteps` call (sampling, rescaling, similarities and selection
included). The reference peak is `matmul_peak.matmul_gflops` (fp32 n x n products), measured in the same run before and after;
the better of the two counts. Peak memory is the process's maximum resident set size (data 0.6 GB + its rescaled copy included).
The last line is `ratio=<achieved / peak> ...`.
"""
import argparse, resource, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).parent))
from matmul_peak import matmul_gflops
from multistage_nbdev.schedules import VPSchedule
from multistage_nbdev.clustering import cluster_timesteps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--K', type=int, default=2000, help='sampled triples')
    p.add_argument('--N', type=int, default=50_000, help='training-set size')
    p.add_argument('--D', type=int, default=3072, help='pixels per image (3x32x32 = 3072)')
    p.add_argument('--batch-size', type=int, default=1024, help='triples per denoiser pass')
    p.add_argument('--chunk-size', type=int, default=4096, help='training points per chunk')
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args(argv)
    threads = torch.get_num_threads()
    print(f'torch {torch.__version__}, cpu, {threads} threads; K={a.K}, N={a.N}, D={a.D}, batch {a.batch_size}, chunk {a.chunk_size}')
    g = torch.Generator().manual_seed(a.seed)
    data = torch.rand(a.N, 3, 1, a.D // 3, generator=g) * 2 - 1          # synthetic images in [-1, 1], (N, C, H, W)
    peak_before = matmul_gflops(2048)
    t0 = time.perf_counter()
    try:    # uniform-noise images are far apart, so the alpha = 0.9 selection may find no partition; the work is done either way
        res = cluster_timesteps(data, VPSchedule(), K=a.K, generator=torch.Generator().manual_seed(a.seed),
                                batch_size=a.batch_size, chunk_size=a.chunk_size)
        outcome = f'{res.intervals}  (S0 mean {res.s0.mean():.3f}, S1 mean {res.s1.mean():.3f})'
    except ValueError as e: outcome = f'no partition at the default alpha ({str(e)[:120]}...)'
    wall = time.perf_counter() - t0
    peak_after = matmul_gflops(2048)
    peak = max(peak_before, peak_after)
    flops = 4 * a.K * a.N * a.D
    achieved = flops / wall / 1e9
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f'result: {outcome}')
    print(f'wall {wall:.2f} s for {flops / 1e12:.3f} TFLOP: {achieved:.1f} GFLOP/s achieved')
    print(f'matmul peak (fp32, n=2048): {peak_before:.1f} GFLOP/s before, {peak_after:.1f} after')
    print(f'peak resident memory {rss_gib:.2f} GiB')
    print(f'ratio={achieved / peak:.3f} cluster_timesteps/matmul GFLOP/s (K={a.K}, N={a.N}, D={a.D}, {threads} threads, {wall:.1f} s, {rss_gib:.2f} GiB)')


if __name__ == '__main__':
    main()
