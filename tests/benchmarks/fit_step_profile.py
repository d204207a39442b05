"""Where a `train.fit` step of the multistage model spends its time against the unified model, and what the step's
per-parameter work (Adam, EMA, gradient clipping) would gain from the foreach / fused kernels.

Not collected by pytest (the file name does not start with `test_`). Run from the repository root:

    python tests/benchmarks/fit_step_profile.py                   # 'small' preset, batch 64, 1 and 2 threads
    python tests/benchmarks/fit_step_profile.py --steps 4 --warm 1 --rounds 3 --threads 1,2 --batch 64 --preset small --clock cpu

1. Phases of the real `fit` step, timed by wrappers that add a clock and change nothing else: the loss forward (`eps_loss`,
   with the encoder and each decoder timed by module hooks; the rest is noising, the loss and, for mixed batches, the
   routing), the backward (each decoder timed by module backward hooks; the rest is the encoder, the loss and the
   routing), `clip_grad_norm_`, the Adam step (optimizer hooks), the EMA update, and what is left of the step (data, times,
   noise, `zero_grad`, `.item()`, the per-stage `bincount`, the log record). Arms: unified, multistage with one stage per
   step ('stage') and with mixed batches ('mixed'). Module backward hooks add a few autograd nodes per decoder call, so
   the phase totals run slightly above those of `fit_step.py`.
2. Candidate optimisations, each monkeypatched into the library for the run and trained from the same weights and seed:
     adam-foreach  `torch.optim.Adam(..., foreach=True)` (`fit`'s kernel before it took the fused one)
     adam-fused    `torch.optim.Adam(..., fused=True)` (the fused kernel, `fit`'s own now: equal to the baseline)
     ema-foreach   `EMA.update` by one `torch._foreach_lerp_` over the parameter lists
     clip-foreach  `clip_grad_norm_` by `torch._foreach_norm` and `torch._foreach_mul_` (torch refuses foreach=True on CPU)
     all-foreach   the three foreach changes together
   For each: the step time, the time of the phase it replaces, and whether the run ends with bit-identical weights, EMA
   weights and logged losses (else the largest weight difference).
3. Checks: Adam's per-parameter step counts after one-stage-per-step training (a decoder without a gradient, which
   `zero_grad(set_to_none=True)` leaves at None, must be skipped), the cost of the EMA over the idle decoders of such a
   step, and the cost of the step's host-side bookkeeping (`.item()`, `isfinite`, `stage_of` + two `bincount`s on CPU).
Times are the median over rounds of each step (every round repeats the same steps), averaged over the steps, on the
`--clock` clock (CPU time by default; the step is also shown on the other clock). Under `OMP_WAIT_POLICY` unset, threads
spin while they wait, which on shared cores inflates multi-thread times (see `fit_step.py`). The last line is
`ratio=<x>`: the all-foreach step time over the unpatched step time of the mixed-batch multistage arm at the first thread
count; `fit` now uses the fused Adam kernel, so all-foreach is its former kernel set and above 1 is what the fused
kernel saves.
"""
import argparse, copy, tempfile, time, warnings
from collections import defaultdict
from contextlib import ExitStack, contextmanager
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
import multistage_nbdev.train as train
from multistage_nbdev.intervals import Intervals
from multistage_nbdev.data import dataset_tensor
from multistage_nbdev.multistage import PRESETS, MultistageUNet, build_model
from multistage_nbdev.schedules import VPSchedule

ARMS = {'unified': ('unified', 'mixed'), 'stage': ('multistage', 'stage'), 'mixed': ('multistage', 'mixed')}
TOP = ('forward', 'backward', 'clip', 'adam', 'ema', 'rest', 'step')


def phases(n_stages:int) -> list:
    "Every phase a step is split into: the top-level ones, then the encoder's forward and each decoder's forward and backward."
    return [*TOP, 'fwd enc', *(f'fwd d{k}' for k in range(n_stages)), *(f'bwd d{k}' for k in range(n_stages))]


def now(): return time.perf_counter(), time.process_time()


