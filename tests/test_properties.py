"""Property tests of the Richardson-Lucy loop and of the blur operators (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BOUNDARIES, make_psf
from hypothesis import given, settings
from hypothesis import strategies as st

import gpu_deconv as gd

METHODS = ["spatial", "fft"]
settings.register_profile("gpu_deconv", max_examples=25, deadline=None, derandomize=True)
settings.load_profile("gpu_deconv")


@st.composite
def cases(draw, ndim=None):
    """A positive image, a PSF no larger than it, a seed and an iteration count."""
    ndim = ndim or draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(4, 12)) for _ in range(ndim))
    psf_shape = tuple(draw(st.integers(1, min(5, n))) for n in shape)
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    image = rng.random(shape) + draw(st.sampled_from([0.0, 0.01, 1.0]))
    psf = rng.random(psf_shape) + 0.05
    return image, psf / psf.sum(), draw(st.integers(1, 6))


@given(cases(), st.sampled_from(BOUNDARIES), st.sampled_from(METHODS))
def test_estimate_is_non_negative_and_finite(case, boundary, method):
    image, psf, n = case
    result = gd.richardson_lucy(image, psf, n, backend="numpy", method=method, boundary=boundary)
    assert np.isfinite(result).all() and (result >= 0).all()


@given(cases(), st.sampled_from(METHODS))
def test_wrap_preserves_flux_every_iteration(case, method):
    image, psf, n = case
    steps = gd.richardson_lucy(
        image, psf, n, backend="numpy", method=method, boundary="wrap", snapshots=range(n + 1)
    )
    for estimate in steps.values():
        assert estimate.sum() == pytest.approx(image.sum(), rel=1e-12)


@given(cases(), st.sampled_from(BOUNDARIES))
def test_delta_psf_is_a_fixed_point(case, boundary):
    image, psf, n = case
    delta = np.zeros(psf.shape)
    delta[tuple(s // 2 for s in psf.shape)] = 1.0
    for method in ("spatial", "fft", "separable"):
        result = gd.richardson_lucy(
            image, delta, n, backend="numpy", method=method, boundary=boundary
        )
        np.testing.assert_allclose(result, image, rtol=1e-12, atol=1e-15)


@given(cases(), st.sampled_from(METHODS))
def test_wrap_correlate_is_adjoint_of_convolve(case, method):
    x, psf, _ = case
    y = np.random.default_rng(int(x.size)).random(x.shape)
    hx = gd.convolve(x, psf, backend="numpy", method=method, boundary="wrap")
    hty = gd.correlate(y, psf, backend="numpy", method=method, boundary="wrap")
    assert np.vdot(hx, y) == pytest.approx(np.vdot(x, hty), rel=1e-12)


def _i_divergence(g, blurred):
    return float(np.sum(g * np.log(g / blurred) - g + blurred))


@given(cases(), st.sampled_from(METHODS))
def test_i_divergence_does_not_increase(case, method):
    image, psf, n = case
    image = image + 0.1  # strictly positive data keeps the divergence finite
    steps = gd.richardson_lucy(
        image, psf, 8, backend="numpy", method=method, boundary="wrap", snapshots=range(9)
    )
    values = [
        _i_divergence(image, gd.convolve(steps[k], psf, backend="numpy", boundary="wrap"))
        for k in range(9)
    ]
    assert all(b <= a + 1e-9 * abs(a) + 1e-12 for a, b in zip(values, values[1:])), values


@given(cases(ndim=2), st.integers(-5, 5), st.integers(-5, 5))
def test_wrap_is_shift_equivariant(case, dy, dx):
    image, psf, n = case
    shifted = gd.richardson_lucy(
        np.roll(image, (dy, dx), (0, 1)), psf, n, backend="numpy", boundary="wrap"
    )
    plain = gd.richardson_lucy(image, psf, n, backend="numpy", boundary="wrap")
    np.testing.assert_allclose(shifted, np.roll(plain, (dy, dx), (0, 1)), rtol=1e-10)


@pytest.mark.parametrize("method", ["spatial", "separable", "fft"])
def test_snapshots_equal_separate_runs_exactly(method, backend_dtype, image3d):
    backend, dtype = backend_dtype
    psf = make_psf((3, 5, 5), "gaussian")
    kwargs = dict(backend=backend, method=method, dtype=dtype)
    steps = gd.richardson_lucy(image3d, psf, 9, snapshots=[9, 0, 3, 3], **kwargs)
    assert list(steps) == [0, 3, 9]
    for k, estimate in steps.items():
        np.testing.assert_array_equal(estimate, gd.richardson_lucy(image3d, psf, k, **kwargs))
