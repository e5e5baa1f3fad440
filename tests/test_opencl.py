"""OpenCL-specific behaviour: transfers, devices, memory planning, robustness (PoCL on CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pyopencl
import pytest
from conftest import blob_image, make_psf, oracle_rl, rel_rms, require_backend

import gpu_deconv as gd
from gpu_deconv.backends._base import BlurSpec, full_margin
from gpu_deconv.backends.opencl_backend import InsufficientDeviceMemoryError

pytestmark = pytest.mark.opencl


@pytest.fixture(scope="module")
def cl_backend():
    require_backend("opencl")
    return gd.get_backend("opencl")


@pytest.fixture()
def host_copies(monkeypatch):
    """Count every host<->device copy pyopencl makes (device-to-device copies are not counted)."""
    counts = {"to_device": 0, "to_host": 0}
    real = pyopencl.enqueue_copy

    def counting(queue, dest, src, **kwargs):
        if isinstance(src, np.ndarray):
            counts["to_device"] += 1
        elif isinstance(dest, np.ndarray):
            counts["to_host"] += 1
        return real(queue, dest, src, **kwargs)

    monkeypatch.setattr(pyopencl, "enqueue_copy", counting)
    return counts


@pytest.mark.parametrize(
    "method, boundary, psf_kind, constants",
    [
        ("fft", "reflect", "gaussian", 1),  # DCT gain
        ("fft", "nearest", "random", 1),  # OTF
        ("spatial", "wrap", "random", 1),  # PSF
        ("separable", "constant", "gaussian", 3),  # one profile per axis
    ],
)
def test_transfers_are_one_push_and_one_pull_per_snapshot(
    cl_backend, host_copies, method, boundary, psf_kind, constants
):
    image = blob_image((12, 20, 24), seed=3).astype(np.float32)
    psf = make_psf((3, 5, 5), psf_kind)
    during_loop = []

    def callback(k):
        during_loop.append(dict(host_copies))

    steps = gd.richardson_lucy(
        image,
        psf,
        50,
        backend="opencl",
        method=method,
        boundary=boundary,
        snapshots=[10, 25, 50],
        callback=callback,
    )
    assert sorted(steps) == [10, 25, 50]
    # Image data: one push before the loop, one pull per snapshot (the last one is the result).
    # Operator constants (PSF/OTF/gain) are uploaded once while the operator is prepared.
    assert host_copies == {"to_device": 1 + constants, "to_host": 3}
    pulls = [c["to_host"] for c in during_loop]
    assert pulls[0:9] == [0] * 9 and pulls[9] == 1 and pulls[24] == 2 and pulls[49] == 3
    assert all(c["to_device"] == 1 + constants for c in during_loop)


def test_no_nan_with_zero_regions_and_high_dynamic_range(cl_backend):
    image = np.zeros((16, 40, 40), np.float32)
    image[6:10, 15:25, 15:25] = 1e6
    image[2, 2, 2] = 1.0
    psf = make_psf((5, 7, 7), "gaussian")
    for boundary in ("reflect", "constant", "nearest"):
        for method in ("fft", "spatial"):
            result = gd.richardson_lucy(
                image, psf, 30, backend="opencl", method=method, boundary=boundary
            )
            assert np.isfinite(result).all() and (result >= 0).all()
            expected = oracle_rl(image, psf, 30, boundary)
            assert rel_rms(result, expected) <= 1e-4


@pytest.mark.parametrize("method", ["fft", "spatial", "separable"])
def test_non_negative_and_flux_preserving(cl_backend, method):
    image = blob_image((10, 24, 18), seed=9)
    psf = make_psf((3, 5, 3), "gaussian")
    steps = gd.richardson_lucy(
        image, psf, 15, backend="opencl", method=method, boundary="wrap", snapshots=[1, 5, 15]
    )
    for estimate in steps.values():
        assert (estimate >= 0).all()
        assert estimate.sum(dtype=np.float64) == pytest.approx(image.sum(), rel=1e-5)


def test_not_fft_friendly_volume_matches_reference(cl_backend):
    """61x127x97 (127 and 97 are prime): padded rfft and DCT paths against the float64 oracle."""
    image = blob_image((61, 127, 97), seed=4)
    psf = make_psf((5, 7, 7), "gaussian")
    for boundary in ("reflect", "nearest"):
        expected = oracle_rl(image, psf, 20, boundary)
        result = gd.richardson_lucy(
            image, psf, 20, backend="opencl", method="fft", boundary=boundary
        )
        assert rel_rms(result, expected) <= 1e-4


def test_opencl_computes_in_float32(cl_backend):
    image = blob_image((16, 16))
    assert gd.richardson_lucy(image, make_psf((3, 3), "gaussian"), 2, backend="opencl").dtype == (
        np.float32
    )
    with pytest.raises(ValueError, match="dtype float64 is not supported by this backend"):
        gd.richardson_lucy(
            image, make_psf((3, 3), "gaussian"), 2, backend="opencl", dtype="float64"
        )


def test_devices_listed_and_chosen_by_substring(cl_backend, monkeypatch):
    devices = gd.list_devices()
    assert devices and sum(d.is_default for d in devices) == 1
    default = next(d for d in devices if d.is_default)
    assert default.global_memory > 0 and 0 < default.max_allocation <= default.global_memory
    if any(d.type == "GPU" and "Oclgrind" not in d.platform for d in devices):
        assert default.type == "GPU"
    assert "Oclgrind" not in default.platform  # a simulator is used only when named
    chosen = gd.get_backend("opencl", device=default.name[:4].lower())
    assert chosen.device.name.strip() == default.name
    with pytest.raises(
        gd.BackendUnavailableError, match="no OpenCL device matches 'no-such-device'"
    ):
        gd.get_backend("opencl", device="no-such-device")
    monkeypatch.setenv("GPU_DECONV_DEVICE", "no-such-device")
    with pytest.raises(gd.BackendUnavailableError, match="available: "):
        gd.get_backend("opencl")


def test_auto_uses_opencl_only_where_it_beats_numpy(cl_backend):
    chosen = gd.get_backend("auto")
    expected = "opencl" if cl_backend.auto_priority > 1 else "numpy"
    assert chosen.name == expected
    assert gd.get_backend("auto", device=cl_backend.device.name[:4]).name == "opencl"


def run_without_devices(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` where PoCL exposes no device (POCL_DEVICES=none): a machine without OpenCL."""
    env = dict(os.environ, POCL_DEVICES="none")
    env.pop("GPU_DECONV_DEVICE", None)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def test_no_device_gives_install_hint_and_auto_warns_once():
    code = """
import warnings, numpy as np, gpu_deconv as gd
assert gd.list_devices() == []
try:
    gd.get_backend("opencl")
except gd.BackendUnavailableError as exc:
    print("ERROR:", exc)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(3):
        out = gd.richardson_lucy(np.ones((8, 8)), np.ones((3, 3)), 2)
print("WARNINGS:", len(caught), caught[0].message if caught else "")
print("RESULT:", out.dtype, out.shape)
"""
    result = run_without_devices(code)
    assert result.returncode == 0, result.stderr
    assert (
        "ERROR: no OpenCL device found; install an OpenCL driver: the distribution's PoCL "
        "(`apt-get install pocl-opencl-icd`" in result.stdout
    )
    assert "WARNINGS: 1 backend='auto': OpenCL unavailable" in result.stdout
    assert "RESULT: float64 (8, 8)" in result.stdout


