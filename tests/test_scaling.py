"""Scale equivariance (issue 15, items 1 and 2): RL(c * g) == c * RL(g) for every c the dtype holds.

The computation runs on data scaled by a power of two (gpu_deconv._scaling), so tiny images no
longer fall under eps and large float32 ones no longer overflow inside the FFT.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from conftest import make_psf, rel_rms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpu_deconv as gd
import gpu_deconv.dask as gdd
from gpu_deconv import _scaling

PSF_2D = make_psf((5, 7), "gaussian")
PSF_3D = make_psf((3, 5, 5), "gaussian")
SCALE_RTOL = 1e-4  # the bound; measured: 2e-7 in float32, 5e-16 in float64


def _scaled(image, c, dtype):
    return (np.asarray(image, np.float64) * c).astype(dtype)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(decade=st.floats(-30, 30), method=st.sampled_from(["fft", "spatial"]))
def test_rl_is_scale_equivariant(backend_dtype, image2d, decade, method):
    backend, dtype = backend_dtype
    c = 10.0**decade
    kwargs = dict(backend=backend, method=method, dtype=dtype)
    reference = gd.richardson_lucy(image2d.astype(dtype), PSF_2D, 10, **kwargs)
    result = gd.richardson_lucy(_scaled(image2d, c, dtype), PSF_2D, 10, **kwargs)
    assert np.isfinite(result).all() and result.dtype == dtype
    assert rel_rms(result / c, reference) <= SCALE_RTOL


@pytest.mark.parametrize("k", [-100, -45, 45, 100])
def test_power_of_two_scales_are_exact(backend_dtype, image3d, k):
    """A power of two changes only exponents: the result is bit-identical, scaled."""
    backend, dtype = backend_dtype
    kwargs = dict(backend=backend, method="fft", dtype=dtype)
    image = image3d.astype(dtype)
    reference = gd.richardson_lucy(image, PSF_3D, 8, **kwargs)
    result = gd.richardson_lucy(np.ldexp(image, k), PSF_3D, 8, **kwargs)
    np.testing.assert_array_equal(result, np.ldexp(reference, k))


@pytest.mark.parametrize("c", [1e-30, 1e30])
def test_estimated_edges_and_masks_are_scale_equivariant(backend, image2d, c):
    mask = np.random.default_rng(0).random(image2d.shape) > 0.1
    kwargs = dict(backend=backend, dtype="float32", boundary="estimate", mask=mask)
    reference = gd.richardson_lucy(image2d, PSF_2D, 10, **kwargs)
    result = gd.richardson_lucy(_scaled(image2d, c, np.float32), PSF_2D, 10, **kwargs)
    assert np.isfinite(result).all()
    assert rel_rms(result / c, reference) <= SCALE_RTOL


@pytest.mark.parametrize("c", [1e-15, 1e-13])
def test_small_images_are_not_zeroed(backend, image2d, c):
    """The issue's case: 1e-15 returned all zeros, 1e-13 half zeros (eps was absolute)."""
    reference = gd.richardson_lucy(image2d, PSF_2D, 10, backend=backend, dtype="float32")
    result = gd.richardson_lucy(image2d * c, PSF_2D, 10, backend=backend, dtype="float32")
    assert (result > 0).all()
    assert rel_rms(result / c, reference) <= 1e-6


@pytest.mark.parametrize(
    "c, image_fixture", [(1e36, "image2d"), (1e36, "image3d"), (3e37, "image3d")]
)
def test_large_float32_images_do_not_overflow(backend, request, c, image_fixture):
    """float32 data near the top of the range overflowed in the FFT (OpenCL: zeros)."""
    image = request.getfixturevalue(image_fixture)
    psf = PSF_2D if image.ndim == 2 else PSF_3D
    kwargs = dict(backend=backend, method="fft", dtype="float32")
    reference = gd.richardson_lucy(image, psf, 10, **kwargs)
    result = gd.richardson_lucy(_scaled(image, c, np.float32), psf, 10, **kwargs)
    assert np.isfinite(result).all()
    assert rel_rms(result / c, reference) <= 1e-6


