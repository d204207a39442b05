"""The thread policy against fixed thread counts, on the real `fit` step, on a free machine and beside a busy process.

Not collected by pytest. Run from the repository root on an otherwise idle machine:

    python tests/benchmarks/thread_policy.py                  # the main job's models: small preset, 16x16, batch 64, mixed
    python tests/benchmarks/thread_policy.py --steps 80 --rounds 3 --busy 1

Each configuration trains the multistage `small` model with mixed batches (the main job's default) for `--steps` steps in a
fresh process (`fit(threads=...)`, torch's default count otherwise), `--rounds` times with the arms taking turns, so that a
drift of the machine's speed hits every arm alike. It reports the step times after the first `--skip` of each process (the
one-off costs; the policy's own trial steps are not skipped: they are what it costs). The arms:

  default   two threads (torch's default on this machine kind), OpenMP's active waiting: what `fit` did before the policy
  one       one thread
  policy    `threads='auto'`: `multistage_nbdev.cpu.ThreadPolicy` picks per step

Every arm runs on the free machine and again while `--busy` other processes each spin a core (plain Python loops, started
before and stopped after the arm by this script). Because the policy's trials cost more the slower the other count is, the
busy policy arm is also scored by its mean step time (its trials included), not only its median.

The last line is `ratio=<worst> ...`: the worse of (free: policy mean / default mean) and (busy: policy mean / one mean).
The goal is at most 1.10, and on the free machine within 3% of the default.
"""
import argparse, json, os, statistics, subprocess, sys, time
from pathlib import Path

WORKER = r'''
import json, sys, time, torch
from multistage_nbdev.data import dataset_tensor
from multistage_nbdev.intervals import Intervals
from multistage_nbdev.multistage import build_model
from multistage_nbdev.schedules import VPSchedule
from multistage_nbdev.train import fit
threads, steps = json.loads(sys.argv[1]), int(sys.argv[2])
data = dataset_tensor('mnist5k', size=16)
model = build_model('small', 'multistage', Intervals([0.196, 0.406]), seed=0)
marks = []
res = fit(model, data, VPSchedule('linear'), iters=steps, batch_size=64, time_sampling='mixed', progress=False,
          threads=threads, callback=lambda info: marks.append(time.perf_counter()))
print(json.dumps(dict(times=[b - a for a, b in zip(marks, marks[1:])], threads=torch.get_num_threads())))
'''

ARMS = {'default': None, 'one': 1, 'policy': 'auto'}


def run_arm(threads, steps) -> list:
    "Step times (s) of one fresh-process `fit` run."
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')}
    out = subprocess.run([sys.executable, '-c', WORKER, json.dumps(threads), str(steps)], capture_output=True, text=True,
                         env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])['times']


def busy_processes(n):
    "Start n processes that each keep one core busy; returns them (terminate them when done)."
    spin = 'import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass'   # ends with this script, even if killed
    return [subprocess.Popen([sys.executable, '-c', spin]) for _ in range(n)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=80, help='fit steps per arm and round')
    p.add_argument('--rounds', type=int, default=3, help='rounds in which the arms take turns (each a fresh process)')
    p.add_argument('--skip', type=int, default=3, help='first steps left out of the statistics (one-off costs)')
    p.add_argument('--busy', type=int, default=1, help='busy processes beside the busy arms')
    p.add_argument('--json', default=None, help='write every step time to this file')
    a = p.parse_args(argv)
    import torch
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, default threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}; {a.rounds} rounds of {a.steps} fit steps per arm, first {a.skip} of each "
          "left out")
    res = {}
    for load in ('free', 'busy'):
        for rnd in range(a.rounds):          # the arms take turns, so a drift of the machine's speed hits them alike
            for arm, threads in ARMS.items():
                procs = busy_processes(a.busy) if load == 'busy' else []
                try:
                    time.sleep(0.5 if procs else 0)
                    t = run_arm(threads, a.steps)[a.skip:]
                finally:
                    for q in procs: q.terminate()
                    for q in procs: q.wait()
                res.setdefault((load, arm), []).extend(t)
                print(f"{load:4s} {arm:7s} round {rnd}: mean {statistics.mean(t):.3f} s/step, median "
                      f"{statistics.median(t):.3f}, max {max(t):.3f}  ({len(t)} steps)", flush=True)
    mean = {k: statistics.mean(v) for k, v in res.items()}
    free, busy = mean['free', 'policy'] / mean['free', 'default'], mean['busy', 'policy'] / mean['busy', 'one']
    print(f"free: policy / default {free:.3f} (one thread / default {mean['free', 'one'] / mean['free', 'default']:.3f}); "
          f"busy: policy / one thread {busy:.3f} (default / one thread {mean['busy', 'default'] / mean['busy', 'one']:.3f})")
    if a.json: Path(a.json).write_text(json.dumps({f'{k[0]}/{k[1]}': v for k, v in res.items()}) + '\n')
    print(f"ratio={max(free, busy):.3f} worst of free policy/default ({free:.3f}) and busy policy/one-thread ({busy:.3f}); "
          f"small multistage, mixed batches, batch 64, {a.rounds} x {a.steps} steps, {a.busy} busy process(es)")


if __name__ == '__main__':
    main()
