"""What a decoder's forward + backward costs as a function of its batch size: a fixed cost per call and a cost per image,
for each decoder of the multistage model and the unified model's decoder, and what that predicts for a mixed batch.

Not collected by pytest (the file name does not start with `test_`). Run from the repository root:

    python tests/benchmarks/decoder_cost.py                         # 'small' preset, 1 thread and the default count
    python tests/benchmarks/decoder_cost.py --sizes 4,8,16,32,64 --reps 9 --threads 1,0 --preset small

For every decoder (the unified model's, and decoder k of the multistage model with the Algorithm 1 intervals of the bundled
digits, 0.196 / 0.406) and every batch size n of `--sizes`, the encoder's outputs for n images are made leaves that require
gradients, and one call is the decoder's forward, the loss `out.square().mean()` and `backward()` (weight gradients and
the gradients of the encoder's outputs, as in training). All (decoder, n) pairs are timed in turn, `--reps` times in a
rotating order, and the median is kept; a least-squares line T(n) = a + b n then splits the cost into `a`, paid once per
call whatever the batch, and `b`, paid per image. FLOPs per image of each decoder are counted by `torch.utils.flop_counter`
(FlopCounter convention, one image through the decoder alone).

The prediction for a mixed batch of `--batch` images gives decoder k its expected share (the interval's length) and sums
the lines, against the unified decoder's line at the whole batch; the difference is split into the extra fixed costs
(three calls instead of one), the extra FLOPs (at the unified decoder's cost per GFLOP), and what is left: each decoder's
cost per GFLOP against the unified decoder's (narrow layers do less arithmetic per byte and per call).

Last, the fixed cost of one small convolution (3x3, 32 to 32 channels, 2 images of 4x4, whose arithmetic is about 0.6
MFLOP): the median time of its forward pass alone and of forward + backward, per call. A decoder of the `small` preset
has 36 convolutions. Beside it, what oneDNN itself reports for forward + backward (its verbose log, read from the
process's standard output while `torch.backends.mkldnn.verbose` is on; median over calls): the primitives it ran and their
summed execution time. The difference to the call's time is spent outside oneDNN's kernels, in setting up each call.

The last line is `ratio=<x>`: predicted multistage decoders' time / unified decoder's time for a mixed batch, divided by
their FLOP ratio, at the first thread count of `--threads`.
"""
import argparse, ctypes, os, statistics, sys, tempfile, time
import torch
from torch.utils.flop_counter import FlopCounterMode
from multistage_nbdev.intervals import Intervals
from multistage_nbdev.multistage import PRESETS, build_model


def leaves(encoder, n, shape, g):
    "The encoder's outputs for n random images and times, as leaves that require gradients: (h, skips, emb)."
    with torch.no_grad(): h, skips, emb = encoder(torch.randn(n, *shape, generator=g), torch.rand(n, generator=g))
    return h.requires_grad_(), [s.requires_grad_() for s in skips], emb.requires_grad_()


def decoder_gflops(decoder, encoder, shape) -> float:
    "GFLOPs of one image through `decoder` alone (FlopCounter convention, as `multistage.gflops`)."
    with torch.no_grad():
        h, skips, emb = encoder(torch.zeros(1, *shape), torch.full((1,), 0.5))
        with FlopCounterMode(display=False) as fc: decoder(h, skips, emb)
    return fc.get_total_flops() / 1e9


def line(sizes, times) -> tuple:
    "Least-squares a, b of T = a + b n."
    n, t = torch.tensor(sizes, dtype=torch.float64), torch.tensor(times, dtype=torch.float64)
    b = ((n - n.mean()) * (t - t.mean())).sum() / ((n - n.mean()) ** 2).sum()
    return float(t.mean() - b * n.mean()), float(b)


