"""Samplers on the real multistage network: the per-interval call counts and sampling GFLOPs that `sample` reports match
what the model's own routing does (forward hooks on its decoders) and `multistage.gflops`."""
import pytest, torch
from multistage_nbdev.multistage import build_model, gflops
from multistage_nbdev.samplers import sample, paper_sampler
from multistage_nbdev.schedules import VPSchedule


pytestmark = pytest.mark.usefixtures('one_thread')  # fixture in conftest.py


@pytest.mark.parametrize('solver,nfe', [('dpm-solver-3', 20), ('heun', 9), ('dpm-solver++2m', 10)])
def test_calls_per_stage_match_the_decoders_that_ran(solver, nfe):
    torch.manual_seed(0)
    model = build_model('tiny', 'multistage').eval()
    per_call = gflops(model)['gmacs']  # (runs each decoder once: before the hooks)
    served = [0] * model.n_stages
    for k, dec in enumerate(model.decoders):
        dec.register_forward_hook(lambda mod, inp, out, k=k: served.__setitem__(k, served[k] + 1))
    sch = VPSchedule('linear')
    r = sample(model, sch, (2, model.in_ch, model.img_size, model.img_size), solver=solver, nfe=nfe,
               generator=torch.Generator().manual_seed(0), stage_gflops=per_call)
    assert r.nfe == nfe and sum(r.steps_per_stage) == nfe
    assert r.steps_per_stage == served  # every call of a batch with one shared t runs exactly one decoder
    assert r.gflops_per_image == pytest.approx(sum(n * g for n, g in zip(served, per_call)), rel=1e-12)
    assert torch.isfinite(r.x).all()


def test_unified_model_costs_the_same_per_call():
    model = build_model('tiny', 'unified').eval()
    g = gflops(model)['gmacs']
    assert len(set(g)) == 1
    sch = VPSchedule('linear')
    r = sample(model, sch, (1, model.in_ch, model.img_size, model.img_size), generator=torch.Generator().manual_seed(0),
               stage_gflops=g, **paper_sampler('dpm-solver', sch))
    assert r.gflops_per_image == pytest.approx(20 * g[0], rel=1e-12)
