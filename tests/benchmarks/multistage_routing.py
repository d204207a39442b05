"""Cost of routing a mixed-t batch through the multistage model, against a plain U-Net of equal FLOPs.

(a) the `small` multistage preset (encoder 32, decoders 48/32/16, 16x16x1) on a batch whose times cover every interval in
    proportion to its length (so the batch costs exactly the interval-weighted FLOPs), forward + backward;
(b) a plain `UNet` with the same encoder and the FLOPs of (a): oneDNN convolutions run much faster at channel counts that are
    multiples of 8, so instead of an odd decoder width (36 here, which would favour (a)) we time the two U-Nets whose decoder
    widths are the neighbouring multiples of 8 (32 and 40) and interpolate their step times linearly in FLOPs.
All models are timed in the same run, interleaved, median over repetitions. On CPU the clock is the process's CPU time
(`--clock cpu`, the default there), which on a machine shared with other jobs is far steadier than wall time and, with one
thread, equals the wall time an idle machine would show; use `--clock wall` on an idle machine with several threads. Also: a batch that falls in one interval (the sampling
case) against the U-Net with that interval's exact cost. The last line is the ratio (a)/(b).

    python tests/benchmarks/multistage_routing.py [--batch 64] [--reps 15] [--device cpu] [--threads N] [--clock cpu|wall] [--channels_last] [--profile]
"""
import argparse, statistics, time
import torch
from multistage_nbdev.multistage import build_model, gflops
from multistage_nbdev.unet import UNet


def step_time(model, x, t, sync, clock):
    "Seconds of one forward+backward (loss: mean squared output)."
    model.zero_grad(set_to_none=True)
    sync(); t0 = clock()
    model(x, t).square().mean().backward()
    sync(); return clock() - t0


def interleaved(models, x, ts, reps, sync, clock):
    "Median step time of several models on the same input: two warm-up steps each, then rounds in alternating order."
    out = [[] for _ in models]
    for m, t in zip(models, ts): step_time(m, x, t, sync, clock); step_time(m, x, t, sync, clock)
    for r in range(reps):
        idx = list(range(len(models)))[::1 if r % 2 == 0 else -1]
        for i in idx: out[i].append(step_time(models[i], x, ts[i], sync, clock))
    return [statistics.median(v) for v in out]


def bracketing_unets(ms, target, device, multiple=8):
    "Two U-Nets with `ms`'s encoder whose decoder widths (multiples of `multiple`) bracket `target` FlopCounter GFLOPs."
    e = ms.encoder
    cfg = dict(in_ch=e.in_ch, img_size=e.img_size, ch=e.ch, ch_mult=e.ch_mult, num_res_blocks=e.num_res_blocks,
               attn_resolutions=e.attn_resolutions, dropout=e.dropout, head_ch=e.head_ch, time_cond=e.time_cond,
               resample_with=e.resample_with)
    def cost(d):
        with torch.device('meta'): return gflops(UNet(dec_ch=d, **cfg))['gflops'][0]
    lo = multiple
    while cost(lo + multiple) <= target: lo += multiple
    with torch.device(device):
        return [(UNet(dec_ch=d, **cfg), cost(d), d) for d in (lo, lo + multiple)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--reps', type=int, default=15)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: leave the default)')
    ap.add_argument('--clock', choices=('cpu', 'wall'), default=None, help="default: 'cpu' on CPU, 'wall' on GPU")
    ap.add_argument('--channels_last', action='store_true')
    ap.add_argument('--profile', action='store_true', help='print where the multistage step spends its time')
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == 'cuda' else (lambda: None)
    clock_name = a.clock or ('cpu' if dev.type == 'cpu' else 'wall')
    clock = time.process_time if clock_name == 'cpu' else time.perf_counter
    g = torch.Generator().manual_seed(0)

    ms = build_model('small', 'multistage', device=dev)
    iv = ms.intervals
    fl = gflops(ms)
    (u_lo, gf_lo, w_lo), (u_hi, gf_hi, w_hi) = bracketing_unets(ms, fl['weighted_gflops'], dev)
    mf = torch.channels_last if a.channels_last else torch.contiguous_format
    for m in (ms, u_lo, u_hi): m.to(memory_format=mf)

    B = a.batch
    x = torch.randn(B, ms.in_ch, ms.img_size, ms.img_size, generator=g).to(dev, memory_format=mf)
    # stratified times in random order: every interval gets (almost exactly) its share of the batch
    t_mixed = ((torch.arange(B) + 0.5) / B)[torch.randperm(B, generator=g)].to(dev)
    t1, t2 = iv.boundaries
    t_one = (t1 + (t2 - t1) * torch.rand(B, generator=g)).to(dev)
    counts = torch.bincount(iv.stage_of(t_mixed), minlength=iv.n_stages).tolist()
    batch_gf = sum(c * f for c, f in zip(counts, fl['gflops'])) / B

    print(f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {B}, "
          f"{'channels_last' if a.channels_last else 'contiguous'}, clock {clock_name}")
    print(f"intervals {iv}; samples per stage {counts}")
    print(f"multistage GFLOPs per stage {[round(v, 4) for v in fl['gflops']]}, interval-weighted {fl['weighted_gflops']:.4f}, "
          f"this batch {batch_gf:.4f} per image")
    print(f"U-Nets with encoder {ms.encoder.ch} and decoder {w_lo} / {w_hi}: {gf_lo:.4f} / {gf_hi:.4f} GFLOPs per image")

    ta, t_lo, t_hi, t1s = interleaved([ms, u_lo, u_hi, ms], x, [t_mixed, t_mixed, t_mixed, t_one], a.reps, sync, clock)
    tb = t_lo + (t_hi - t_lo) * (batch_gf - gf_lo) / (gf_hi - gf_lo)   # equal-FLOP U-Net, interpolated
    print(f"    U-Net decoder {w_lo}: {t_lo * 1e3:8.2f} ms/step, decoder {w_hi}: {t_hi * 1e3:8.2f} ms/step")
    print(f"(a) multistage, mixed batch        {ta * 1e3:8.2f} ms/step")
    print(f"(b) equal-FLOP U-Net (interpolated) {tb * 1e3:8.2f} ms/step")
    one = ' (the same network as stage 1 of (a))' if w_lo == ms.decoders[1].ch else ''
    print(f"one-interval batch: multistage {t1s * 1e3:8.2f} ms/step vs U-Net decoder {w_lo}{one} {t_lo * 1e3:8.2f} ms/step: "
          f"ratio={t1s / t_lo:.3f}")

    if a.profile:
        from torch.profiler import profile, ProfilerActivity
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == 'cuda' else [])
        with profile(activities=acts) as prof:
            for _ in range(3):
                ms.zero_grad(set_to_none=True); ms(x, t_mixed).square().mean().backward()
        print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=15))
    print(f"ratio={ta / tb:.3f} multistage mixed-batch step / equal-FLOP unified step")


if __name__ == '__main__':
    main()
