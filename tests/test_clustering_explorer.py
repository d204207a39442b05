"Clustering: the widget explorer's callbacks (without a browser), and bad input to the public entry points."
import time
import matplotlib
matplotlib.use('Agg')
import pytest, torch
import multistage_nbdev.clustering as cl
from multistage_nbdev.schedules import VPSchedule, EDMSchedule
from multistage_nbdev.testing import synthetic_images


@pytest.fixture(scope='module')
def results():
    imgs = synthetic_images(64, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    return {name: cl.cluster_timesteps(imgs, sch, K=120, alpha=0.9, generator=torch.Generator().manual_seed(0))
            for name, sch in (('vp-linear', VPSchedule()), ('edm', EDMSchedule()))}


def test_explorer_redraws_from_cache_fast(results, monkeypatch):
    pytest.importorskip('ipywidgets')
    monkeypatch.setattr(cl, '_widget_frontend', lambda: True)
    calls = []
    real = cl.plot_similarity
    monkeypatch.setattr(cl, 'plot_similarity', lambda *a, **k: calls.append(k) or real(*a, **k))
    box = cl.similarity_explorer(results)
    sched, alpha, eta = box.children[0].children
    assert len(calls) == 1
    t0 = time.perf_counter()
    alpha.value = 0.95
    eta.value = eta.options[-1][1]
    sched.value = 'edm'
    assert (time.perf_counter() - t0) / 3 < 1.0              # each redraw well under a second
    assert len(calls) == 4 and calls[-1] == {'alpha': 0.95, 'eta': eta.options[-1][1], 'title': 'edm'}


def test_explorer_static_without_frontend(results):
    fig = cl.similarity_explorer(results)
    assert isinstance(fig, matplotlib.figure.Figure)
    with pytest.raises(ValueError, match='at least one'): cl.similarity_explorer({})


@pytest.mark.parametrize('kwargs, msg', [
    (dict(eta=-1.), '`eta` must be positive'),
    (dict(n_stages=1), '`n_stages` must be >= 2'),
    (dict(reference='zero'), '`reference` must be one of'),
    (dict(batch_size=0), '`batch_size` must be'),
    (dict(data_range=(1., 0.)), '`data_range` must be'),
    (dict(alpha=[0.9]), '2 numbers'),
])
def test_cluster_timesteps_bad_input(kwargs, msg):
    imgs = synthetic_images(16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=msg.replace('(', r'\(').replace(')', r'\)')):
        cl.cluster_timesteps(imgs, VPSchedule(), K=10, generator=torch.Generator().manual_seed(0), **kwargs)


def test_run_clustering_bad_schedule(tmp_path):
    with pytest.raises(ValueError, match="one of"):
        cl.run_clustering(torch.zeros(4, 1, 2, 2), tmp_path, schedule='ddpm')
    assert not any(tmp_path.iterdir())                        # nothing written on failure
