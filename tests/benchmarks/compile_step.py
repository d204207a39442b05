"""What `fit(compile=True)` buys: the real `fit` step with and without `torch.compile`, and what compiling costs.

Not collected by pytest. Run from the repository root on an otherwise idle machine (compiling takes minutes on a CPU):

    python tests/benchmarks/compile_step.py                       # width-8 models of 26_exp_decomposition, 1 and 2 threads
    python tests/benchmarks/compile_step.py --arms unified --threads 1 --steps 60

Each arm trains its model for `--steps` steps in a fresh process, eagerly and compiled (inductor), at each thread count of
`--threads` (`fit(threads=n)`). A step's time is the median over the steps after the first `--skip`; the compile time is
the extra time of the compiled run's first `--skip` steps over the eager run's (where dynamo traces and inductor builds the
kernels; a mixed batch brings new sub-batch sizes, so recompiles can come later too, and they count in the mean, printed
beside the median). The arms: `unified` (mixed t), `stage` (multistage, one stage per step), `mixed` (multistage, mixed
batches), all width 8 at 16x16 on Fashion-MNIST, batch 64, intervals 0.101 / 0.546.

The last line is `ratio=<x>`: the best, over arms and thread counts, of compiled median step / eager median step (below 1:
compiling pays per step), with the compile seconds of that arm.
"""
import argparse, json, os, statistics, subprocess, sys

WORKER = r'''
import json, sys, time, torch
from multistage_nbdev.data import dataset_tensor
from multistage_nbdev.intervals import Intervals
from multistage_nbdev.multistage import build_model
from multistage_nbdev.schedules import VPSchedule
from multistage_nbdev.train import fit
arch, mode, compile_, threads, steps = json.loads(sys.argv[1])
data = dataset_tensor('fashionmnist', size=16)
kw = dict(unified_ch=8) if arch == 'unified' else dict(enc_ch=8, dec_chs=(12, 8, 4))
model = build_model('small', arch, Intervals([0.101, 0.546]), seed=0, **kw)
marks = [time.perf_counter()]
fit(model, data, VPSchedule('linear'), iters=steps, batch_size=64, time_sampling=mode, progress=False, threads=threads,
    compile=compile_, callback=lambda info: marks.append(time.perf_counter()))
print(json.dumps([b - a for a, b in zip(marks, marks[1:])]))
'''
ARMS = {'unified': ('unified', 'mixed'), 'stage': ('multistage', 'stage'), 'mixed': ('multistage', 'mixed')}


def run(arm, compile_, threads, steps):
    arch, mode = ARMS[arm]
    out = subprocess.run([sys.executable, '-c', WORKER, json.dumps([arch, mode, compile_, threads, steps])],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arms', default=','.join(ARMS))
    p.add_argument('--threads', default='1,2')
    p.add_argument('--steps', type=int, default=60)
    p.add_argument('--skip', type=int, default=5)
    a = p.parse_args(argv)
    import torch
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {a.steps} steps per run")
    best, rows = None, []
    for arm in a.arms.split(','):
        for n in (int(v) for v in a.threads.split(',')):
            eager, comp = run(arm, False, n, a.steps), run(arm, True, n, a.steps)
            me, mc = statistics.median(eager[a.skip:]), statistics.median(comp[a.skip:])
            compile_s = sum(comp[:a.skip]) - sum(eager[:a.skip])
            rows.append((arm, n, me, mc, compile_s))
            print(f"{arm:8s} {n} thread(s): eager {me * 1e3:.1f} ms/step (mean {statistics.mean(eager[a.skip:]) * 1e3:.1f}), "
                  f"compiled {mc * 1e3:.1f} (mean {statistics.mean(comp[a.skip:]) * 1e3:.1f}): x{mc / me:.3f}; "
                  f"compiling took {compile_s:.0f} s")
            if best is None or mc / me < best[0]: best = (mc / me, arm, n, compile_s)
    r, arm, n, cs = best
    print(f"ratio={r:.3f} best compiled/eager median fit step ({arm}, {n} thread(s), {cs:.0f} s of compiling)")


if __name__ == '__main__':
    main()
