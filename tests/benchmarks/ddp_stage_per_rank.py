"""How a DDP step picks its times for a multistage model: one stage per rank (the paper's LDM code) against one stage per step
for all ranks (its DPM-Solver code, our default) and mixed batches, under `torchrun --nproc_per_node=2` (gloo on CPU).

    python tests/benchmarks/ddp_stage_per_rank.py [--iters 150] [--batch-size 64] [--nproc 2]

Each mode trains the 'small' multistage model on the bundled digits at 16x16 from the same initial weights and seed, one thread
per process, same global batch; rank 0 reports images/s over the steps after a short warm-up and the EMA model's held-out loss
per interval on the test split (fixed draws, `heldout_loss` seed 0). With 2 ranks and 3 stages, 'rank' rotates: step k trains
stages (2k) mod 3 and (2k+1) mod 3, so every stage still gets the same share of samples.
The last line is `ratio=<images/s with one stage per rank / images/s with one stage per step>`.
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path
import torch


def worker(args):
    "Under torchrun: train, time, evaluate; rank 0 writes JSON."
    torch.set_num_threads(1)
    from multistage_nbdev.train import fit
    from multistage_nbdev.experiment import Setting, seeded_model
    from multistage_nbdev.experiment import preset_for_images
    from multistage_nbdev.diagnostics import heldout_loss
    S = Setting(out_dir=args.cache)
    model = seeded_model('small', 'multistage', S.intervals, 0, **preset_for_images('small', 1, S.size))
    marks, warm = {}, 5
    def clock(info):
        if info['step'] in (warm, args.iters): marks[info['step']] = time.perf_counter()
    r = fit(model, S.train, S.schedule, iters=args.iters, batch_size=args.batch_size, lr=1e-3, warmup=20, ema_halflife=2000.,
            time_sampling=args.mode, seed=0, progress=False, log_every=10**6, callback=clock)
    if int(os.environ.get('RANK', '0')) == 0:
        held = heldout_loss(r.ema, S.test, S.schedule, S.intervals, seed=0)
        ips = (args.iters - warm) * args.batch_size / (marks[args.iters] - marks[warm])
        Path(args.out).write_text(json.dumps(dict(img_per_s=ips, heldout=held['weighted'], per_interval=held['per_interval'])))


def run(mode, args):
    out = Path(tempfile.mkdtemp()) / 'r.json'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    for k in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'): env.pop(k, None)
    torchrun = str(Path(sys.executable).parent / 'torchrun')
    cmd = [torchrun, '--standalone', f'--nproc_per_node={args.nproc}', __file__, '--worker', '--mode', mode, '--out', str(out),
           '--iters', str(args.iters), '--batch-size', str(args.batch_size), '--cache', args.cache]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=1800)
    return json.loads(out.read_text())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--iters', type=int, default=150)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--nproc', type=int, default=2)
    p.add_argument('--cache', default=str(Path(tempfile.gettempdir()) / 'msd_ddp_stage_per_rank'))
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--mode', default='stage', help=argparse.SUPPRESS)
    p.add_argument('--out', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker: return worker(args)
    from multistage_nbdev.experiment import Setting
    Setting(out_dir=args.cache)  # Algorithm 1 once, before the workers read it
    print(f"torch {torch.__version__}, {args.nproc} gloo processes x 1 thread, global batch {args.batch_size}, {args.iters} steps")
    res = {m: run(m, args) for m in ('stage', 'rank', 'mixed')}
    for m, r in res.items():
        print(f"{m:>6}: {r['img_per_s']:7.1f} images/s, held-out loss {r['heldout']:.5f} (per interval {' '.join(f'{v:.4f}' for v in r['per_interval'])})")
    print(f"ratio={res['rank']['img_per_s'] / res['stage']['img_per_s']:.3f} images/s, one stage per rank / one stage per step")


if __name__ == '__main__':
    main()
