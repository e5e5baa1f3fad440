"""Each of our OpenCL kernels against NumPy on tiny arrays, with no FFT library involved.

This is the subset ``make check-kernels`` runs on the Oclgrind simulator, which reports
out-of-bounds accesses, uninitialised reads and data races; in ``make test`` it runs on the
default device (PoCL on CI).
"""

from __future__ import annotations

import numpy as np
import pyopencl.array as cla
import pytest
import scipy.ndimage as ndi
from conftest import BOUNDARIES, require_backend

import gpu_deconv as gd
from gpu_deconv.backends._opencl_operators import BOUNDARY_CODES
from gpu_deconv.backends._planning import boundary_index, fft_geometry

pytestmark = [pytest.mark.opencl, pytest.mark.kernels]
SHAPES = [(7,), (5, 6), (3, 4, 5)]


@pytest.fixture(scope="module")
def cl():
    require_backend("opencl")
    return gd.get_backend("opencl")


def device(cl, array):
    return cla.to_device(cl.queue, np.ascontiguousarray(array, dtype=np.float32))


def test_ratio_and_multiply(cl):
    rng = np.random.default_rng(0)
    observed = rng.random(37).astype(np.float32)
    blurred = rng.random(37).astype(np.float32)
    blurred[::5] = 0
    out = cla.empty_like(device(cl, observed))
    cl.ratio(device(cl, observed), device(cl, blurred), 1e-12, out)
    expected = np.where(blurred > 1e-12, observed / np.where(blurred > 0, blurred, 1), 0)
    np.testing.assert_allclose(out.get(), expected, rtol=1e-6)
    cl.multiply(device(cl, observed), device(cl, blurred), out)
    np.testing.assert_allclose(out.get(), observed * blurred, rtol=1e-6)


@pytest.mark.parametrize("conjugate", [0, 1])
def test_complex_multiply(cl, conjugate):
    rng = np.random.default_rng(1)
    a = (rng.random(19) + 1j * rng.random(19)).astype(np.complex64)
    b = (rng.random(19) + 1j * rng.random(19)).astype(np.complex64)
    spectrum = cla.to_device(cl.queue, a)
    otf = cla.to_device(cl.queue, b)
    cl.launch("complex_multiply", (a.size,), spectrum.data, otf.data, np.int32(conjugate))
    np.testing.assert_allclose(spectrum.get(), a * (np.conj(b) if conjugate else b), rtol=1e-6)