def measure(threads, decoders, encoders, shape, sizes, reps, seed) -> dict:
    "{name: (a ms, b ms per image, {n: median ms})}."
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(seed)
    inputs = {(name, n): leaves(encoders[name], n, shape, g) for name in decoders for n in sizes}
    def call(name, n):
        h, skips, emb = inputs[name, n]
        for x in (h, emb, *skips): x.grad = None
        decoders[name].zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        decoders[name](h, skips, emb).square().mean().backward()
        return time.perf_counter() - t0
    keys = list(inputs)
    for k in keys: call(*k)   # compile every kernel once
    took = {k: [] for k in keys}
    for r in range(reps):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]: took[k].append(call(*k))
    out = {}
    for name in decoders:
        med = {n: statistics.median(took[name, n]) * 1e3 for n in sizes}
        out[name] = (*line(sizes, [med[n] for n in sizes]), med)
    return out


def onednn_exec(f) -> tuple:
    "oneDNN's own account of one call of `f`: (summed execution time of its primitives in us, their kinds) from its verbose log."
    libc = ctypes.CDLL(None)
    sys.stdout.flush(); libc.fflush(None)
    saved = os.dup(1)
    with tempfile.TemporaryFile('w+') as log:
        os.dup2(log.fileno(), 1)   # oneDNN writes its log with C stdio, to file descriptor 1
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON): f()
            libc.fflush(None)
        finally: os.dup2(saved, 1); os.close(saved)
        log.seek(0)
        rows = [line.strip().split(',') for line in log if ',primitive,exec,' in line]
    return sum(float(r[-1]) for r in rows) * 1e3, [r[5] for r in rows]


def small_conv_cost(threads, reps=200) -> tuple:
    "Median microseconds of one tiny 3x3 convolution: forward (no gradients), forward + backward, and oneDNN's part of it."
    torch.set_num_threads(threads)
    x, w = torch.randn(2, 32, 4, 4, requires_grad=True), torch.randn(32, 32, 3, 3, requires_grad=True)
    b, go = torch.randn(32, requires_grad=True), torch.randn(2, 32, 4, 4)
    def fwd():
        with torch.no_grad(): torch.nn.functional.conv2d(x, w, b, padding=1)
    def both():
        x.grad = w.grad = b.grad = None
        torch.nn.functional.conv2d(x, w, b, padding=1).backward(go)
    out = []
    for f in (fwd, both):
        for _ in range(20): f()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
        out.append(statistics.median(ts) * 1e6)
    if not torch.backends.mkldnn.is_available(): return (*out, float('nan'), [])
    runs = [onednn_exec(both) for _ in range(21)]
    return (*out, statistics.median(us for us, _ in runs), runs[-1][1])


