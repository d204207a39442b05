"""The hand-off between stages of the main job's multistage model: training recipes against the unified model.

Not collected by pytest (the file name does not start with `test_`). Run from the repository root:

    python tests/benchmarks/handoff.py                                   # every arm, 600 / 800 / 1000 iterations, seed 0
    python tests/benchmarks/handoff.py --arms paper mixed --iters 600    # some arms, one budget
    python tests/benchmarks/handoff.py --phase train                     # train only (evaluate later)
    python tests/benchmarks/handoff.py --arms paper --iters 600 --replace   # also: each stage by the optimal denoiser

The setting is `msd_main`'s: the bundled digits at 16x16 (4,000 train / 1,000 test), Algorithm 1 intervals, the 'small'
preset, batch 64, lr 1e-3 after 100 warm-up steps, EMA half-life 2,000 images. Each arm is one resumable `train_curve`
run (milestones `--iters`, held-out loss at each); at each milestone its EMA snapshot draws `--n` images with DPM-Solver-3
at 20 NFE from the same starting noise (seed `--seed`), which give the offline FID against the test split
(`metrics.fid_kid(test, imgs, extractor='offline')`), the noise-like share (`diagnostics.noise_like_share`) and the
denoising error of each stage on the states the sampler hands it (`diagnostics.sampler_denoising_error`, first `--n-diag`
images). With `--replace`, the same `--n-diag` starting noises are also sampled with the decoder of one stage replaced
by the optimal denoiser of the training set (`optimal.OptimalDenoiser`), stage by stage. Results are cached in
`nbs/experiments/handoff.json` (key `arm@iters@seed`), so a killed run continues; each entry also keeps the first 24
samples and the number of training images per stage. Training uses one thread (`torch.set_num_threads(1)`; `--threads`
changes it); the JSON records seconds per step.

The last line is `ratio=<x> multistage/unified offline FID` of the last arm evaluated against the unified model at the
same budget and seed (when both are there).
"""
import argparse, json, time
from pathlib import Path
import torch
from multistage_nbdev.experiment import Setting, train_curve, load_ema, seeded_model, preset_for_images, run_sample
from multistage_nbdev.metrics import fid_kid
from multistage_nbdev.diagnostics import noise_like_share, sampler_denoising_error
from multistage_nbdev.optimal import OptimalDenoiser
from multistage_nbdev.samplers import sample
from multistage_nbdev.persist import atomic_json_dump, atomic_torch_save

ARMS = {  # arm -> (architecture, extra `fit` arguments)
    'unified': ('unified', {}),                                               # one U-Net, t ~ U[0,1] every step
    'paper': ('multistage', {}),                                              # msd_main today: one stage per step, uniform
    'mixed': ('multistage', dict(time_sampling='mixed')),                     # every decoder every step
}
RESULTS = Path('nbs/experiments/handoff.json')


def load_results(path:Path=RESULTS) -> dict: return json.loads(path.read_text()) if path.exists() else {}


def train(setting:Setting, arm:str, iters:list, seed:int) -> dict:
    arch, fit_kw = ARMS[arm]
    return train_curve(f'{arm}_s{seed}', arch, setting.intervals, setting.train, setting.test, setting.schedule,
                       setting.out_dir, milestones=iters, fid_at=[], fit_kw=fit_kw, lr=1e-3, ema_halflife=2000.,
                       seed=seed)


def replaced_stages(setting:Setting, model, noise) -> list:
    "Noise-like share when the decoder of stage k is replaced by the optimal denoiser, for each k (same starting noise)."
    opt, iv, out = OptimalDenoiser(setting.train, setting.schedule), setting.intervals, []
    for k in range(iv.n_stages):
        def mixed(x, t, k=k): return opt(x, t).to(x) if iv.stage_of(t[:1].double()).item() == k else model(x, t)
        x = sample(mixed, setting.schedule, solver='dpm-solver-3', nfe=20, noise=noise).x.clamp(-1, 1)
        out.append(noise_like_share(x, setting.test)[0])
    return out