@pytest.fixture()
def device_allocations(monkeypatch):
    """Bytes of every OpenCL buffer created while the fixture is active (pyopencl.Buffer)."""
    import pyopencl as cl

    sizes: list[int] = []
    original = cl.Buffer

    def counting(context, flags, size=0, hostbuf=None):
        sizes.append(int(size) if hostbuf is None else int(hostbuf.nbytes))
        if hostbuf is None:
            return original(context, flags, size)
        return original(context, flags, size, hostbuf)

    monkeypatch.setattr(cl, "Buffer", counting)
    return sizes


@pytest.mark.parametrize(
    "boundary, method, masked",
    [
        ("reflect", "fft", False),
        ("nearest", "fft", False),
        ("wrap", "fft", False),
        ("mirror", "spatial", False),
        ("reflect", "separable", False),
        ("estimate", "fft", False),
        ("estimate", "fft", True),
        ("nearest", "fft", True),
    ],
)
def test_memory_model_equals_real_device_allocations(
    cl_backend, device_allocations, boundary, method, masked
):
    from gpu_deconv._model import memory_need
    from gpu_deconv.algorithms import RichardsonLucy

    image = blob_image((12, 30, 26), seed=3).astype(np.float32)
    psf = make_psf((5, 7, 7), "gaussian")
    mask = image < 0.9 if masked else None
    spec = BlurSpec(psf, image.shape, boundary, method, np.float32)
    if boundary == "estimate":
        spec = BlurSpec(psf, image.shape, boundary, method, np.float32, ((2, 2), (3, 3), (3, 3)))
    planned = memory_need(
        cl_backend, spec, RichardsonLucy, weighted=boundary == "estimate" or masked
    )
    # Warm up outside the count: VkFFT plans and the kernel program are cached per backend.
    kwargs = dict(backend=cl_backend, method=method, boundary=boundary, mask=mask, tile_shape=None)
    gd.richardson_lucy(image, psf, 2, **kwargs)
    device_allocations.clear()
    gd.richardson_lucy(image, psf, 2, **kwargs)
    # Weighted models also upload the mask (or a buffer of ones) to compute H^T mask: an
    # image-sized buffer freed before the algorithm allocates its own.
    temporary = image.nbytes if planned.total > 0 and (boundary == "estimate" or masked) else 0
    assert sum(device_allocations) == planned.total + temporary
    assert max(device_allocations) == planned.largest


