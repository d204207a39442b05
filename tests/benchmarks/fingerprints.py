"""Fingerprints of a set of short training runs: a hash of the final weights, of the EMA and of the log of each, for checking
that a change to the code left training bit for bit as it was.

Not collected by pytest. Run from the repository root, before and after a change, on the same machine and thread count:

    python tests/benchmarks/fingerprints.py --out before.json
    python tests/benchmarks/fingerprints.py --out after.json --compare before.json

The runs: every architecture (unified, separate, multistage) with every time sampling (mixed, stage, rank) on the tiny preset
and the bundled 8x8 digits, the same with EDM preconditioning, with Min-SNR weights and with EDM's EMA ramp, and one run killed
and resumed (a checkpoint written at step 6, a new `fit` from it to step 12). Each run is seeded, at one torch thread, so the
hashes depend only on the code, the machine's kernels and the torch version. The log's timing field (`img_per_s`) is left
out of its hash. The last line is `same=<k>/<n>` with `--compare`, else `runs=<n>`.
"""
import argparse, hashlib, json, sys, tempfile, warnings
from pathlib import Path
import torch
from multistage_nbdev.data import dataset_tensor
from multistage_nbdev.intervals import Intervals
from multistage_nbdev.multistage import build_model
from multistage_nbdev.schedules import VPSchedule, EDMSchedule
from multistage_nbdev.losses import EDMPrecond
from multistage_nbdev.train import fit


def digest(obj) -> str:
    "sha256 of tensors (bytes, in order) or of JSON-able data."
    h = hashlib.sha256()
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        for k, v in obj.items(): h.update(k.encode()); h.update(v.detach().cpu().contiguous().numpy().tobytes())
    else: h.update(json.dumps(obj, sort_keys=True).encode())
    return h.hexdigest()[:16]


def runs():
    "name -> keyword arguments of one run (the model is built per run)."
    out = {}
    for arch in ('unified', 'separate', 'multistage'):
        for ts in ('mixed', 'stage', 'rank'):
            out[f'{arch}/{ts}'] = dict(arch=arch, time_sampling=ts)
    out['multistage/edm'] = dict(arch='multistage', time_sampling='stage', schedule='edm')
    out['unified/min-snr'] = dict(arch='unified', time_sampling='mixed', weight='min-snr')
    out['multistage/ema-ramp'] = dict(arch='multistage', time_sampling='mixed', ema_rampup=0.25)
    out['multistage/resumed'] = dict(arch='multistage', time_sampling='mixed', resume_at=6)
    return out


def one(arch, time_sampling, schedule='vp-linear', weight=None, ema_rampup=None, resume_at=None, iters=12):
    data = dataset_tensor('digits', split='train')[:256]
    iv = Intervals([0.3, 0.6])
    sch = EDMSchedule() if schedule == 'edm' else VPSchedule('linear')
    model = build_model('tiny', arch, iv if schedule != 'edm' else iv.convert(VPSchedule('linear'), sch), seed=0,
                        in_ch=1, img_size=8, attn_resolutions=(4,))
    if schedule == 'edm': model = EDMPrecond(model, sch)
    kw = dict(batch_size=16, lr=1e-3, warmup=2, time_sampling=time_sampling, seed=1, log_every=3, progress=False)
    if ema_rampup: kw['ema_rampup'] = ema_rampup
    if weight:
        from multistage_nbdev.losses import min_snr_weight
        kw['weight'] = min_snr_weight(sch)
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        if resume_at:
            fit(model, data, sch, iters=resume_at, ckpt_dir=d, **kw)
            model = build_model('tiny', arch, iv, seed=5, in_ch=1, img_size=8, attn_resolutions=(4,))  # other weights: all must come from the checkpoint
            r = fit(model, data, sch, iters=iters, ckpt_dir=d, resume=True, **kw)
        else: r = fit(model, data, sch, iters=iters, ckpt_dir=d, **kw)
        log = [{k: v for k, v in rec.items() if k != 'img_per_s'} for rec in r.history]
        return dict(weights=digest(r.model.state_dict()), ema=digest(r.ema.state_dict()), log=digest(log))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default=None, help='write the fingerprints to this JSON file')
    p.add_argument('--compare', default=None, help='a JSON file of an earlier run to compare with')
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    res = {name: one(**kw) for name, kw in runs().items()}
    for name, f in res.items(): print(f"{name:22s} weights {f['weights']}  ema {f['ema']}  log {f['log']}")
    if a.out: Path(a.out).write_text(json.dumps(dict(torch=torch.__version__, runs=res), indent=1) + '\n')
    if a.compare:
        old = json.loads(Path(a.compare).read_text())['runs']
        same = [n for n in res if old.get(n) == res[n]]
        for n in res:
            if n not in same: print(f"DIFFERENT: {n}: {old.get(n)} before, {res[n]} now")
        print(f"same={len(same)}/{len(res)}")
    else: print(f"runs={len(res)}")


if __name__ == '__main__':
    sys.exit(main())
