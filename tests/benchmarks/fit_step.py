"""Cost of one real `train.fit` step of the multistage model (every way of drawing stages) and the separate U-Nets,
against the unified model, next to the FLOPs each step actually computed.

Not collected by pytest (the file name does not start with `test_`). Run from the repository root:

    python tests/benchmarks/fit_step.py                        # 'small' preset, batch 64, 1 thread and the default count
    python tests/benchmarks/fit_step.py --steps 15 --rounds 3 --threads 1,0 --batch 64 --preset small
    python tests/benchmarks/fit_step.py --arms mixed --threads 1 # only these arms beside the unified one
    python tests/benchmarks/fit_step.py --channels-last         # every arm's weights and activations in NHWC order
    python tests/benchmarks/fit_step.py --data fashionmnist --overrides unified_ch=8 enc_ch=8 'dec_chs=(12,8,4)' \
        --intervals 0.101,0.546 --arms stage,mixed,twin --threads 1   # the width-8 models of 26_exp_decomposition

Arms, all built by `multistage.build_model(preset, arch, intervals)` with the same seed and trained by `fit` on the bundled
digits (resized to the preset's image size; `--data` names another data set, `--overrides` changes the preset's widths),
Adam, EMA, gradient clipping and the per-stage log included:
  unified   the unified U-Net, times drawn over [0,1] (`time_sampling='mixed'`)
  stage     multistage, one stage per step drawn uniformly (`'stage'`, the paper's DPM-Solver code)
  mixed     multistage, every batch covers all intervals and is routed sample by sample (`'mixed'`)
  rank      multistage, `'rank'` in one process: the stages rotate step by step
  separate  one U-Net per interval (`build_model(preset, 'separate', intervals)`), one stage per step
  twin      the unified arm again, timed like the others: its ratio to unified is this run's noise, not a cost
Each arm runs `fit` for `--warm` + `--steps` steps; `fit`'s `callback` stamps the wall clock and the process CPU time after
every step and the steps after the warm-up are timed, so set-up (EMA copy, optimizer state, first-step allocations) is left
out. The arms run interleaved, in alternating order, for `--rounds` rounds at each thread count of `--threads`
(0: the machine's default). Every round trains the same steps from the same weights, so step k of one round repeats the
work of step k of another: the reported time per step is the median over rounds of each step, averaged over the steps
(the best over rounds is printed too). On this virtual machine a descheduled vCPU also shows as CPU time, so a median
over repeats of the same step, rather than a mean over a round, keeps the rare multi-second stalls out.

Every round trains the same steps, so from the second round on the decoders of a mixed batch meet batch sizes whose
convolution kernels oneDNN has already compiled, as they do in a long run once each size has come up (importing
`multistage_nbdev.multistage` makes the kernel caches large enough to keep them; `varying_batches.py` shows a run's way
there). The first round's figures, printed per round, include that compilation.

FLOPs per step are counted, not assumed: `fit`'s log (one record per step) gives the samples each stage served in the timed
steps, and each stage's GFLOPs per image come from `multistage.gflops` (FlopCounter convention, 2 per multiply-add, all
ops). With one stage drawn uniformly the expected FLOPs are the mean over stages, not the interval-weighted mean; with
mixed batches they are the interval-weighted mean. Forward and backward are both proportional to these counts.

With several threads on a machine whose cores other jobs also use, OpenMP's spin-waiting threads burn the time slices
their partner needs: on two shared cores a 2-thread step measured 5-10x slower than a 1-thread one. The load average is
printed before and after the run; `OMP_WAIT_POLICY=PASSIVE python tests/benchmarks/fit_step.py` measures the multi-thread
steps without the spinning (it must be set before the process starts).

The last line is `ratio=<x>`: the worst, over the arms other than unified and twin and over the thread counts, of
(arm's time per step / unified time per step) / (arm's FLOPs per step / unified FLOPs per step), on the `--clock` clock
(CPU time by default: steadier on a shared machine; at one thread it equals an idle machine's wall time). 1 means the arm
costs what its FLOPs say; above 1 is overhead that the FLOP count does not show. The line ends with the twin arm's
figures at each thread count: an arm whose ratio is closer to 1 than the twin's is within this run's noise.

Every arm runs `fit` with `threads=` the count being measured, so the thread policy (`multistage_nbdev.cpu`) stays out of it.
"""
import argparse, copy, json, os, platform, statistics, time, warnings
from pathlib import Path
import torch
from multistage_nbdev.intervals import Intervals
from multistage_nbdev.data import dataset_tensor
from multistage_nbdev.multistage import PRESETS, build_model, gflops
from multistage_nbdev.schedules import VPSchedule
from multistage_nbdev.train import fit
from multistage_nbdev.cli import _parse_overrides