@pytest.mark.parametrize("boundary", ["reflect", "estimate"])
def test_memory_plan_of_background_maps_and_tv_equals_device_allocations(
    cl_backend, device_allocations, boundary
):
    from gpu_deconv._rl import _Options
    from gpu_deconv.algorithms import RichardsonLucy

    image = blob_image((12, 30, 26), seed=3).astype(np.float32) * 50
    psf = make_psf((5, 7, 7), "gaussian")
    background = np.full(image.shape, 2.0, np.float32)
    kwargs = dict(
        backend=cl_backend,
        boundary=boundary,
        background=background,
        regularization=1e-3,
        method="fft",
        tile_shape=None,
    )
    gd.richardson_lucy(image, psf, 2, **kwargs)  # warm-up: FFT plans, programs, guard counter
    device_allocations.clear()
    gd.richardson_lucy(image, psf, 2, **kwargs)
    problem = SimpleNamespace(
        background=background,
        strength=1e-3,
        mask=None,
        backend=cl_backend,
        spec=BlurSpec(
            psf,
            image.shape,
            boundary,
            "fft",
            np.float32,
            full_margin(psf.shape) if boundary == "estimate" else (),
        ),
    )
    planned = _Options(RichardsonLucy, problem, monitored=False).need(problem.spec)
    temporary = image.nbytes if boundary == "estimate" else 0  # the ones for H^T 1
    assert sum(device_allocations) == planned.total + temporary
    assert max(device_allocations) == planned.largest


def test_too_large_a_volume_is_refused_before_allocating(cl_backend):
    psf = make_psf((17, 17, 17), "gaussian")
    too_big = (4096, 4096, 256)  # 16 GiB of float32
    with pytest.raises(InsufficientDeviceMemoryError, match="device memory.*tile_shape='auto'"):
        cl_backend.blur_operator(BlurSpec(psf, too_big, "reflect", "fft", np.float32))


def test_psf_upload_cached_plans_give_identical_results(cl_backend):
    image = blob_image((20, 30), seed=1)
    psf = make_psf((5, 5), "random")
    first = gd.richardson_lucy(image, psf, 10, backend="opencl", method="fft", boundary="mirror")
    second = gd.richardson_lucy(image, psf, 10, backend="opencl", method="fft", boundary="mirror")
    np.testing.assert_array_equal(first, second)


@pytest.fixture()
def dct_preferring_backend(cl_backend):
    """A second backend on the same device whose cost model prefers the DCT path.

    On a CPU OpenCL device the padded real FFT is cheaper than VkFFT's DCT, so ``auto`` never
    takes the DCT path there; this backend makes sure that path is tested on every device.
    """
    from dataclasses import replace

    from gpu_deconv.backends.opencl_backend import OpenCLBackend

    backend = OpenCLBackend(cl_backend.device.name)
    backend.cost_model = replace(cl_backend.cost_model, dct_factor=0.1)
    return backend


