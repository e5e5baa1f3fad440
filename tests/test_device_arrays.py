"""Device arrays in, device arrays out: an image on an OpenCL queue stays there.

What ``pyclesperanto_prototype.push`` returns is a ``pyopencl.array.Array`` on clesperanto's
queue; these tests make such arrays with pyopencl on a queue of their own (the clesperanto
flow itself runs in tests/test_clesperanto.py, in CI's clesperanto environment). Every device
to host copy goes through ``pyopencl.enqueue_copy``: counting its bytes (the copies still run)
shows what a call brings back.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from conftest import rel_rms, require_backend

import gpu_deconv as gd
from gpu_deconv.psf import gaussian_psf

pytestmark = pytest.mark.opencl
DEVICE_RTOL = 1e-5  # relative RMS against the NumPy backend in float32


@pytest.fixture(scope="module")
def queue():
    require_backend("opencl")
    import pyopencl as cl

    device = gd.get_backend("opencl").device
    return cl.CommandQueue(cl.Context([device]))


def photons(shape, seed=1):
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape)
    truth[tuple(rng.integers(0, n, 40) for n in shape)] = 3000.0
    return rng.poisson(ndi.gaussian_filter(truth, 1.5) + 5).astype(np.float32)


def to_device(queue, array):
    import pyopencl.array as cla

    return cla.to_device(queue, np.ascontiguousarray(array))


class HostCopies:
    """Count the bytes copied from a device to the host (the copies still happen)."""

    def __init__(self, monkeypatch):
        import pyopencl as cl

        self.bytes = 0
        real = cl.enqueue_copy

        def counting(queue, dest, src, **kwargs):
            if isinstance(dest, np.ndarray) and not isinstance(src, np.ndarray):
                self.bytes += dest.nbytes
            return real(queue, dest, src, **kwargs)

        monkeypatch.setattr(cl, "enqueue_copy", counting)


CASES = [
    pytest.param({}, id="plain"),
    pytest.param({"acceleration": "shb"}, id="shb"),
    pytest.param({"acceleration": "biggs", "boundary": "nearest"}, id="biggs"),
    pytest.param({"boundary": "estimate"}, id="estimate"),
    pytest.param({"background": 20.0, "read_noise": 3.0}, id="noise-model"),
    pytest.param({"regularization": 1e-3, "init": "mean"}, id="tv"),
    pytest.param({"iterations": "auto", "boundary": "estimate"}, id="auto"),
]


@pytest.mark.parametrize("options", CASES)
def test_a_device_image_gives_a_device_result_equal_to_numpy(queue, options):
    import pyopencl.array as cla

    image = photons((40, 48))
    psf = gaussian_psf((9, 9), 1.5)
    options = dict(options)
    iterations = options.pop("iterations", 10)
    expected = gd.richardson_lucy(
        image, psf, iterations, backend="numpy", dtype="float32", **options
    )
    result = gd.richardson_lucy(to_device(queue, image), psf, iterations, **options)
    assert isinstance(result, cla.Array) and result.queue == queue
    assert result.shape == image.shape and result.dtype == np.float32
    assert rel_rms(result.get(), expected) < DEVICE_RTOL


def test_a_3d_device_run_brings_back_under_one_percent_of_the_image(queue, monkeypatch):
    image = photons((24, 40, 40))
    psf = gaussian_psf((7, 9, 9), (1.5, 1.2, 1.2))
    mask = (image < np.percentile(image, 99)).astype(np.uint8)  # the brightest 1% "saturated"
    expected, info = gd.richardson_lucy(
        image,
        psf,
        "auto",
        backend="numpy",
        dtype="float32",
        boundary="estimate",
        mask=mask.astype(bool),
        acceleration="shb",
        return_info=True,
    )
    device_image, device_mask = to_device(queue, image), to_device(queue, mask)
    copies = HostCopies(monkeypatch)
    result, device_info = gd.richardson_lucy(
        device_image,
        psf,
        "auto",
        boundary="estimate",
        mask=device_mask,
        acceleration="shb",
        return_info=True,
    )
    pulled = copies.bytes
    assert pulled < 0.01 * image.nbytes, f"{pulled} bytes of {image.nbytes} came to the host"
    assert device_info.iterations == info.iterations
    assert rel_rms(result.get(), expected) < DEVICE_RTOL


def test_snapshots_and_blurs_stay_on_the_device(queue, monkeypatch):
    import pyopencl.array as cla

    image = photons((192, 200))
    psf = gaussian_psf((7, 7), 1.3)
    device_image = to_device(queue, image)
    copies = HostCopies(monkeypatch)
    steps = gd.richardson_lucy(device_image, psf, 6, snapshots=[0, 3, 6])
    blurred = gd.convolve(device_image, psf)
    back = gd.correlate(device_image, psf, method="spatial")
    assert copies.bytes < 0.01 * image.nbytes
    assert all(isinstance(x, cla.Array) for x in (*steps.values(), blurred, back))
    for k, step in steps.items():
        expected = gd.richardson_lucy(image, psf, k, backend="numpy", dtype="float32")
        assert rel_rms(step.get(), expected) < DEVICE_RTOL
    expected = gd.convolve(image, psf, backend="numpy", dtype="float32")
    assert rel_rms(blurred.get(), expected) < 1e-6
    expected = gd.correlate(image, psf, backend="numpy", dtype="float32")
    assert rel_rms(back.get(), expected) < 1e-6


@pytest.mark.parametrize("name", ["wiener", "tikhonov"])
def test_direct_filters_take_and_give_device_arrays(queue, name, monkeypatch):
    import pyopencl.array as cla

    image = photons((64, 72), seed=2) - 10.0  # negative values are kept by linear filters
    psf = gaussian_psf((7, 7), 1.3)
    options = {"balance": 0.05} if name == "wiener" else {"regularization": 1e-2}
    expected = getattr(gd, name)(image, psf, backend="numpy", dtype="float32", **options)
    device_image = to_device(queue, image)
    copies = HostCopies(monkeypatch)
    result = getattr(gd, name)(device_image, psf, **options)
    assert copies.bytes < 0.01 * image.nbytes
    assert isinstance(result, cla.Array)
    assert rel_rms(result.get(), expected) < 1e-5


def test_a_device_start_mask_and_background_are_used_where_they_are(queue):
    image = photons((30, 34), seed=4)
    psf = gaussian_psf((7, 7), 1.2)
    start = np.full(image.shape, float(image.mean()), np.float32)
    background = np.full(image.shape, 4.0, np.float32)
    mask = np.ones(image.shape, bool)
    mask[10:14, 10:20] = False
    expected = gd.richardson_lucy(
        image,
        psf,
        8,
        backend="numpy",
        dtype="float32",
        init=start,
        mask=mask,
        background=background,
    )
    result = gd.richardson_lucy(
        to_device(queue, image),
        psf,
        8,
        init=to_device(queue, start),
        mask=to_device(queue, mask.astype(np.float32)),
        background=to_device(queue, background),
    )
    assert rel_rms(result.get(), expected) < DEVICE_RTOL


def test_a_plane_of_a_device_stack_and_arrays_of_another_queue_are_used(queue):
    import pyopencl as cl

    stack = np.stack([photons((30, 34), seed=s) for s in (5, 6)])
    psf = gaussian_psf((7, 7), 1.2)
    plane = to_device(queue, stack)[1]  # a view at an offset into the stack's buffer
    expected = gd.richardson_lucy(stack[1], psf, 5, backend="numpy", dtype="float32")
    assert rel_rms(gd.richardson_lucy(plane, psf, 5).get(), expected) < DEVICE_RTOL
    other = cl.CommandQueue(queue.context)  # the mask comes from another queue of the context
    mask = np.ones(stack[1].shape, bool)
    mask[3:6, 4:9] = False
    expected = gd.richardson_lucy(stack[1], psf, 5, backend="numpy", dtype="float32", mask=mask)
    result = gd.richardson_lucy(to_device(queue, stack[1]), psf, 5, mask=to_device(other, mask))
    assert rel_rms(result.get(), expected) < DEVICE_RTOL


def test_device_input_validation_is_clear(queue):
    psf = gaussian_psf((5, 5), 1.0)
    image = photons((20, 20))
    device_image = to_device(queue, image)
    with pytest.raises(ValueError, match="backend must be 'auto' or 'opencl'"):
        gd.richardson_lucy(device_image, psf, 2, backend="numpy")
    with pytest.raises(ValueError, match="device cannot be chosen"):
        gd.richardson_lucy(device_image, psf, 2, device="cpu")
    with pytest.raises(ValueError, match="holdout"):
        gd.richardson_lucy(device_image, psf, "auto", stop="holdout")
    with pytest.raises(ValueError, match="boundary='estimate'"):
        gd.richardson_lucy(device_image, psf, 2, boundary="estimate", init="observed")
    broken = image.copy()
    broken[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        gd.richardson_lucy(to_device(queue, broken), psf, 2)
    with pytest.raises(ValueError, match="shape"):
        gd.richardson_lucy(device_image, psf, 2, mask=to_device(queue, np.ones((4, 4), bool)))
    with pytest.raises(TypeError, match="boolean"):
        gd.richardson_lucy(device_image, psf, 2, mask=to_device(queue, np.full((20, 20), 0.5)))
    with pytest.raises(ValueError, match="excludes every voxel"):
        gd.richardson_lucy(device_image, psf, 2, mask=to_device(queue, np.zeros((20, 20), bool)))
    with pytest.raises(TypeError, match="real numeric dtype"):
        gd.richardson_lucy(to_device(queue, np.ones((8, 8), bool)), psf, 2)
    negative = image.copy()
    negative[0, 0] = -3.0
    with pytest.warns(UserWarning, match="negative values"):
        clipped = gd.richardson_lucy(to_device(queue, negative), psf, 0)
    assert float(clipped.get()[0, 0]) == 0.0
    # Other dtypes are converted on the device, as NumPy images are on the host.
    counts = gd.richardson_lucy(to_device(queue, image.astype(np.uint16)), psf, 3)
    assert rel_rms(counts.get(), gd.richardson_lucy(image, psf, 3, backend="numpy")) < 1e-5


def test_statistics_match_numpy_in_one_pass(queue):
    # OpenCLBackend.statistics: the driver's validation and start on a device image.
    from gpu_deconv._device_io import backend_for

    rng = np.random.default_rng(9)
    x = (rng.standard_normal((30, 41)) * 50).astype(np.float32)
    x[3, 4], x[7, 8] = np.nan, np.inf
    mask = (rng.random(x.shape) > 0.3).astype(np.float32)
    other = rng.random(x.shape).astype(np.float32) * 20
    device = to_device(queue, x)
    be = backend_for(device, "auto", None)
    found = be.statistics(device, to_device(queue, mask), to_device(queue, other), 2.5, 30.0)
    finite = np.isfinite(x)
    kept = finite & (mask > 0)
    assert found.nonfinite == 2 and found.kept == int(kept.sum())
    assert found.sum == pytest.approx(float(x[kept].astype(np.float64).sum()), rel=1e-12)
    assert (found.min, found.max) == (float(x[finite].min()), float(x[finite].max()))
    assert found.dim == int(((x > 0) & (x < 30) & finite).sum())
    assert found.above == int((x > other + np.float32(2.5))[finite].sum())