class Probe:
    "Wall and CPU seconds per phase, collected step by step."
    def __init__(self, names): self.names, self.cur, self.steps = names, defaultdict(lambda: [0., 0.]), []
    def add(self, key, t0):
        t1 = now(); v = self.cur[key]; v[0] += t1[0] - t0[0]; v[1] += t1[1] - t0[1]
    @contextmanager
    def timed(self, key):
        t0 = now()
        try: yield
        finally: self.add(key, t0)
    def end_step(self, total):
        "Close a step of `total` (wall, CPU) seconds; 'rest' is what no phase accounts for."
        d = {k: list(v) for k, v in self.cur.items()}
        top = [d.get(k, [0., 0.]) for k in ('forward', 'backward', 'clip', 'adam', 'ema')]
        d['rest'] = [total[i] - sum(v[i] for v in top) for i in (0, 1)]
        d['step'] = list(total)
        self.steps.append([d.get(k, [0., 0.]) for k in self.names]); self.cur.clear()


@contextmanager
def patched(obj, name, value):
    old = getattr(obj, name); setattr(obj, name, value)
    try: yield
    finally: setattr(obj, name, old)


def hook_modules(model, probe):
    "Forward and backward hooks that time the encoder and each decoder (the unified model's decoder counts as one)."
    decs = list(model.decoders) if isinstance(model, MultistageUNet) else [model.decoder]
    start = {}
    def pre(key):
        def hook(m, *args): start[key, id(m)] = now()
        return hook
    def post(key):
        def hook(m, *args): probe.add(key, start.pop((key, id(m))))
        return hook
    model.encoder.register_forward_pre_hook(pre('fwd enc')); model.encoder.register_forward_hook(post('fwd enc'))
    for k, d in enumerate(decs):
        d.register_forward_pre_hook(pre(f'fwd d{k}')); d.register_forward_hook(post(f'fwd d{k}'))
        d.register_full_backward_pre_hook(pre(f'bwd d{k}')); d.register_full_backward_hook(post(f'bwd d{k}'))


@contextmanager
def instrumented(probe):
    "Time fit's phases by wrapping the functions it calls (looked up at call time)."
    eps_loss, backward, clip, update = train.eps_loss, torch.Tensor.backward, nn.utils.clip_grad_norm_, train.EMA.update
    def timed(key, fn):
        def wrapper(*a, **k):
            with probe.timed(key): return fn(*a, **k)
        return wrapper
    t_opt = {}
    def opt_pre(*args): t_opt['t'] = now()
    def opt_post(*args): probe.add('adam', t_opt.pop('t'))
    h1 = register_optimizer_step_pre_hook(opt_pre)
    h2 = register_optimizer_step_post_hook(opt_post)
    try:
        with patched(train, 'eps_loss', timed('forward', eps_loss)), patched(torch.Tensor, 'backward', timed('backward', backward)), \
             patched(nn.utils, 'clip_grad_norm_', timed('clip', clip)), patched(train.EMA, 'update', timed('ema', update)):
            yield
    finally: h1.remove(); h2.remove()


def adam_with(**flags):
    class Adam(torch.optim.Adam):
        def __init__(self, params, **kw): super().__init__(params, **{**kw, **flags})
    return Adam


@torch.no_grad()
def ema_update_foreach(self, model):
    "EMA.update with one foreach lerp over all parameters (and one foreach copy of the buffers)."
    torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], 1 - self.beta)
    e_buf, m_buf = list(self.model.buffers()), list(model.buffers())
    if e_buf: torch._foreach_copy_(e_buf, m_buf)


@torch.no_grad()
def clip_grad_norm_foreach(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    "clip_grad_norm_ (2-norm) with the foreach norm and multiply; the same sums and the same clip coefficient."
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads: return torch.tensor(0.)
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, float(norm_type))), float(norm_type))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


@contextmanager
def variant(name):
    "Monkeypatch the library for one candidate ('baseline': nothing)."
    with ExitStack() as stack:
        if name in ('adam-foreach', 'all-foreach'): stack.enter_context(patched(torch.optim, 'Adam', adam_with(foreach=True, fused=False)))
        if name == 'adam-fused': stack.enter_context(patched(torch.optim, 'Adam', adam_with(fused=True, foreach=False)))
        if name in ('ema-foreach', 'all-foreach'): stack.enter_context(patched(train.EMA, 'update', ema_update_foreach))
        if name in ('clip-foreach', 'all-foreach'): stack.enter_context(patched(nn.utils, 'clip_grad_norm_', clip_grad_norm_foreach))
        yield


