"""Shared fixtures: the float64 SciPy oracle, tolerances, test images and PSFs."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import scipy.ndimage as ndi

import gpu_deconv as gd
from gpu_deconv.psf import gaussian_psf

# A calibration the user stored (`gpu-deconv calibrate`) must not change what the tests' runs
# pick: an empty cache directory (tests of calibrate set their own).
os.environ["GPU_DECONV_CACHE_DIR"] = os.path.join(
    tempfile.gettempdir(), f"gpu-deconv-{os.getpid()}"
)

# Relative RMS tolerances of a backend result against the float64 oracle, per compute dtype.
RL_RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}
BLUR_RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-6}
BOUNDARIES = ("reflect", "nearest", "mirror", "wrap", "constant")

# (backend, compute dtype) pairs every equivalence test runs on: one test body for all.
OPENCL = pytest.param("opencl", marks=pytest.mark.opencl, id="opencl")
BACKEND_DTYPES = [
    pytest.param(("numpy", np.float64), id="numpy-float64"),
    pytest.param(("numpy", np.float32), id="numpy-float32"),
    pytest.param(("opencl", np.float32), marks=pytest.mark.opencl, id="opencl-float32"),
]


def require_backend(name: str) -> None:
    """Skip when the backend cannot run here, unless $GPU_DECONV_REQUIRE_OPENCL=1 (make test)."""
    if name == "numpy":
        return
    try:
        gd.get_backend(name)
    except gd.BackendUnavailableError as exc:
        if os.environ.get("GPU_DECONV_REQUIRE_OPENCL") == "1":
            pytest.fail(f"{name} backend required but unavailable: {exc}")
        pytest.skip(f"{name} backend unavailable: {exc}")


@pytest.fixture(params=["numpy", OPENCL])
def backend(request):
    """Each backend by name; OpenCL runs on whatever device is default (PoCL on CI)."""
    require_backend(request.param)
    return request.param


@pytest.fixture(params=BACKEND_DTYPES)
def backend_dtype(request):
    name, dtype = request.param
    require_backend(name)
    return name, np.dtype(dtype)


def rel_rms(result: np.ndarray, expected: np.ndarray) -> float:
    """Root mean square of the difference, relative to the RMS of ``expected``."""
    result = np.asarray(result, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.sqrt(np.mean((result - expected) ** 2) / np.mean(expected**2)))


def oracle_rl(image, psf, iterations, boundary="reflect", init=None, eps=1e-12):
    """Richardson-Lucy exactly as DESIGN.md section 2 defines it, in float64 with scipy.ndimage."""
    g = np.asarray(image, dtype=np.float64)
    h = np.asarray(psf, dtype=np.float64)
    h = h / h.sum()
    f = g.copy() if init is None else np.broadcast_to(np.asarray(init, np.float64), g.shape).copy()
    for _ in range(iterations):
        blurred = ndi.convolve(f, h, mode=boundary)
        ratio = np.zeros_like(g)
        np.divide(g, blurred, out=ratio, where=blurred > eps)
        f = f * ndi.correlate(ratio, h, mode=boundary)
    return f


def blob_image(shape, seed=0, background=0.05):
    """A positive test image: a few Gaussian blobs over a small background, max about 1."""
    rng = np.random.default_rng(seed)
    image = np.zeros(shape)
    for _ in range(6):
        centre = tuple(rng.integers(0, n) for n in shape)
        image[centre] += rng.uniform(0.5, 1.0)
    image = ndi.gaussian_filter(image, 1.0)
    image = image / image.max() + background
    return image


@pytest.fixture(scope="session")
def image2d():
    return blob_image((37, 44), seed=1)


@pytest.fixture(scope="session")
def image3d():
    return blob_image((14, 19, 23), seed=2)


def make_psf(shape, kind, seed=0):
    """A test PSF: ``"gaussian"`` (separable, symmetric) or ``"random"`` (neither), sum 1."""
    if kind == "gaussian":
        return gaussian_psf(shape, sigma=[0.8 + 0.3 * i for i in range(len(shape))])
    rng = np.random.default_rng(seed)
    psf = rng.random(shape) + 0.1
    return psf / psf.sum()
