"Bad input of the latent pipeline: each error names the argument and says what was expected."
import pytest, torch
from types import SimpleNamespace
from multistage_nbdev.autoencoder import KLAutoencoder, ExternalAutoencoder, fit_scale_factor
from multistage_nbdev.latent import encode_dataset, cluster_latents, build_latent_model, check_model_matches, sample_images
from multistage_nbdev.schedules import VPSchedule

torch.set_num_threads(1)

@pytest.fixture(scope='module')
def ae(): return KLAutoencoder(in_ch=1, latent_ch=3, factor=4, ch=8)

def test_latent_shape_mismatch(ae):
    model = build_latent_model('tiny', 'multistage', None, (3, 8, 8))
    check_model_matches(model, ae.latent_shape((1, 32, 32)))  # matching shapes pass
    with pytest.raises(ValueError, match=r'`model` takes \(3, 8, 8\) inputs but the autoencoder gives latents of shape \(3, 4, 4\)'):
        check_model_matches(model, ae.latent_shape((1, 16, 16)))
    with pytest.raises(ValueError, match=r'latents of shape \(2, 8, 8\)'):
        sample_images(model, KLAutoencoder(1, 2, factor=4, ch=8), VPSchedule(), 2, (1, 32, 32))
    with pytest.raises(ValueError, match=r'`latent_shape` \(3, 7, 7\) does not fit'):
        build_latent_model('tiny', 'unified', None, ae.latent_shape((1, 28, 28)))

def test_nan_latents(ae):
    z = torch.randn(16, 3, 8, 8); z[3, 0, 1, 1] = float('nan'); z[5] = float('inf')
    with pytest.raises(ValueError, match=r'`latents` holds 193 NaN/inf values \(in 2 of 16 items\)'):
        cluster_latents(z, VPSchedule(), K=8)
    x = torch.zeros(2, 1, 32, 32); x[1, 0, 0, 0] = float('nan')
    with pytest.raises(ValueError, match='`data` holds 1 NaN/inf'): encode_dataset(ae, x)
    broken = ExternalAutoencoder(SimpleNamespace(encode=lambda x: SimpleNamespace(latent_dist=SimpleNamespace(mean=x[:, :, ::4, ::4] * float('nan'))),
                                                 decode=lambda z: SimpleNamespace(sample=z)))
    with pytest.raises(ValueError, match=r'`latents \(the output of `ae.encode`\)` holds 128'): encode_dataset(broken, torch.zeros(2, 1, 32, 32))

@pytest.mark.parametrize('bad', [0, 0., -0.5, float('nan'), float('inf')])
def test_scale_factor(ae, bad):
    with pytest.raises(ValueError, match='`scale_factor` must be a finite positive number'): ae.scale_factor = bad
    with pytest.raises(ValueError, match='`scale_factor` must be a finite positive number'):
        ExternalAutoencoder(SimpleNamespace(encode=id, decode=id), scale_factor=bad)
    with pytest.raises(ValueError, match='`scale_factor` must be a finite positive number'):
        ExternalAutoencoder(SimpleNamespace(encode=id, decode=id, config={'scaling_factor': bad}))

def test_constant_encoder_has_no_scale_factor():
    const = ExternalAutoencoder(SimpleNamespace(encode=lambda x: SimpleNamespace(latent_dist=SimpleNamespace(mean=torch.ones(len(x), 2, 2, 2))),
                                                decode=lambda z: SimpleNamespace(sample=z)))
    with pytest.raises(ValueError, match='standard deviation 0.0'): fit_scale_factor(const, torch.randn(8, 1, 8, 8))
