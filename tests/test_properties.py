"""Property tests of the Richardson-Lucy loop and of the blur operators (hypothesis).

Every property runs through the ``backend`` fixture, so a new backend inherits them. On OpenCL
they use the spatial method: VkFFT compiles new kernels for every shape hypothesis draws
(seconds each on PoCL), and the FFT paths' equivalence there is covered by the matrix tests.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BOUNDARIES, make_psf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpu_deconv as gd

settings.register_profile(
    "gpu_deconv",
    max_examples=25,
    deadline=None,
    derandomize=True,
    # The backend fixture only names a backend: nothing to reset between examples.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile("gpu_deconv")
METHODS = {"numpy": ["spatial", "fft"], "opencl": ["spatial"]}
# Relative tolerance of exact identities in each backend's compute dtype.
RTOL = {"numpy": 1e-12, "opencl": 2e-5}


def methods(backend):
    return st.sampled_from(METHODS[backend])


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


@given(cases(), st.sampled_from(BOUNDARIES), st.data())
def test_estimate_is_non_negative_and_finite(backend, case, boundary, data):
    image, psf, n = case
    method = data.draw(methods(backend))
    result = gd.richardson_lucy(image, psf, n, backend=backend, method=method, boundary=boundary)
    assert np.isfinite(result).all() and (result >= 0).all()


@given(cases(), st.booleans(), st.data())
def test_estimated_edges_are_non_negative_finite_and_keep_the_shape(backend, case, masked, data):
    image, psf, n = case
    mask = data.draw(st.integers(0, 2**16)) if masked else None
    if mask is not None:
        mask = np.random.default_rng(mask).random(image.shape) > 0.2
        mask.flat[0] = True
    result = gd.richardson_lucy(image, psf, n, backend=backend, boundary="estimate", mask=mask)
    assert result.shape == image.shape
    assert np.isfinite(result).all() and (result >= 0).all()


@given(cases(), st.data())
def test_wrap_preserves_flux_every_iteration(backend, case, data):
    image, psf, n = case
    method = data.draw(methods(backend))
    steps = gd.richardson_lucy(
        image, psf, n, backend=backend, method=method, boundary="wrap", snapshots=range(n + 1)
    )
    for estimate in steps.values():
        assert estimate.sum(dtype=np.float64) == pytest.approx(image.sum(), rel=RTOL[backend])


@given(cases(), st.sampled_from(BOUNDARIES))
def test_delta_psf_is_a_fixed_point(backend, case, boundary):
    image, psf, n = case
    delta = np.zeros(psf.shape)
    delta[tuple(s // 2 for s in psf.shape)] = 1.0
    expected = image.astype(np.float32) if backend == "opencl" else image
    for method in (*METHODS[backend], "separable"):
        result = gd.richardson_lucy(
            image, delta, n, backend=backend, method=method, boundary=boundary
        )
        np.testing.assert_allclose(result, expected, rtol=RTOL[backend], atol=1e-15)


@given(cases(), st.data())
def test_wrap_correlate_is_adjoint_of_convolve(backend, case, data):
    x, psf, _ = case
    method = data.draw(methods(backend))
    y = np.random.default_rng(int(x.size)).random(x.shape)
    hx = gd.convolve(x, psf, backend=backend, method=method, boundary="wrap")
    hty = gd.correlate(y, psf, backend=backend, method=method, boundary="wrap")
    x, y = (np.asarray(a, hx.dtype) for a in (x, y))
    assert np.vdot(hx, y) == pytest.approx(np.vdot(x, hty), rel=RTOL[backend])


def _i_divergence(g, blurred):
    return float(np.sum(g * np.log(g / blurred) - g + blurred))


@given(cases(), st.data())
def test_i_divergence_does_not_increase(backend, case, data):
    image, psf, n = case
    method = data.draw(methods(backend))
    image = image + 0.1  # strictly positive data keeps the divergence finite
    steps = gd.richardson_lucy(
        image, psf, 8, backend=backend, method=method, boundary="wrap", snapshots=range(9)
    )
    # The divergence in float64 of each backend's estimates (the blur of the float64 oracle).
    values = [
        _i_divergence(
            image, gd.convolve(steps[k].astype(np.float64), psf, backend="numpy", boundary="wrap")
        )
        for k in range(9)
    ]
    slack = 1e-9 if backend == "numpy" else 1e-5
    assert all(b <= a + slack * abs(a) + 1e-12 for a, b in zip(values, values[1:])), values


@given(cases(ndim=2), st.integers(-5, 5), st.integers(-5, 5), st.data())
def test_wrap_is_shift_equivariant(backend, case, dy, dx, data):
    image, psf, n = case
    kwargs = dict(backend=backend, boundary="wrap", method=data.draw(methods(backend)))
    shifted = gd.richardson_lucy(np.roll(image, (dy, dx), (0, 1)), psf, n, **kwargs)
    plain = gd.richardson_lucy(image, psf, n, **kwargs)
    rtol = 1e-10 if backend == "numpy" else 1e-4
    np.testing.assert_allclose(shifted, np.roll(plain, (dy, dx), (0, 1)), rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("method", ["spatial", "separable", "fft"])
def test_snapshots_equal_separate_runs_exactly(method, backend_dtype, image3d):
    backend, dtype = backend_dtype
    psf = make_psf((3, 5, 5), "gaussian")
    kwargs = dict(backend=backend, method=method, dtype=dtype)
    steps = gd.richardson_lucy(image3d, psf, 9, snapshots=[9, 0, 3, 3], **kwargs)
    assert list(steps) == [0, 3, 9]
    for k, estimate in steps.items():
        np.testing.assert_array_equal(estimate, gd.richardson_lucy(image3d, psf, k, **kwargs))


class CountingBackend:
    """A backend with its transfers counted (any backend: the counts are the protocol's)."""

    def __init__(self, backend):
        self._backend = backend
        self.pushes = self.pulls = 0

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def to_backend(self, array):
        self.pushes += 1
        return self._backend.to_backend(array)

    def to_numpy(self, array, region=None):
        self.pulls += 1
        return self._backend.to_numpy(array, region)


@pytest.mark.parametrize(
    "kwargs, pushes",
    [
        (dict(), 1),  # the observed image; the start is a device copy of it
        (dict(init="mean"), 1),  # the start is filled on the device
        (dict(init="array"), 2),  # the image and the start
        (dict(boundary="estimate"), 2),  # the image and the start grown to the work domain
        (dict(mask=True), 3),  # the mask (for H^T mask), the masked image and the start
    ],
)
def test_transfers_are_counted_pushes_and_one_pull_per_snapshot(backend, image2d, kwargs, pushes):
    counting = CountingBackend(gd.get_backend(backend))
    kwargs = dict(kwargs)
    if kwargs.get("init") == "array":
        kwargs["init"] = np.full(image2d.shape, 0.5)
    if kwargs.get("mask"):
        kwargs["mask"] = image2d < 0.9
    gd.richardson_lucy(
        image2d, make_psf((5, 5), "gaussian"), 6, backend=counting, snapshots=[2, 4, 6], **kwargs
    )
    assert (counting.pushes, counting.pulls) == (pushes, 3)