VARIANTS = ('baseline', 'adam-foreach', 'adam-fused', 'ema-foreach', 'clip-foreach', 'all-foreach')


def profiled_fit(model, mode, data, warm, steps, batch, seed, name, names, ckpt_dir=None):
    "Phase times of fit's steps warm+1..warm+steps, (steps, phases, 2) seconds, and the run's result."
    probe, marks = Probe(names), []
    def stamp(info):
        marks.append(now())
        if info['step'] > warm: probe.end_step([marks[-1][i] - marks[-2][i] for i in (0, 1)])
        else: probe.cur.clear()
    m = copy.deepcopy(model)
    hook_modules(m, probe)
    with variant(name), instrumented(probe), warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        res = train.fit(m, data, VPSchedule('linear'), iters=warm + steps, batch_size=batch, time_sampling=mode, seed=seed,
                        log_every=1, progress=False, callback=stamp, ckpt_dir=ckpt_dir)
    return torch.tensor(probe.steps, dtype=torch.float64), res


def same_run(a, b) -> str:
    "'identical' when two fit results end with equal weights, EMA weights and losses; else the largest difference."
    sa, sb = a.model.state_dict(), b.model.state_dict()
    ea, eb = a.ema.state_dict(), b.ema.state_dict()
    if all(torch.equal(sa[k], sb[k]) for k in sa) and all(torch.equal(ea[k], eb[k]) for k in ea) \
            and [r['loss'] for r in a.history] == [r['loss'] for r in b.history]:
        return 'identical'
    dw = max((sa[k] - sb[k]).abs().max().item() for k in sa)
    dl = max(abs(x['loss'] - y['loss']) / abs(x['loss']) for x, y in zip(a.history, b.history))
    return f'max |dw| {dw:.1e}, loss rel {dl:.1e}'


def adam_skip_check(model, data, batch, seed):
    "Adam step count of each part after one-stage-per-step training, next to the steps each decoder was drawn."
    with tempfile.TemporaryDirectory() as d:
        _, res = profiled_fit(model, 'stage', data, 1, 5, batch, seed, 'baseline', phases(model.n_stages), ckpt_dir=d)
        ck = train.read_checkpoint(train.list_checkpoints(d)[0])
    drawn = [sum(r['stage_count'][k] > 0 for r in res.history) for k in range(model.n_stages)]
    names = [n for n, _ in model.named_parameters()]
    per_part = defaultdict(set)
    for i, n in enumerate(names):
        s = ck['optimizer']['state'].get(i)
        per_part[n.split('.')[0] + ('.' + n.split('.')[1] if n.startswith('decoders') else '')].add(None if s is None else int(s['step']))
    print(f"Adam step counts after {res.step} one-stage steps (decoders drawn {drawn} times): "
          + ', '.join(f"{k} {sorted(v, key=str)}" for k, v in per_part.items()))


def ema_idle_cost(model, reps=30):
    "Wall ms of the EMA loop over all parameters, and over the idle decoders of a step that trains decoder k."
    ema = copy.deepcopy(model).requires_grad_(False)
    def lerp(pairs):
        t0 = time.perf_counter()
        for _ in range(reps):
            with torch.no_grad():
                for e, p in pairs: e.lerp_(p, 1e-3)
        return (time.perf_counter() - t0) / reps * 1e3
    pairs = lambda a, b: list(zip(a.parameters(), b.parameters()))
    full = min(lerp(pairs(ema, model)) for _ in range(3))
    idle = [min(lerp([pq for j in range(model.n_stages) if j != k for pq in pairs(ema.decoders[j], model.decoders[j])])
                for _ in range(3)) for k in range(model.n_stages)]
    n_all = sum(p.numel() for p in model.parameters())
    n_idle = [sum(p.numel() for j in range(model.n_stages) if j != k for p in model.decoders[j].parameters()) for k in range(model.n_stages)]
    print(f"EMA update over all {n_all / 1e6:.2f}M parameters: {full:.2f} ms; over the idle decoders when decoder k trains: "
          + ', '.join(f"k={k}: {t:.2f} ms ({n / 1e6:.2f}M)" for k, (t, n) in enumerate(zip(idle, n_idle))))


