"""convolve/correlate equal scipy.ndimage for every method, boundary, ndim and PSF parity."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.ndimage as ndi
from conftest import BLUR_RTOL, BOUNDARIES, blob_image, make_psf, rel_rms

import gpu_deconv as gd
from gpu_deconv.backends._planning import boundary_index

SHAPES = {1: (29,), 2: (21, 26), 3: (9, 12, 11)}
PSF_SHAPES = {1: [(5,), (6,)], 2: [(5, 3), (4, 6)], 3: [(3, 5, 3), (4, 3, 2)]}


def shifted_sum(x, h, boundary, sign):
    """Independent oracle: sum_k h[k] x_ext[i + sign*(k - n//2)], extension by index maps."""
    out = np.zeros_like(x, dtype=np.float64)
    for k in itertools.product(*(range(n) for n in h.shape)):
        index = []
        inside = np.ones(x.shape, dtype=bool)
        for axis, (kk, n, size) in enumerate(zip(k, h.shape, x.shape)):
            pos = np.arange(size) + sign * (kk - n // 2)
            if boundary == "constant":
                valid = (pos >= 0) & (pos < size)
                shape = [1] * x.ndim
                shape[axis] = size
                inside = inside & valid.reshape(shape)
                pos = np.clip(pos, 0, size - 1)
            else:
                pos = boundary_index(pos, size, boundary)
            index.append(pos)
        shifted = x[np.ix_(*index)]
        out += h[k] * np.where(inside, shifted, 0.0)
    return out


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_scipy_is_the_shifted_sum(ndim, boundary):
    """Pins the convention (origin n//2, scipy's mode names) independently of scipy."""
    rng = np.random.default_rng(ndim)
    x = rng.random(SHAPES[ndim])
    for psf_shape in PSF_SHAPES[ndim]:
        h = rng.random(psf_shape)
        np.testing.assert_allclose(
            ndi.convolve(x, h, mode=boundary), shifted_sum(x, h, boundary, -1)
        )
        np.testing.assert_allclose(
            ndi.correlate(x, h, mode=boundary), shifted_sum(x, h, boundary, 1)
        )


@pytest.mark.parametrize("method", ["spatial", "separable", "fft"])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_blur_matches_scipy(ndim, boundary, method, backend_dtype):
    backend, dtype = backend_dtype
    rng = np.random.default_rng(7)
    x = rng.random(SHAPES[ndim])
    kinds = ["gaussian"] if method == "separable" else ["gaussian", "random"]
    for psf_shape, kind in itertools.product(PSF_SHAPES[ndim], kinds):
        h = make_psf(psf_shape, kind)
        for name, ours, theirs in (
            ("convolve", gd.convolve, ndi.convolve),
            ("correlate", gd.correlate, ndi.correlate),
        ):
            result = ours(x, h, backend=backend, method=method, boundary=boundary, dtype=dtype)
            assert result.dtype == dtype
            err = rel_rms(result, theirs(x, h, mode=boundary))
            assert err <= BLUR_RTOL[dtype], (name, psf_shape, kind, err)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("image_shape", [(7, 9), (1, 9), (2, 5, 9)])
def test_psf_larger_than_image(boundary, image_shape, backend):
    """A measured PSF often has more planes than a thin stack; scipy defines that case too."""
    rng = np.random.default_rng(3)
    x = rng.random(image_shape)
    psf_shape = (9, 11) if len(image_shape) == 2 else (5, 7, 9)
    for kind in ("gaussian", "random"):
        h = make_psf(psf_shape, kind)
        for method in ("spatial", "separable", "fft"):
            if method == "separable" and kind == "random":
                continue
            for ours, theirs in ((gd.convolve, ndi.convolve), (gd.correlate, ndi.correlate)):
                result = ours(x, h, backend=backend, method=method, boundary=boundary)
                expected = theirs(x, h, mode=boundary)
                assert rel_rms(result, expected) <= BLUR_RTOL[result.dtype]


def test_separable_rejects_non_separable_psf(backend):
    with pytest.raises(ValueError, match="separable"):
        gd.convolve(
            np.ones((9, 9)), make_psf((3, 3), "random"), backend=backend, method="separable"
        )


def test_numpy_fft_public_scipy_fallback_matches(monkeypatch):
    """Without pocketfft's out= binding the public scipy.fft path gives the same result."""
    from gpu_deconv.backends import _numpy_transforms

    image = blob_image((20, 30, 25), seed=2)
    psf = make_psf((5, 7, 6), "random")
    run = lambda: gd.richardson_lucy(  # noqa: E731
        image, psf, 5, backend="numpy", method="fft", boundary="nearest", tile_shape=None
    )
    fast = run()
    monkeypatch.setattr(_numpy_transforms, "_pocketfft", None)
    np.testing.assert_allclose(run(), fast, rtol=1e-12, atol=0)
