"""Achieved matrix-multiply throughput of this machine: the peak other benchmarks compare against.

Not collected by pytest (the file name does not start with `test_`). Run from the repository root:

    python tests/benchmarks/matmul_peak.py                          # fp32, n = 2048, CPU
    python tests/benchmarks/matmul_peak.py --dtype float64 --n 1024
    python tests/benchmarks/matmul_peak.py --device cuda --dtype bfloat16 --n 8192

One n x n by n x n product is 2 n^3 floating-point operations (n^3 multiply-adds). It is timed `--repeats` times after
a warm-up and the best time is reported, since on a shared machine the best run is the one least disturbed by other
processes. The last line is `ratio=<GFLOP/s> GFLOP/s ...`: operations per second, in units of 1e9.

Other benchmarks import the measurement:

    sys.path.insert(0, str(Path(__file__).parent)); from matmul_peak import matmul_gflops
"""
import argparse, os, time
import torch


def matmul_gflops(n:int=2048, # matrix size: one product is 2*n**3 flops
                  dtype:torch.dtype=torch.float32, # element type
                  device:str|torch.device='cpu', # where to multiply
                  repeats:int=5, # timed products; the fastest counts
                  seed:int=0, # seed of the random matrices
                 ) -> float: # achieved GFLOP/s of the fastest product
    "Best achieved GFLOP/s of an n x n matrix product over `repeats` runs (after one warm-up)."
    if n < 1 or repeats < 1: raise ValueError(f"`n` and `repeats` must be positive, got n={n}, repeats={repeats}")
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(seed)
    a = torch.randn(n, n, generator=g, device=device, dtype=torch.float32).to(dtype)
    b = torch.randn(n, n, generator=g, device=device, dtype=torch.float32).to(dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == 'cuda' else (lambda: None)
    torch.mm(a, b); sync()  # warm-up: thread pools, kernel selection
    best = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter(); torch.mm(a, b); sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=2048, help='matrix size')
    p.add_argument('--dtype', default='float32', help='torch dtype name: float32, float64, bfloat16, float16')
    p.add_argument('--device', default='cpu')
    p.add_argument('--repeats', type=int, default=5, help='timed products (best is reported)')
    a = p.parse_args(argv)
    dtype = getattr(torch, a.dtype)
    threads = torch.get_num_threads()
    load = ', '.join(f'{v:.1f}' for v in os.getloadavg())  # other processes on a shared machine lower the result
    print(f'torch {torch.__version__}, device {a.device}, {threads} CPU threads, load average {load}, n={a.n}, {a.dtype}, best of {a.repeats}')
    gflops = matmul_gflops(a.n, dtype, a.device, a.repeats)
    print(f'ratio={gflops:.1f} GFLOP/s achieved {a.dtype} matmul (2*n^3 flops / best time; n={a.n}, {a.device}, {threads} threads)')


if __name__ == '__main__':
    main()