def host_bookkeeping_cost(model, batch, reps=200):
    "Microseconds per step of fit's host-side bookkeeping: loss .item(), isfinite(gnorm), stage_of and two bincounts."
    iv, loss, gnorm = model.intervals, torch.rand(()), torch.rand(())
    t, per = torch.rand(batch), torch.rand(batch)
    t0 = time.perf_counter()
    for _ in range(reps):
        loss.detach().float().clone().item(); bool(torch.isfinite(gnorm))
        st = iv.stage_of(t.double()).cpu()
        torch.bincount(st, weights=per.double().cpu(), minlength=iv.n_stages); torch.bincount(st, minlength=iv.n_stages).double()
    print(f"host bookkeeping per step (.item(), isfinite, stage_of, 2 bincounts): {(time.perf_counter() - t0) / reps * 1e6:.0f} us")


def summary(runs, how='median') -> list:
    "(phases, 2) seconds per step: median over rounds of each step, averaged over the steps."
    t = torch.stack(runs)
    return (t.median(0).values if how == 'median' else t.min(0).values).mean(0)


def images_per_step(res, warm, n_stages, batch) -> list:
    "Samples each decoder served per timed step, from fit's per-step log (the unified model's one decoder serves all)."
    if not isinstance(res.model, MultistageUNet): return [float(batch)] + [0.] * (n_stages - 1)
    return [sum(r['stage_count'][k] for r in res.history[warm:]) / len(res.history[warm:]) for k in range(n_stages)]