@pytest.mark.parametrize("complex_values", [1, 0])
def test_wiener_spectrum(cl, complex_values):
    from gpu_deconv.backends._numpy_filter import wiener_step

    rng = np.random.default_rng(2)
    kind = np.complex64 if complex_values else np.float32
    g = (rng.normal(size=23) + (1j * rng.normal(size=23) if complex_values else 0)).astype(kind)
    otf = (rng.random(23) + (1j * rng.random(23) if complex_values else 0)).astype(kind)
    spectrum = cla.to_device(cl.queue, g)
    cl.launch(
        "wiener_spectrum",
        (g.size,),
        spectrum.data,
        cla.to_device(cl.queue, otf).data,
        np.float32(0.5),
        np.float32(0.25),
        np.int32(complex_values),
    )
    g64, otf64 = g.astype(np.complex128), otf.astype(np.complex128)
    expected = wiener_step(g64, np.conj(otf64), np.abs(otf64) ** 2, 0.5, 0.25)
    assert (np.abs(g) ** 2 <= 0.5).any() and (np.abs(g) ** 2 > 0.5).any()  # both branches
    np.testing.assert_allclose(spectrum.get(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("shape", SHAPES)
def test_pad_and_crop(cl, shape, boundary):
    rng = np.random.default_rng(2)
    image = rng.random(shape).astype(np.float32)
    psf_shape = tuple(min(n, 3) for n in shape)
    geometry = fft_geometry(shape, psf_shape, boundary)
    padded = geometry.padded_shape
    row = padded[-1] + 3  # rows longer than the data, as for in-place real FFTs
    full = (1,) * (3 - len(shape))
    n0, n1, n2 = full + shape
    m0, m1, m2 = full + padded
    b0, b1, b2 = (0,) * (3 - len(shape)) + geometry.pad_before
    buffer = cla.zeros(cl.queue, (m0, m1, row), np.float32)
    source = device(cl, image)
    cl.launch(
        "pad_boundary",
        (m2, m1, m0),
        buffer.data,
        source.data,
        *map(np.int32, (n0, n1, n2, m1, row, b0, b1, b2, BOUNDARY_CODES[boundary])),
    )
    result = buffer.get()[..., :m2].reshape(padded)
    index = [
        boundary_index(np.arange(m) - b, n, "nearest" if boundary == "constant" else boundary)
        for m, b, n in zip(padded, geometry.pad_before, shape)
    ]
    expected = image[np.ix_(*index)]
    if boundary == "constant":
        inside = np.ones(padded, bool)
        for axis, (m, b, n) in enumerate(zip(padded, geometry.pad_before, shape)):
            pos = np.arange(m) - b
            view = [1] * len(shape)
            view[axis] = m
            inside &= ((pos >= 0) & (pos < n)).reshape(view)
        expected = np.where(inside, expected, 0)
    np.testing.assert_array_equal(result, expected)
    out = cla.empty_like(source)
    cl.launch(
        "crop", (n2, n1, n0), out.data, buffer.data, *map(np.int32, (n1, n2, m1, row, b0, b1, b2))
    )
    np.testing.assert_array_equal(out.get(), image)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("method", ["spatial", "separable"])
def test_direct_convolution_kernels(cl, shape, boundary, method):
    rng = np.random.default_rng(3)
    image = rng.random(shape)
    # Even and odd lengths; a Gaussian-like rank-one PSF so that both methods apply.
    profiles = [np.hanning(k + 2)[1:-1] for k in (3, 4, 3)[: len(shape)]]
    psf = profiles[0]
    for p in profiles[1:]:
        psf = np.multiply.outer(psf, p)
    for ours, theirs in ((gd.convolve, ndi.convolve), (gd.correlate, ndi.correlate)):
        result = ours(image, psf, backend=cl, method=method, boundary=boundary)
        np.testing.assert_allclose(result, theirs(image, psf, mode=boundary), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("contiguous", [1, 0])
@pytest.mark.parametrize("mode", [0, 1, 2])  # SHB, SHB extrapolating, Biggs
def test_accelerated_update_reads_the_crop(cl, monkeypatch, mode, contiguous):
    """The accelerated update's correction out of a padded buffer, both ways items share rows.

    Rows wider than the data (as for in-place real FFTs) and an offset crop: what Oclgrind
    checks for out-of-bounds reads and races (``make check-kernels``).
    """
    from gpu_deconv.backends._opencl_operators import accelerated_update as _accelerated_update
    from gpu_deconv.backends._opencl_operators import i32 as _i32

    rng = np.random.default_rng(9)
    shape, padded, before, row = (5, 6, 7), (9, 10, 12), (2, 3, 1), 14
    buffer = (rng.random((*padded[:2], row)) + 0.5).astype(np.float32)
    correction = buffer[tuple(slice(b, b + n) for b, n in zip(before, shape))]
    point, estimate, weights, earlier = (
        (rng.random(shape) + 0.1).astype(np.float32) for _ in range(4)
    )
    monkeypatch.setattr(cl, "_contiguous_shares", np.int32(contiguous))
    est, aux = device(cl, estimate), device(cl, np.zeros(shape))
    crop_args = _i32(shape[1], shape[2], padded[1], row, *before)
    sums = _accelerated_update(
        cl, crop_args, device(cl, buffer), device(cl, point), device(cl, weights), 1e-30, est,
        mode, aux, 0.5, device(cl, earlier),
    )  # fmt: skip
    fresh = point.astype(np.float64) * correction * weights
    np.testing.assert_allclose(est.get(), fresh, rtol=3e-7)
    f = estimate.astype(np.float64)
    if mode == 2:
        change = fresh - point
        np.testing.assert_allclose(aux.get(), change, rtol=0, atol=3e-7)
        expected = [np.sum(change * earlier), np.sum(change * change)]
    else:
        expected = [np.sum((fresh - f) * (point - f)), 0.0]
        following = np.maximum(fresh + 0.5 * (fresh - f), 1e-30)  # clamped at the floor
        written = following if mode == 1 else np.zeros(shape)
        np.testing.assert_allclose(aux.get(), written, rtol=0, atol=3e-7)
    np.testing.assert_allclose(sums, expected, rtol=1e-5, atol=1e-6)