@pytest.mark.parametrize(
    "boundary, transform",
    [
        ("reflect", "dct2"),
        ("mirror", "dct1"),
        ("nearest", "dct2-padded"),
        ("constant", "dct2-padded"),
    ],
)
@pytest.mark.parametrize("shape, psf_shape", [((37, 44), (5, 7)), ((14, 19, 23), (5, 1, 5))])
def test_dct_path_matches_reference(dct_preferring_backend, boundary, transform, shape, psf_shape):
    import scipy.ndimage as ndi

    image = blob_image(shape, seed=2)
    psf = make_psf(psf_shape, "gaussian")
    op = dct_preferring_backend.blur_operator(BlurSpec(psf, shape, boundary, "fft", np.float32))
    assert op.transform == transform
    for ours, theirs in ((gd.convolve, ndi.convolve), (gd.correlate, ndi.correlate)):
        result = ours(image, psf, backend=dct_preferring_backend, method="fft", boundary=boundary)
        assert rel_rms(result, theirs(image, psf, mode=boundary)) <= 1e-6
    result = gd.richardson_lucy(
        image, psf, 20, backend=dct_preferring_backend, method="fft", boundary=boundary
    )
    assert rel_rms(result, oracle_rl(image, psf, 20, boundary)) <= 1e-5


def test_cost_model_prefers_padded_fft_over_dct_on_cpu_devices(cl_backend):
    if cl_backend.auto_priority > 1:
        pytest.skip("a property of CPU OpenCL devices (measured: VkFFT DCT costs 2 real FFTs)")
    psf = make_psf((17, 17, 17), "gaussian")
    op = cl_backend.blur_operator(BlurSpec(psf, (64, 256, 256), "reflect", "fft", np.float32))
    assert op.transform == "rfft"


def test_device_selector_picks_the_kth_match(cl_backend):
    from gpu_deconv.backends._opencl_devices import pick_device

    devices = gd.list_devices()
    assert devices[0].is_default
    assert pick_device("#0").name.strip() == devices[0].name
    first = devices[0].name
    assert pick_device(f"{first[:5]}#0").name.strip() == first
    with pytest.raises(gd.BackendUnavailableError, match=r"only \d+ match"):
        pick_device(f"{first[:5]}#{len(devices)}")
    with pytest.raises(gd.BackendUnavailableError, match="'#' must be followed by an index"):
        pick_device("#x")


def test_without_pyvkfft_auto_warns_once_and_fft_modes_say_how_to_get_it(cl_backend):
    from gpu_deconv.backends.opencl_backend import OpenCLBackend

    backend = OpenCLBackend(cl_backend.device.name)
    backend.transforms = ()  # what a machine without pyvkfft reports
    image, psf = blob_image((20, 24), seed=1), make_psf((5, 5), "gaussian")
    with pytest.warns(RuntimeWarning, match="OpenCL runs without FFTs.*pyvkfft"):
        result = gd.richardson_lucy(image, psf, 5, backend=backend)
    assert rel_rms(result, oracle_rl(image, psf, 5)) <= 1e-5
    gd.richardson_lucy(image, psf, 5, backend=backend)  # once per backend: no second warning
    for kwargs in (dict(method="fft"), dict(boundary="estimate")):
        with pytest.raises(gd.BackendUnavailableError, match="VKFFT_BACKEND=opencl"):
            gd.richardson_lucy(image, psf, 5, backend=backend, **kwargs)


@pytest.mark.parametrize(
    "shape, psf_shape",
    [((1, 1), (3, 3)), ((1, 64), (3, 1)), ((4, 1), (1, 3)), ((1, 1, 1), (3, 3, 3)), ((1,), (5,))],
)
@pytest.mark.parametrize("boundary", ["reflect", "mirror", "nearest"])
def test_axes_of_length_one_are_blurred_as_numpy_does(
    cl_backend, dct_preferring_backend, shape, psf_shape, boundary
):
    """Every blurred axis of length 1: the DCT has nothing to transform, the PSF only scales."""
    import scipy.ndimage as ndi

    image = blob_image(shape, seed=7)
    psf = make_psf(psf_shape, "gaussian")
    expected = oracle_rl(image, psf, 5, boundary)
    for backend in (cl_backend, dct_preferring_backend):
        blurred = gd.convolve(image, psf, backend=backend, method="fft", boundary=boundary)
        assert rel_rms(blurred, ndi.convolve(image, psf, mode=boundary)) <= 1e-6
        for method in ("auto", "fft"):
            result = gd.richardson_lucy(
                image, psf, 5, backend=backend, method=method, boundary=boundary
            )
            assert rel_rms(result, expected) <= 1e-5
