"""Total-variation regularisation (Dey's one-step-late form) against a float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from conftest import OPENCL, blob_image, make_psf, rel_rms, require_backend
from model_reference import model_rl, tv_divergence

import gpu_deconv as gd
from gpu_deconv.backends import get_backend
from gpu_deconv.psf import gaussian_psf

# Float64 and float32 round-off over 8 iterations. The smoothing's stability floor matters:
# with a smoothing of 1e-3 of the maximum alone, lambda = 0.02 here made the float64 reference
# itself move by 2.4e-10 when its input moved by 1e-14; with the floor, by 1e-14.
TOLERANCE = {"float64": 1e-12, "float32": 5e-6}


@pytest.mark.parametrize(
    "shape, spacing, boundary",
    [
        ((30, 33), None, "reflect"),
        ((30, 33), (2.0, 0.5), "wrap"),
        ((9, 16, 18), (0.3, 0.1, 0.1), "reflect"),
        ((9, 16, 18), (0.3, 0.1, 0.1), "estimate"),
    ],
)
def test_tv_matches_the_reference(backend_dtype, shape, spacing, boundary):
    backend, dtype = backend_dtype
    image = blob_image(shape, seed=3) * 100
    psf = make_psf((3,) * len(shape), "gaussian")
    margin = ((1, 1),) * len(shape)
    init = "mean" if boundary == "estimate" else "observed"
    expected = model_rl(image, psf, 10, boundary, margin, strength=0.02, spacing=spacing, init=init)
    result = gd.richardson_lucy(
        image,
        psf,
        10,
        backend=backend,
        dtype=dtype,
        boundary=boundary,
        margin=1 if boundary == "estimate" else "full",
        regularization=0.02,
        spacing=spacing,
        init=init,
    )
    error = rel_rms(result, expected)
    assert error < TOLERANCE[dtype.name], error


def test_tv_factor_kernels_agree_with_the_reference_divergence(backend):
    # The raw one-step-late factor, with weights and the guard, on a rough 3D field.
    rng = np.random.default_rng(8)
    f = rng.uniform(0.2, 2.0, (7, 9, 11)).astype(np.float32)
    weights = rng.uniform(0.5, 3.0, f.shape).astype(np.float32)
    weights[rng.random(f.shape) < 0.1] = 0
    spacing = (3.0, 1.0, 1.5)
    be = get_backend(backend)
    out = be.empty(f.shape, np.dtype(np.float32))
    be.tv_factor(be.to_backend(f), be.to_backend(weights), spacing, 0.4, 0.01, 0.5, out)
    d = 1 - 0.4 * tv_divergence(f.astype(np.float64), spacing, 0.01, weights > 0)
    guarded = (d < 0.5) & (weights > 0)
    expected = weights / np.maximum(d, 0.5)
    np.testing.assert_allclose(be.to_numpy(out), expected, rtol=2e-5, atol=0)
    assert guarded.sum() > 0 and be.tv_guarded() == guarded.sum()
    assert be.tv_guarded() == 0  # the count resets when read


def test_tv_lowers_an_isolated_peak(backend):
    # The sign test: a bright voxel on a flat background is a local maximum, where
    # div(grad f / |grad f|) < 0, so the denominator exceeds 1 and TV lowers the peak.
    image = np.full((31, 31), 10.0)
    image[15, 15] = 200.0
    psf = make_psf((5, 5), "gaussian")
    plain = gd.richardson_lucy(image, psf, 20, backend=backend)
    tv = gd.richardson_lucy(image, psf, 20, backend=backend, regularization=0.05)
    assert tv[15, 15] < 0.9 * plain[15, 15]
    assert tv.sum() == pytest.approx(plain.sum(), rel=0.02)  # smooths, keeps the light


def test_zero_strength_is_plain_rl(image2d):
    psf = make_psf((5, 5), "gaussian")
    plain = gd.richardson_lucy(image2d, psf, 7, backend="numpy")
    np.testing.assert_array_equal(
        gd.richardson_lucy(image2d, psf, 7, backend="numpy", regularization=0.0), plain
    )


def test_a_strong_tv_is_guarded_and_reported(backend):
    image = blob_image((24, 24), seed=4) * 50
    psf = make_psf((5, 5), "gaussian")
    result, info = gd.richardson_lucy(
        image, psf, 15, backend=backend, regularization=2.0, return_info=True
    )
    assert np.isfinite(result).all() and (result >= 0).all()
    assert info.tv_guarded > 0
    _, calm = gd.richardson_lucy(
        image, psf, 15, backend=backend, regularization=1e-4, return_info=True
    )
    assert calm.tv_guarded == 0


def test_tv_with_acceleration_tiles_and_dask(backend):
    image = blob_image((40, 42), seed=5) * 80
    psf = make_psf((5, 5), "gaussian")
    kwargs = dict(backend=backend, regularization=0.005, acceleration="shb")
    whole = gd.richardson_lucy(image, psf, 12, tile_shape=None, **kwargs)
    assert np.isfinite(whole).all()
    tiled = gd.richardson_lucy(image, psf, 12, tile_shape=(20, 21), overlap=12, **kwargs)
    assert rel_rms(tiled, whole) < 1e-3
    from gpu_deconv.dask import richardson_lucy as dask_rl

    lazy = dask_rl(image, psf, 12, chunks=(20, 21), overlap=12, **kwargs)
    assert rel_rms(lazy.compute(), whole) < 1e-3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(regularization=-0.1), "regularization must be a finite number >= 0"),
        (dict(regularization="tv"), "regularization must be a number"),
        (dict(regularization=0.01, spacing=(1.0,)), "spacing must hold 2 values"),
        (dict(regularization=0.01, spacing=(1.0, 0.0)), "positive and finite"),
    ],
)
def test_bad_tv_parameters_are_refused(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        gd.richardson_lucy(np.ones((16, 16)), np.ones((3, 3)), 2, backend="numpy", **kwargs)


@pytest.mark.parametrize("backend", ["numpy", OPENCL])
@pytest.mark.parametrize("shape", [(40, 48), (12, 20, 24)])
def test_tv_with_wrap_commutes_with_periodic_shifts(backend, shape):
    # Issue 23, item 10: Neumann differences at the edges broke it (1.3e-3 to 8.7e-3).
    require_backend(backend)
    rng = np.random.default_rng(3)
    image = ndi.gaussian_filter(rng.random(shape) * 200, 1.5) + 5
    psf = gaussian_psf((5,) * len(shape), 1.2)
    shift = (5, 7, 3)[: len(shape)]
    options = dict(backend=backend, boundary="wrap", regularization=2e-3, method="fft")
    if backend == "numpy":
        options["dtype"] = "float64"
    result = gd.richardson_lucy(image, psf, 15, **options)
    moved = gd.richardson_lucy(np.roll(image, shift, range(len(shape))), psf, 15, **options)
    tolerance = 1e-12 if backend == "numpy" else 2e-6
    assert rel_rms(moved, np.roll(result, shift, range(len(shape)))) < tolerance
