"""Metrics equal scikit-image's; Gaussian PSFs are centred, normalised and separable."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_deconv import metrics
from gpu_deconv.backends._planning import is_symmetric, separable_profiles
from gpu_deconv.psf import gaussian_psf, normalize_psf

skm = pytest.importorskip("skimage.metrics")


@pytest.mark.parametrize("shape", [(40, 50), (12, 20, 22)])
def test_metrics_match_scikit_image(shape):
    rng = np.random.default_rng(4)
    ref = rng.random(shape) * 100
    img = ref + rng.normal(0, 5, shape)
    assert metrics.mse(ref, img) == pytest.approx(skm.mean_squared_error(ref, img), rel=1e-12)
    rng_ = float(ref.max() - ref.min())
    assert metrics.psnr(ref, img) == pytest.approx(
        skm.peak_signal_noise_ratio(ref, img, data_range=rng_), rel=1e-12
    )
    assert metrics.psnr(ref, img, data_range=255) == pytest.approx(
        skm.peak_signal_noise_ratio(ref, img, data_range=255), rel=1e-12
    )
    assert metrics.ssim(ref, img) == pytest.approx(
        skm.structural_similarity(ref, img, data_range=rng_), rel=1e-10
    )


def test_metrics_identical_and_bad_input():
    a = np.arange(100.0).reshape(10, 10)
    assert metrics.mse(a, a) == 0 and metrics.psnr(a, a) == np.inf
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.mse(a, a[:5])
    with pytest.raises(ValueError, match="data_range must be positive"):
        metrics.psnr(np.ones((8, 8)), a[:8, :8])
    with pytest.raises(ValueError, match="win_size"):
        metrics.ssim(a, a, win_size=4)
    with pytest.raises(TypeError, match="real numeric"):
        metrics.mse(a.astype(complex), a)


@pytest.mark.parametrize(
    "shape, sigma", [((25, 25), 2.0), ((9, 17, 17), (3.0, 2.0, 2.0)), ((7,), 1.0)]
)
def test_gaussian_psf(shape, sigma):
    psf = gaussian_psf(shape, sigma)
    assert psf.shape == shape and psf.sum() == pytest.approx(1.0, rel=1e-14)
    assert np.unravel_index(psf.argmax(), shape) == tuple(n // 2 for n in shape)
    assert is_symmetric(psf, 1e-14)
    assert separable_profiles(psf, 1e-14) is not None
    # Second moment along axis 0 equals sigma**2 for a wide enough window.
    wide = gaussian_psf((61,), np.atleast_1d(sigma)[0])
    x = np.arange(61) - 30
    assert np.sum(wide * x**2) == pytest.approx(np.atleast_1d(sigma)[0] ** 2, rel=1e-6)


def test_gaussian_psf_and_normalize_reject_bad_input():
    with pytest.raises(ValueError, match="sigma must be positive"):
        gaussian_psf((5, 5), 0)
    with pytest.raises(ValueError, match="one per axis"):
        gaussian_psf((5, 5), (1, 2, 3))
    with pytest.raises(ValueError, match="positive lengths"):
        gaussian_psf((5, 0), 1)
    with pytest.raises(ValueError, match="all zeros"):
        normalize_psf(np.zeros((3, 3)))
    np.testing.assert_allclose(normalize_psf(np.full((2, 2), 3.0)), np.full((2, 2), 0.25))