def report(n, runs, served, checks, names, clock):
    "Print the phase tables and the candidates at `n` threads; return the all-foreach/unpatched step ratio of each arm."
    c, other = (1, 0) if clock == 'cpu' else (0, 1)
    col = {k: i for i, k in enumerate(names)}
    base = {arm: summary(runs[n, arm, 'baseline']) * 1e3 for arm in ARMS}
    get = lambda s, k, i=c: s[col[k], i].item()
    n_st = sum(1 for k in names if k.startswith('fwd d'))
    print(f"\nthreads {n}: the unpatched step, {clock} ms per step (median over rounds); last column: the step in "
          f"{('wall', 'CPU')[other]} ms")
    print(f"{'arm':8s} " + ' '.join(f"{k:>9s}" for k in TOP) + f" {'step ' + ('wall', 'CPU')[other]:>9s}")
    for arm in ARMS:
        print(f"{arm:8s} " + ' '.join(f"{get(base[arm], k):9.1f}" for k in TOP) + f" {get(base[arm], 'step', other):9.1f}")
    for arm in [arm for arm in ARMS if arm != 'unified']:
        print(f"  {arm} - unified: " + ', '.join(f"{k} {get(base[arm], k) - get(base['unified'], k):+.1f}" for k in TOP))
    print(f"threads {n}: per module, {clock} ms per step ('fwd rest': noising, loss, routing; 'bwd rest': encoder, loss, "
          "routing), and each decoder's forward+backward per image it served")
    print(f"{'arm':8s} {'fwd enc':>8s} " + ' '.join(f"{'fwd d%d' % k:>7s}" for k in range(n_st)) + f" {'fwd rest':>8s} "
          + ' '.join(f"{'bwd d%d' % k:>7s}" for k in range(n_st)) + f" {'bwd rest':>8s}  images/step, ms/image per decoder")
    for arm in ARMS:
        b = base[arm]
        fd, bd = [get(b, f'fwd d{k}') for k in range(n_st)], [get(b, f'bwd d{k}') for k in range(n_st)]
        per_img = ', '.join(f"d{k}: {served[n, arm][k]:.1f} img, {(fd[k] + bd[k]) / served[n, arm][k]:.2f}"
                            for k in range(n_st) if served[n, arm][k])
        print(f"{arm:8s} {get(b, 'fwd enc'):8.1f} " + ' '.join(f"{v:7.1f}" for v in fd)
              + f" {get(b, 'forward') - get(b, 'fwd enc') - sum(fd):8.1f} " + ' '.join(f"{v:7.1f}" for v in bd)
              + f" {get(b, 'backward') - sum(bd):8.1f}  {per_img}")
    print(f"threads {n}: candidates (step {clock} ms; the phases they replace; the run against the unpatched one)")
    ratios = {}
    for arm in ARMS:
        b = base[arm]
        for name in VARIANTS[1:]:
            s = summary(runs[n, arm, name]) * 1e3
            ph = {'adam-foreach': ['adam'], 'adam-fused': ['adam'], 'ema-foreach': ['ema'], 'clip-foreach': ['clip'],
                  'all-foreach': ['adam', 'ema', 'clip']}[name]
            pb, pv = sum(get(b, k) for k in ph), sum(get(s, k) for k in ph)
            ratios[arm, name] = get(s, 'step') / get(b, 'step')
            print(f"  {arm:8s} {name:13s} step {get(b, 'step'):6.1f} -> {get(s, 'step'):6.1f} ({1 - ratios[arm, name]:+6.1%}); "
                  f"{'+'.join(ph)} {pb:6.1f} -> {pv:6.1f} ({pb - pv:+6.1f} ms); {', '.join(sorted(set(checks[n, arm, name])))}")
    return ratios


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--preset', default='small', choices=list(PRESETS))
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--steps', type=int, default=4, help='timed fit steps per run')
    p.add_argument('--warm', type=int, default=1, help='untimed fit steps before them')
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--threads', default='1,2', help='comma-separated torch CPU thread counts')
    p.add_argument('--intervals', default='0.196,0.406', help='stage boundaries (default: Algorithm 1 on the bundled digits)')
    p.add_argument('--clock', choices=('cpu', 'wall'), default='cpu', help='clock of the tables and the ratio line')
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args(argv)
    threads = [int(v) for v in a.threads.split(',')]
    iv = Intervals([float(v) for v in a.intervals.split(',')])
    cfg = PRESETS[a.preset]
    data = dataset_tensor('digits', size=cfg['img_size'], channels=cfg['in_ch'])
    models = {arm: build_model(a.preset, arch, iv, seed=a.seed) for arm, (arch, _) in ARMS.items()}
    n_tensors = {arm: sum(1 for _ in m.parameters()) for arm, m in models.items()}
    print(f"torch {torch.__version__}, preset {a.preset}, batch {a.batch}, intervals {iv}, {a.warm} warm + {a.steps} timed "
          f"steps, {a.rounds} rounds, threads {threads}; parameter tensors: {n_tensors}")
    runs, checks, served, names = defaultdict(list), {}, {}, phases(iv.n_stages)
    for r in range(a.rounds):
        for n in threads[::1 if r % 2 == 0 else -1]:
            torch.set_num_threads(n)
            for arm in list(ARMS)[::1 if r % 2 == 0 else -1]:
                base = None
                for name in VARIANTS[::1 if r % 2 == 0 else -1]:
                    t, res = profiled_fit(models[arm], ARMS[arm][1], data, a.warm, a.steps, a.batch, a.seed, name, names)
                    runs[n, arm, name].append(t)
                    if name == 'baseline': base, served[n, arm] = res, images_per_step(res, a.warm, iv.n_stages, a.batch)
                    else: checks.setdefault((n, arm, name), []).append(res)
                for name in VARIANTS[1:]:
                    checks[n, arm, name][-1] = same_run(base, checks[n, arm, name][-1])
        print(f"round {r + 1} done")

    ratios = {n: report(n, runs, served, checks, names, a.clock) for n in threads}
    torch.set_num_threads(threads[0])
    print()
    adam_skip_check(models['stage'], data, a.batch, a.seed)
    ema_idle_cost(models['stage'])
    host_bookkeeping_cost(models['stage'], a.batch)
    print(f"ratio={ratios[threads[0]]['mixed', 'all-foreach']:.3f} all-foreach / unpatched fit step, mixed-batch multistage, "
          f"{threads[0]} thread(s), {a.clock} time")


if __name__ == '__main__':
    main()