@pytest.mark.parametrize("init", ["mean", 0.5, "array"])
@pytest.mark.parametrize("c", [1e-30, 1e30])
def test_starting_estimates_scale_with_the_image(backend, image2d, init, c):
    start = {"mean": "mean", 0.5: 0.5, "array": image2d[::-1].copy()}[init]
    scaled = start if isinstance(start, str) else start * c
    kwargs = dict(backend=backend, dtype="float32")
    reference = gd.richardson_lucy(image2d, PSF_2D, 5, init=start, **kwargs)
    result = gd.richardson_lucy(image2d * c, PSF_2D, 5, init=scaled, **kwargs)
    assert rel_rms(result / c, reference) <= 1e-6
    snapshot = gd.richardson_lucy(image2d * c, PSF_2D, 5, init=scaled, snapshots=[0], **kwargs)
    if init == "mean":
        expected_start = np.full(image2d.shape, (image2d * c).mean())
    else:
        expected_start = np.broadcast_to(np.asarray(scaled, np.float64), image2d.shape)
    assert rel_rms(snapshot[0], expected_start) <= 1e-6


@pytest.mark.parametrize("c", [1e-30, 1e-15, 1e30])
def test_dask_path_is_scale_equivariant(image3d, c):
    chunks = (7, 19, 23)
    reference = gdd.richardson_lucy(
        da.from_array(image3d, chunks=chunks), PSF_3D, 8, backend="numpy"
    )
    result = gdd.richardson_lucy(
        da.from_array(image3d * c, chunks=chunks), PSF_3D, 8, backend="numpy"
    )
    assert rel_rms(result.compute() / c, reference.compute()) <= 1e-12


@pytest.mark.parametrize("func", [gd.convolve, gd.correlate])
@pytest.mark.parametrize("c", [1e-30, 1e36])
def test_blurs_are_scale_equivariant(backend, image3d, func, c):
    kwargs = dict(backend=backend, method="fft", dtype="float32")
    reference = func(image3d, PSF_3D, **kwargs)
    result = func(_scaled(image3d, c, np.float32), PSF_3D, **kwargs)
    assert rel_rms(result / c, reference) <= 1e-6


@pytest.mark.parametrize("normalize_psf", [True, False])
def test_psf_whose_sum_overflows(backend, image2d, normalize_psf):
    """A PSF of 1e307s sums beyond float64: it was reported as all zeros."""
    huge = np.full((5, 5), 1e307)
    kwargs = dict(backend=backend, dtype="float32", normalize_psf=normalize_psf)
    result = gd.richardson_lucy(image2d, huge, 5, **kwargs)
    expected = gd.richardson_lucy(image2d, np.ones((5, 5)), 5, **kwargs)
    # RL does not depend on the PSF's scale: both equal the normalised run.
    assert rel_rms(result, expected) <= 1e-6


def test_eps_is_relative_to_the_maximum():
    image = np.zeros((20, 20))
    image[8:12, 8:12] = 1.0
    psf = make_psf((3, 3), "gaussian")
    kwargs = dict(backend="numpy", boundary="constant", eps=1e-3)
    for c in (1e-20, 1.0, 1e20):
        result = gd.richardson_lucy(image * c, psf, 5, **kwargs)
        np.testing.assert_allclose(result / c, gd.richardson_lucy(image, psf, 5, **kwargs))
        assert result[0, 0] == 0


def test_exponent_brackets_the_peak():
    for peak in (1e-300, 3e-38, 0.7, 1.0, 1.5, 2.0, 65535.0, 3e38, 1e300):
        k = _scaling.exponent(peak)
        assert 2.0**k <= peak < 2.0 ** (k + 1)
    assert _scaling.exponent(0.0) == 0 and _scaling.exponent(float("inf")) == 0