ARMS = {'unified': ('unified', 'mixed'), 'stage': ('multistage', 'stage'), 'mixed': ('multistage', 'mixed'),
        'rank': ('multistage', 'rank'), 'separate': ('separate', 'stage'), 'twin': ('unified', 'mixed')}


def timed_fit(model, mode, data, warm, steps, batch, seed) -> tuple:
    "Seconds of each of `fit`'s steps warm+1 .. warm+steps on a copy of `model`, (steps, 2) wall and CPU; samples per stage."
    marks = []
    stamp = lambda info: marks.append((time.perf_counter(), time.process_time()))
    with warnings.catch_warnings():  # 'rank' in one process warns that the stages rotate: that is what this arm measures
        warnings.simplefilter('ignore', UserWarning)
        res = fit(copy.deepcopy(model), data, VPSchedule('linear'), iters=warm + steps, batch_size=batch, time_sampling=mode,
                  seed=seed, log_every=1, progress=False, callback=stamp, threads=torch.get_num_threads())
    counts = [sum(r['stage_count'][k] for r in res.history[warm:]) for k in range(len(res.history[-1]['stage_count']))]
    return torch.tensor(marks[warm - 1:], dtype=torch.float64).diff(dim=0), counts


def per_step(rounds:list, how) -> list:
    "[wall, CPU] seconds per step: `how` (median or min) over rounds of each step (all rounds do the same steps), then the mean."
    t = torch.stack(rounds)  # (rounds, steps, 2)
    return (t.median(0).values if how == 'median' else t.min(0).values).mean(0).tolist()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--preset', default='small', choices=list(PRESETS))
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--steps', type=int, default=8, help='timed fit steps per arm and round')
    p.add_argument('--warm', type=int, default=2, help='untimed fit steps before them')
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--threads', default='1,0', help="comma-separated torch CPU thread counts; 0: the machine's default")
    p.add_argument('--intervals', default='0.196,0.406', help='stage boundaries (default: Algorithm 1 on the bundled digits)')
    p.add_argument('--clock', choices=('cpu', 'wall'), default='cpu', help='clock of the ratio line (both are printed)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--arms', default=','.join(ARMS), help='comma-separated arms to time (unified is always timed)')
    p.add_argument('--data', default='digits', help="training images: a dataset name of multistage_nbdev.data (its train split)")
    p.add_argument('--overrides', nargs='*', default=[], help="preset overrides KEY=VALUE for every arm, e.g. unified_ch=8 enc_ch=8")
    p.add_argument('--json', default=None, help='also write the per-step times and FLOPs to this JSON file')
    p.add_argument('--channels-last', action='store_true',
                   help="train every arm in channels-last memory format (`model.to(memory_format=torch.channels_last)`)")
    a = p.parse_args(argv)
    unknown = set(a.arms.split(',')) - set(ARMS)
    if unknown: raise SystemExit(f"--arms: unknown {sorted(unknown)}; choose from {list(ARMS)}")
    arms = {arm: ARMS[arm] for arm in ARMS if arm == 'unified' or arm in a.arms.split(',')}
    if set(arms) <= {'unified', 'twin'}: raise SystemExit("--arms: name at least one arm besides 'unified' and 'twin'")
    if a.warm < 1 or a.steps < 1 or a.rounds < 1: raise SystemExit('--warm, --steps and --rounds must be >= 1')
    default_threads = torch.get_num_threads()
    threads = [int(v) or default_threads for v in a.threads.split(',')]
    iv = Intervals([float(v) for v in a.intervals.split(',')])
    ov = _parse_overrides(a.overrides)
    cfg = {**PRESETS[a.preset], **ov}
    data = dataset_tensor(a.data, size=cfg['img_size'], channels=cfg['in_ch'])
    models = {arm: build_model(a.preset, arch, iv, seed=a.seed, **ov) for arm, (arch, _) in arms.items()}
    if a.channels_last: models = {arm: m.to(memory_format=torch.channels_last) for arm, m in models.items()}
    stage_gf = {arm: gflops(build_model(a.preset, arch, iv, device='meta', **ov))['gflops'] for arm, (arch, _) in ARMS.items()}
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, default threads {default_threads}, "
          f"preset {a.preset} {ov or ''}, batch {a.batch}, {data.shape[0]} {a.data} images {tuple(data.shape[1:])}, intervals {iv}")
    print(f"steps: {a.warm} warm + {a.steps} timed, {a.rounds} rounds, threads {threads}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, load average {os.getloadavg()[0]:.1f}, "
          f"memory format {'channels_last' if a.channels_last else 'contiguous (NCHW)'}")
    weighted = iv.weighted(stage_gf['mixed'])
    print(f"GFLOPs per image per stage (FlopCounter): multistage {[round(g, 4) for g in stage_gf['mixed']]}, "
          f"separate {[round(g, 4) for g in stage_gf['separate']]}, unified {stage_gf['unified'][0]:.4f}; "
          f"interval-weighted multistage / unified {weighted / stage_gf['unified'][0]:.3f}, "
          f"mean over stages / unified {statistics.mean(stage_gf['mixed']) / stage_gf['unified'][0]:.3f}")

    times = {(n, arm): [] for n in threads for arm in arms}   # per round: (steps, 2) seconds, wall and CPU
    counts = {}
    for r in range(a.rounds):
        for n in threads[::1 if r % 2 == 0 else -1]:
            torch.set_num_threads(n)
            for arm in list(arms)[::1 if r % 2 == 0 else -1]:
                dt, counts[arm] = timed_fit(models[arm], arms[arm][1], data, a.warm, a.steps, a.batch, a.seed)
                times[n, arm].append(dt)
        print(f"round {r + 1} (ms per step, wall/CPU): " + ', '.join(
            f"{arm}@{n} {times[n, arm][-1][:, 0].mean() * 1e3:.0f}/{times[n, arm][-1][:, 1].mean() * 1e3:.0f}"
            for n in threads for arm in arms))
    torch.set_num_threads(default_threads)
    print(f"load average at the end {os.getloadavg()[0]:.1f} (1 min), {os.getloadavg()[1]:.1f} (5 min)")

    flops = {arm: sum(c * g for c, g in zip(counts[arm], stage_gf[arm])) / sum(counts[arm]) for arm in arms}
    worst, where, twin, record = 0., None, {}, {}
    for n in threads:
        med = {arm: per_step(times[n, arm], 'median') for arm in arms}
        record[n] = {arm: dict(wall_ms=med[arm][0] * 1e3, cpu_ms=med[arm][1] * 1e3, gflop_per_image=flops[arm],
                               samples_per_stage=counts[arm]) for arm in arms}
        best = {arm: per_step(times[n, arm], 'min') for arm in arms}
        print(f"\nthreads {n}: ms per step (median over {a.rounds} rounds), ratios to unified; last column: CPU time, best of rounds")
        print(f"{'arm':9s} {'samples per stage':>18s} {'GFLOP/img':>9s} {'FLOP x':>6s} {'wall ms':>8s} {'CPU ms':>8s} "
              f"{'wall x':>6s} {'CPU x':>6s} {'wall/FLOP':>9s} {'CPU/FLOP':>8s} {'best CPU/FLOP':>13s}")
        for arm in arms:
            fr = flops[arm] / flops['unified']
            wr, cr = (med[arm][i] / med['unified'][i] for i in (0, 1))
            print(f"{arm:9s} {str(counts[arm]):>18s} {flops[arm]:9.4f} {fr:6.3f} {med[arm][0] * 1e3:8.1f} {med[arm][1] * 1e3:8.1f} "
                  f"{wr:6.3f} {cr:6.3f} {wr / fr:9.3f} {cr / fr:8.3f} {best[arm][1] / best['unified'][1] / fr:13.3f}")
            key = (cr if a.clock == 'cpu' else wr) / fr
            if arm == 'twin': twin[n] = key
            elif arm != 'unified' and key > worst: worst, where = key, f"{arm} at {n} thread{'s' * (n > 1)}"
    at = lambda d: ', '.join(f"{v:.3f} at {n} thread{'s' * (n > 1)}" for n, v in d.items()) or 'not run'
    noise = at(twin)
    print(f"ratio={worst:.3f} worst (fit step time / unified) / (FLOPs per step / unified), {a.clock} time, "
          f"{where}; preset {a.preset}, batch {a.batch}; twin (noise): {noise}")
    if a.json:
        settings = dict(preset=a.preset, overrides=a.overrides, batch=a.batch, data=a.data, intervals=list(iv.boundaries),
                        steps=a.steps, warm=a.warm, rounds=a.rounds, torch=torch.__version__,
                        load_average=os.getloadavg()[:2])
        Path(a.json).write_text(json.dumps(dict(settings=settings, threads=record, ratio=worst), indent=1))


if __name__ == '__main__':
    main()
