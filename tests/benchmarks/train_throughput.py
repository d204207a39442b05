"""Training throughput of `fit` (images/s): unified vs multistage 'small' presets, and the DDP overhead.

    python tests/benchmarks/train_throughput.py [--iters 30] [--batch-size 32] [--device cpu|cuda] [--no-ddp]

1. unified vs multistage (and separate) 'small' presets in one process with one thread, same data, batch and step count; each model is
   trained as `fit` trains it by default (multistage/separate: one stage per step, unified: mixed times).
2. DDP overhead: the unified and multistage 'small' models under `torchrun --nproc_per_node=2` (gloo on CPU, one thread
   per process) vs one process with one thread, same global batch; and the cost of `find_unused_parameters=True`
   (needed by multistage models, whose unused decoders give no gradient) measured on the unified model, which runs either way.
Prints one line per measurement and the ratios; the last line is `ratio=<multistage images/s / unified images/s>`.
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path
import torch


def measure(arch, iters, batch_size, device, warm=5, **fit_kw):
    "Images/s of `fit` on the 'small' preset, timing the steps after `warm` warm-up steps (rank 0's view under DDP)."
    from multistage_nbdev.train import fit
    from multistage_nbdev.schedules import VPSchedule
    from multistage_nbdev.multistage import build_model
    from multistage_nbdev.testing import synthetic_images
    torch.manual_seed(0)
    model = build_model('small', arch)
    data = synthetic_images(512, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    marks = {}
    def clock(info):
        if info['step'] in (warm, warm + iters):
            if device.startswith('cuda'): torch.cuda.synchronize()
            marks[info['step']] = time.perf_counter()
    fit(model, data, VPSchedule('linear'), iters=warm + iters, batch_size=batch_size, progress=False, log_every=10**6,
        device=device, callback=clock, **fit_kw)
    return iters * batch_size / (marks[warm + iters] - marks[warm])


def worker(args):
    "Run under torchrun (or alone): measure and write the result of rank 0 as JSON."
    torch.set_num_threads(1)
    fu = None if args.find_unused == 'auto' else args.find_unused == 'yes'
    ips = measure(args.arch, args.iters, args.batch_size, args.device, find_unused_parameters=fu)
    if int(os.environ.get('RANK', '0')) == 0: Path(args.out).write_text(json.dumps({'img_per_s': ips}))


def ddp_run(arch, nproc, find_unused, args):
    out = Path(tempfile.mkdtemp()) / 'r.json'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    for k in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'): env.pop(k, None)
    base = [__file__, '--worker', '--arch', arch, '--find-unused', find_unused, '--out', str(out),
            '--iters', str(args.iters), '--batch-size', str(args.batch_size), '--device', args.device]
    torchrun = str(Path(sys.executable).parent / 'torchrun')
    cmd = [torchrun, '--standalone', f'--nproc_per_node={nproc}', *base] if nproc > 1 else [sys.executable, *base]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    return json.loads(out.read_text())['img_per_s']


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--iters', type=int, default=30)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--device', default='cpu')
    p.add_argument('--no-ddp', action='store_true')
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--arch', default='unified', help=argparse.SUPPRESS)
    p.add_argument('--find-unused', default='auto', help=argparse.SUPPRESS)
    p.add_argument('--out', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker: return worker(args)
    torch.set_num_threads(1)  # like each DDP worker; several intra-op threads on a shared CPU mostly wait for each other
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, batch {args.batch_size}, {args.iters} timed steps")
    ips = {a: measure(a, args.iters, args.batch_size, args.device) for a in ('unified', 'separate', 'multistage')}
    for a, v in ips.items(): print(f"{a:10s} small: {v:8.1f} images/s")
    print(f"multistage / unified images/s: {ips['multistage'] / ips['unified']:.3f}")
    print(f"separate / unified images/s:   {ips['separate'] / ips['unified']:.3f}")
    if not args.no_ddp and args.device == 'cpu':
        for arch in ('unified', 'multistage'):
            one, two = ddp_run(arch, 1, 'auto', args), ddp_run(arch, 2, 'auto', args)
            print(f"DDP {arch:10s}: 1 process {one:8.1f} images/s, 2 gloo processes {two:8.1f} images/s (1 thread each); "
                  f"2-process / 1-process: {two / one:.3f}")
        no, yes = ddp_run('unified', 2, 'no', args), ddp_run('unified', 2, 'yes', args)
        print(f"find_unused_parameters on the unified model, 2 processes: {no:8.1f} (False) vs {yes:8.1f} (True) images/s; "
              f"True / False: {yes / no:.3f}")
    print(f"ratio={ips['multistage'] / ips['unified']:.3f}")


if __name__ == '__main__':
    main()