def first_images(imgs, k:int=24) -> dict:
    "The first `k` samples as 8-bit pixels, one hex string per image (C,H,W row-major): figures without the run folder."
    u8 = ((imgs[:k].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return dict(shape=list(u8.shape[1:]), hex=[bytes(x.flatten().tolist()).hex() for x in u8])


def stage_samples(run:Path, m:int) -> list:
    "Training samples that fell in each stage over the first `m` steps, from the training log."
    recs = [json.loads(l) for l in (run / 'ckpt' / 'log.jsonl').read_text().splitlines() if l.strip()]
    return [sum(r['stage_count'][k] for r in recs if r['step'] <= m) for k in range(len(recs[0]['stage_count']))]


def evaluate(setting:Setting, arm:str, m:int, seed:int, n:int, n_diag:int, replace:bool=False) -> dict:
    arch, _ = ARMS[arm]
    C, H = setting.train.shape[1:3]
    run = setting.out_dir / f'{arm}_s{seed}'
    model = load_ema(run, m, seeded_model('small', arch, setting.intervals, seed, **preset_for_images('small', C, H)))
    t0 = time.perf_counter()
    imgs, info = run_sample(model, setting.schedule, (n, C, H, H), 'dpm-solver-3', 20, seed)
    sample_s = time.perf_counter() - t0
    atomic_torch_save(imgs, run / f'samples_{m:07d}.pt')
    f = fid_kid(setting.test, imgs, extractor='offline', seed=0)
    share, thr = noise_like_share(imgs, setting.test)
    noise = torch.randn((n_diag, C, H, H), generator=torch.Generator().manual_seed(seed))
    noise = noise * float(setting.schedule.noise_std(1.))
    diag = sampler_denoising_error(model, setting.schedule, setting.train, noise,
                                   generator=torch.Generator().manual_seed(1))
    diag_share = noise_like_share(diag.x.clamp(-1, 1), setting.test)[0]
    repl = replaced_stages(setting, model, noise) if replace and arch != 'unified' else None
    curve = json.loads((run / 'curve.json').read_text())
    row = next(r for r in curve['rows'] if r['iters'] == m)
    return dict(arm=arm, arch=arch, fit_kw=ARMS[arm][1], iters=m, seed=seed, fid=f['fid'], kid=f['kid'], noise_like=share,
                noise_like_threshold=thr, n_samples=n, sample_seconds=sample_s, heldout=row['heldout'],
                heldout_per_interval=row['heldout_per_interval'], train_seconds=row['train_seconds'],
                seconds_per_step=row['train_seconds'] / m, threads=torch.get_num_threads(),
                steps_per_stage=info['steps_per_stage'],
                diag=diag.summary(setting.intervals), diag_noise_like=diag_share, noise_like_with_optimal_stage=repl,
                first_images=first_images(imgs))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arms', nargs='+', default=list(ARMS), choices=list(ARMS))
    p.add_argument('--iters', nargs='+', type=int, default=[600, 800, 1000])
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--n', type=int, default=500, help='images per evaluation')
    p.add_argument('--n-diag', type=int, default=200, help='images of the hand-off diagnosis')
    p.add_argument('--phase', choices=['train', 'eval', 'all'], default='all')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--replace', action='store_true', help='also sample with one stage replaced by the optimal denoiser')
    p.add_argument('--out-dir', default='runs/handoff')
    p.add_argument('--results', default=str(RESULTS), help='JSON cache of the evaluations')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    results = Path(a.results)
    setting = Setting(a.out_dir)
    print(setting, f'threads={torch.get_num_threads()}', flush=True)
    last = None
    for arm in a.arms:
        if a.phase in ('train', 'all'):
            c = train(setting, arm, a.iters, a.seed)
            print(arm, [(r['iters'], round(r['train_seconds'], 1), round(r['heldout'], 5)) for r in c['rows']], flush=True)
        if a.phase in ('eval', 'all'):
            for m in a.iters:
                res, key = load_results(results), f'{arm}@{m}@{a.seed}'
                if key not in res:
                    res[key] = evaluate(setting, arm, m, a.seed, a.n, a.n_diag, a.replace)
                    atomic_json_dump(load_results(results) | {key: res[key]}, results)
                r, run = res[key], setting.out_dir / f'{arm}_s{a.seed}'
                if 'first_images' not in r or 'stage_samples' not in r:   # results cached before these were kept
                    r['first_images'] = first_images(torch.load(run / f'samples_{m:07d}.pt', weights_only=True))
                    r['stage_samples'] = stage_samples(run, m)
                    atomic_json_dump(load_results(results) | {key: r}, results)
                print(f"{key}: FID {r['fid']:.2f}, noise-like {100 * r['noise_like']:.1f}%, held-out {r['heldout']:.5f}, "
                      f"{r['seconds_per_step']:.3f} s/step", flush=True)
                last = key
    res = load_results(results)
    if last is not None and not last.startswith('unified'):
        u = res.get('unified@' + last.split('@', 1)[1])
        if u: print(f"ratio={res[last]['fid'] / u['fid']:.3f} multistage/unified offline FID ({last})")


if __name__ == '__main__':
    main()
