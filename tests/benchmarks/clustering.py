"""Algorithm 1 (optimal-denoiser timestep clustering) on a synthetic CIFAR-10-sized set or a real one: throughput against matmul peak.

Not collected by pytest (the file name does not start with `test_`). Run from the repository root:

    python tests/benchmarks/clustering.py                     # K = 2000 triples, 50,000 x 3072 synthetic set, CPU
    python tests/benchmarks/clustering.py --K 500 --N 10000   # a quicker look
    python tests/benchmarks/clustering.py --data fashionmnist --size 32 --seed 0 --json run.json
        # all 60,000 Fashion-MNIST training images (Debian's dataset-fashion-mnist), zero-padded to 32x32
    python tests/benchmarks/clustering.py --data fashionmnist --size 28 --n 10000   # its first 10,000 images

`--data` picks the training set: `synthetic` (uniform noise of --N images of --D pixels) or a dataset name of
`multistage_nbdev.data` (`fashionmnist`, `mnist5k`, ...; its whole training split) at `--size` 16 (antialiased resize),
28 (native) or 32 (28x28 centred in a black 32x32 frame, the paper's resolution). `--json` writes the run's record: the
boundaries (or why there are none), the sampled (t_k, S0_k, S1_k), times, memory and the ratio. It also records the boundaries
that the literal reading of line 5 (`reference='x_1'`, the t = 1 reference at x_1) gives on the same triples, from a second,
untimed call: the one this project computed before it was checked against the authors' script.

`cluster_timesteps` with the default exact limits evaluates the optimal denoiser once per triple, streamed over the training
set: two matrix products per chunk, (B x D) @ (D x n) for the distances and (B x n) @ (n x D) for the weighted mean, so
4 K N D floating-point operations in all (the exp, max and float64 updates are O(K N) and O(K D) per chunk and not counted).
Achieved GFLOP/s = 4 K N D / wall time of the whole `cluster_timesteps` call (sampling, rescaling, similarities and selection
included). The reference peak is `matmul_peak.matmul_gflops` (fp32 n x n products), measured in the same run before and after;
the better of the two counts. Peak memory is the process's maximum resident set size (the data and its rescaled copy included;
the resident size after loading the data is printed too). The last line is `ratio=<achieved / peak> ...`.
"""
import argparse, json, resource, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).parent))
from matmul_peak import matmul_gflops
from multistage_nbdev.schedules import VPSchedule
from multistage_nbdev.clustering import cluster_timesteps
from multistage_nbdev.data import dataset_tensor, pad_images


def rss_gib() -> float:
    "Resident set size of this process now, GiB (Linux)."
    return int(Path('/proc/self/statm').read_text().split()[1]) * resource.getpagesize() / 2**30


def training_set(a) -> torch.Tensor:
    "The (N,C,H,W) training set in [-1, 1] that the arguments ask for."
    if a.data == 'synthetic':
        g = torch.Generator().manual_seed(a.seed)
        return torch.rand(a.N, 3, 1, a.D // 3, generator=g) * 2 - 1          # synthetic images in [-1, 1], (N, C, H, W)
    if a.size not in (16, 28, 32): raise SystemExit(f'--size must be 16, 28 or 32 for real data, got {a.size}')
    data = pad_images(dataset_tensor(a.data), 32) if a.size == 32 else dataset_tensor(a.data, size=None if a.size == 28 else a.size)
    return data[:a.n] if a.n else data                                          # --size 32: a black border, 0 in [0, 1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data', default='synthetic', help="'synthetic' or a dataset name, e.g. fashionmnist")
    p.add_argument('--size', type=int, default=28, help='real data: 16, 28 (native) or 32 (zero-padded)')
    p.add_argument('--K', type=int, default=2000, help='sampled triples')
    p.add_argument('--N', type=int, default=50_000, help='synthetic training-set size')
    p.add_argument('--n', type=int, default=None, help='real data: use only the first N training images (default: all)')
    p.add_argument('--D', type=int, default=3072, help='synthetic pixels per image (3x32x32 = 3072)')
    p.add_argument('--batch-size', type=int, default=1024, help='triples per denoiser pass')
    p.add_argument('--chunk-size', type=int, default=4096, help='training points per chunk')
    p.add_argument('--seed', type=int, default=0, help='seed of the triples (and of the synthetic data)')
    p.add_argument('--json', default=None, help='write the record of the run to this file')
    a = p.parse_args(argv)
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    data = training_set(a)
    load_s, rss_data = time.perf_counter() - t0, rss_gib()
    N, D = len(data), data[0].numel()
    print(f'torch {torch.__version__}, cpu, {threads} threads; data {a.data} {tuple(data.shape)} (loaded in {load_s:.1f} s, '
          f'resident {rss_data:.2f} GiB), K={a.K}, batch {a.batch_size}, chunk {a.chunk_size}, seed {a.seed}')
    peak_before = matmul_gflops(2048)
    t0 = time.perf_counter()
    res, error = None, None
    try:    # uniform-noise images are far apart, so the alpha = 0.9 selection may find no partition; the work is done either way
        res = cluster_timesteps(data, VPSchedule(), K=a.K, generator=torch.Generator().manual_seed(a.seed),
                                batch_size=a.batch_size, chunk_size=a.chunk_size)
        outcome = f'{res.intervals}  (S0 mean {res.s0.mean():.3f}, S1 mean {res.s1.mean():.3f})'
    except ValueError as e: error, outcome = str(e), f'no partition at the default alpha ({str(e)[:120]}...)'
    wall = time.perf_counter() - t0
    peak_after = matmul_gflops(2048)
    try: literal = cluster_timesteps(data, VPSchedule(), K=a.K, generator=torch.Generator().manual_seed(a.seed),
                                     batch_size=a.batch_size, chunk_size=a.chunk_size, reference='x_1').intervals.boundaries
    except ValueError: literal = None
    peak = max(peak_before, peak_after)
    flops = 4 * a.K * N * D
    achieved = flops / wall / 1e9
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f'result: {outcome}; literal reading (t = 1 reference at x_1): {literal}')
    print(f'wall {wall:.2f} s for {flops / 1e12:.3f} TFLOP: {achieved:.1f} GFLOP/s achieved')
    print(f'matmul peak (fp32, n=2048): {peak_before:.1f} GFLOP/s before, {peak_after:.1f} after')
    print(f'peak resident memory {rss_peak:.2f} GiB ({rss_data:.2f} GiB after loading the data)')
    if a.json:
        record = dict(data=a.data, size=a.size if a.data != 'synthetic' else None, shape=list(data.shape), N=N, D=D, K=a.K,
                      alpha=0.9, eta=2 / 255, seed=a.seed, n=a.n, boundaries=list(res.intervals.boundaries) if res else None,
                      boundaries_literal=list(literal) if literal else None,
                      error=error, wall_s=wall, load_s=load_s, peak_rss_gib=rss_peak, rss_after_load_gib=rss_data,
                      achieved_gflops=achieved, matmul_gflops=[peak_before, peak_after], ratio=achieved / peak,
                      threads=threads, torch=torch.__version__)
        if res is not None:
            record['samples'] = {k: [round(float(v), 6) for v in getattr(res, k)] for k in ('t', 's0', 's1')}
        Path(a.json).write_text(json.dumps(record) + '\n')
    print(f'ratio={achieved / peak:.3f} cluster_timesteps/matmul GFLOP/s ({a.data}, K={a.K}, N={N}, D={D}, {threads} threads, '
          f'{wall:.1f} s, {rss_peak:.2f} GiB)')


if __name__ == '__main__':
    main()