def predict(res, weights, batch) -> tuple:
    "The unified decoder's and the multistage decoders' predicted ms for a mixed batch of `batch` images."
    ua, ub, _ = res['unified']
    return ua + ub * batch, sum(res[k][0] + res[k][1] * w * batch for k, w in weights.items())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--preset', default='small', choices=list(PRESETS))
    p.add_argument('--sizes', default='4,8,13,16,24,35,48,64', help='batch sizes per call')
    p.add_argument('--reps', type=int, default=7, help='timed calls per (decoder, batch size)')
    p.add_argument('--batch', type=int, default=64, help='the mixed batch of the prediction')
    p.add_argument('--threads', default='1,0', help="comma-separated torch CPU thread counts; 0: the machine's default")
    p.add_argument('--intervals', default='0.196,0.406', help='stage boundaries (default: Algorithm 1 on the bundled digits)')
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args(argv)
    if a.reps < 1: raise SystemExit('--reps must be >= 1')
    sizes = [int(v) for v in a.sizes.split(',')]
    if len(set(sizes)) < 2 or min(sizes) < 1: raise SystemExit('--sizes needs at least two distinct positive sizes')
    default = torch.get_num_threads()
    threads = [int(v) or default for v in a.threads.split(',')]
    iv = Intervals([float(v) for v in a.intervals.split(',')])
    cfg = PRESETS[a.preset]
    shape = (cfg['in_ch'], cfg['img_size'], cfg['img_size'])
    uni, ms = build_model(a.preset, 'unified', iv, seed=a.seed), build_model(a.preset, 'multistage', iv, seed=a.seed)
    decoders = {'unified': uni.decoder, **{f'decoder {k}': d for k, d in enumerate(ms.decoders)}}
    encoders = {'unified': uni.encoder, **{f'decoder {k}': ms.encoder for k in range(ms.n_stages)}}
    dec_gf = {name: decoder_gflops(d, encoders[name], shape) for name, d in decoders.items()}
    weights = {f'decoder {k}': w for k, w in enumerate(iv.lengths)}   # a decoder's expected share of a mixed batch
    print(f"torch {torch.__version__}, default threads {default}, preset {a.preset}, intervals {iv}, sizes {sizes}, "
          f"{a.reps} reps, load average {os.getloadavg()[0]:.1f}")
    print(f"decoder GFLOPs per image (FlopCounter): " + ', '.join(f"{k} {v:.4f}" for k, v in dec_gf.items()))
    first = None
    for n in threads:
        res = measure(n, decoders, encoders, shape, sizes, a.reps, a.seed)
        per_gf_u = res['unified'][1] / dec_gf['unified']
        print(f"\nthreads {n}: median ms per forward+backward call, and the line a + b n")
        print(f"{'decoder':10s} " + ' '.join(f"{s:>7d}" for s in sizes) +
              f" {'a ms':>7s} {'b ms/img':>8s} {'ms/GFLOP':>8s} {'vs unified':>10s}")
        for name, (ca, cb, med) in res.items():
            print(f"{name:10s} " + ' '.join(f"{med[s]:7.1f}" for s in sizes) +
                  f" {ca:7.1f} {cb:8.2f} {cb / dec_gf[name]:8.1f} {cb / dec_gf[name] / per_gf_u:10.2f}")
        uni_t, ms_t = predict(res, weights, a.batch)
        fr = sum(w * dec_gf[k] for k, w in weights.items()) / dec_gf['unified']   # FLOP ratio of the decoders
        fixed = sum(res[k][0] for k in weights) - res['unified'][0]
        extra_flops = (fr - 1) * a.batch * dec_gf['unified'] * per_gf_u
        left = ms_t - uni_t - fixed - extra_flops
        print(f"mixed batch of {a.batch} ({', '.join(f'{a.batch * w:.1f}' for w in weights.values())} images): unified "
              f"decoder {uni_t:.1f} ms, multistage decoders {ms_t:.1f} ms (x{ms_t / uni_t:.3f}, FLOPs x{fr:.3f}); the "
              f"{ms_t - uni_t:+.1f} ms are fixed costs {fixed:+.1f}, extra FLOPs {extra_flops:+.1f}, "
              f"cost per GFLOP {left:+.1f}")
        by_batch = {b: predict(res, weights, b) for b in (32, 64, 128, 256, 512)}
        print("the same lines at other batch sizes (multistage / unified decoders, over the FLOP ratio): " +
              ', '.join(f"{b}: {m / u / fr:.3f}" for b, (u, m) in by_batch.items()))
        fwd_us, both_us, dnn_us, kinds = small_conv_cost(n)
        print(f"one small convolution (3x3, 32->32 channels, 2 images of 4x4): forward {fwd_us:.0f} us, "
              f"forward + backward {both_us:.0f} us per call, of which oneDNN's kernels ran {dnn_us:.0f} us "
              f"({kinds.count('convolution')} convolutions, {kinds.count('reorder')} layout reorders, "
              f"{len(kinds)} primitives); outside them {both_us - dnn_us:.0f} us")
        first = first or (n, ms_t / uni_t / fr)
    print(f"ratio={first[1]:.3f} predicted multistage / unified decoders' forward+backward on a mixed batch, over the "
          f"FLOP ratio, {first[0]} thread(s), preset {a.preset}")


if __name__ == '__main__':
    main()
