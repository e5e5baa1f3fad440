"""Bad input gets a specific exception that names the argument."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import OPENCL, require_backend

import gpu_deconv as gd

IMG = np.ones((16, 16))
PSF = np.ones((3, 3)) / 9


def nan_image():
    a = IMG.copy()
    a[3, 3] = np.nan
    return a


def masked_nan(shape=(16, 16)):
    """NaN under the mask: np.isfinite skips masked entries, the raw data hold the NaN."""
    a = np.ones(shape)
    a[1, 1] = np.nan
    return np.ma.masked_invalid(a)


def point_source(peak):
    """A blurred point scaled to ``peak``: deconvolution sharpens it about 9x above that."""
    a = np.zeros((16, 16), np.float32)
    a[7:10, 7:10] = 1
    return a * np.float32(peak)


BAD_CALLS = [
    # (description, kwargs overriding image/psf/iterations/..., exception, message fragment)
    ("nan image", dict(image=nan_image()), ValueError, "image contains NaN"),
    ("inf psf", dict(psf=np.full((3, 3), np.inf)), ValueError, "psf contains NaN or infinite"),
    ("empty image", dict(image=np.ones((0, 4))), ValueError, "image is empty"),
    ("empty psf", dict(psf=np.ones((0, 3))), ValueError, "psf is empty"),
    ("scalar image", dict(image=np.float64(3.0)), ValueError, "image must be 1D, 2D or 3D"),
    (
        "4d image",
        dict(image=np.ones((2, 2, 2, 2)), psf=np.ones((1, 1, 1, 1))),
        ValueError,
        "image must be 1D, 2D or 3D",
    ),
    ("psf ndim", dict(psf=np.ones((3, 3, 3))), ValueError, "same number of dimensions"),
    ("zero psf", dict(psf=np.zeros((3, 3))), ValueError, "psf is all zeros"),
    ("negative psf", dict(psf=-np.ones((3, 3))), ValueError, "psf has negative values"),
    ("complex image", dict(image=IMG.astype(complex)), TypeError, "image must be real-valued"),
    ("bool image", dict(image=IMG.astype(bool)), TypeError, "image must have a real numeric dtype"),
    (
        "string image",
        dict(image=np.array([["a", "b"], ["c", "d"]])),
        TypeError,
        "image must have a real numeric dtype",
    ),
    ("object psf", dict(psf=np.array([[None]])), TypeError, "psf must have a real numeric dtype"),
    ("negative iterations", dict(iterations=-1), ValueError, "iterations must be >= 0"),
    ("float iterations", dict(iterations=2.5), TypeError, "iterations must be an integer"),
    ("bool iterations", dict(iterations=True), TypeError, "iterations must be an integer"),
    (
        "unknown backend",
        dict(backend="cuda"),
        ValueError,
        "unknown backend 'cuda'; available: auto",
    ),
    (
        "unknown method",
        dict(method="wiener"),
        ValueError,
        "unknown method 'wiener'; allowed: auto, fft, separable, spatial",
    ),
    (
        "unknown boundary",
        dict(boundary="periodic"),
        ValueError,
        "unknown boundary 'periodic'; allowed: reflect, nearest, mirror, wrap, constant",
    ),
    (
        "unknown init",
        dict(init="zeros"),
        ValueError,
        "unknown init 'zeros'; allowed: observed, mean",
    ),
    ("zero init", dict(init=0.0), ValueError, "init must be a positive finite number"),
    ("init shape", dict(init=np.ones((4, 4))), ValueError, "init must have the image's shape"),
    ("negative init", dict(init=-IMG), ValueError, "init has negative values"),
    ("nan init", dict(init=nan_image()), ValueError, "init contains NaN"),
    ("init type", dict(init=object()), TypeError, "init must be 'observed', 'mean'"),
    ("negative eps", dict(eps=-1.0), ValueError, "eps must be a finite number >= 0"),
    (
        "snapshot too big",
        dict(snapshots=[5, 20]),
        ValueError,
        "snapshots must lie in [0, iterations=10]",
    ),
    ("snapshot string", dict(snapshots="10"), TypeError, "snapshots must be a sequence"),
    ("empty snapshots", dict(snapshots=[]), ValueError, "snapshots is empty"),
    ("bad dtype", dict(dtype="float16"), TypeError, "dtype must be float32 or float64"),
    ("int dtype", dict(dtype=int), TypeError, "dtype must be float32 or float64"),
    (
        "separable on non-rank-one",
        dict(psf=np.eye(3), method="separable"),
        ValueError,
        "needs a separable",
    ),
    ("device on numpy", dict(device="gpu"), ValueError, "device is only meaningful"),
    ("callback not callable", dict(callback=3), TypeError, "callback must be callable"),
    (
        "mean init of zero image",
        dict(image=np.zeros((16, 16)), init="mean"),
        ValueError,
        "positive mean",
    ),
    # Issue 15, item 2: NaN under a mask, values beyond float32, overflowing starts.
    ("masked image", dict(image=masked_nan()), TypeError, "image is a numpy masked array"),
    ("masked psf", dict(psf=masked_nan((3, 3))), TypeError, "psf is a numpy masked array"),
    ("masked init", dict(init=masked_nan()), TypeError, "init is a numpy masked array"),
    (
        "float64 image beyond float32",
        dict(image=IMG * 1e39, dtype="float32"),
        ValueError,
        "image has values up to 1e+39, beyond the float32 range",
    ),
    (
        "float64 image below float32",
        dict(image=IMG * 1e-50, dtype="float32"),
        ValueError,
        "image has values only up to 1e-50, below the float32 range",
    ),
    (
        "float64 init beyond float32",
        dict(init=IMG * 1e39, dtype="float32"),
        ValueError,
        "init has values up to 1e+39, beyond the float32 range",
    ),
    ("huge init", dict(init=1e300), ValueError, "init reaches 1e+300, more than"),
    ("huge init array", dict(init=IMG * 1e30, dtype="float32"), ValueError, "init reaches 1e+30"),
    ("tiny init", dict(init=1e-30), ValueError, "init reaches only 1e-30"),
    ("all-zero init", dict(init=np.zeros((16, 16))), ValueError, "init is all zeros"),
    (
        "result beyond float32",
        dict(image=point_source(3e38)),
        ValueError,
        "the result exceeds the float32 range",
    ),
    # Issue 15, item 8: misleading messages.
    (
        "int device",
        dict(device=0),
        TypeError,
        "device must be a device name substring (str) or None, got int 0; for the k-th "
        "device pass device='#0'",
    ),
    (
        "max_memory of one byte",
        dict(max_memory=1, tile_shape=None),
        MemoryError,
        "over max_memory=1 (1 byte; max_memory is in bytes)",
    ),
    # Issue 23, item 9: messages that named the wrong thing.
    (
        "subnormal float64 image",
        dict(image=np.full((16, 16), 1e-310), dtype="float64"),
        ValueError,
        "below the float64 normal range",
    ),
    (
        "read noise swamping the image",
        dict(read_noise=1e20),
        ValueError,
        "read_noise**2 = 1e+40 swamps image",
    ),
    (
        "estimate's default start on a dark image",
        dict(image=np.zeros((16, 16)), boundary="estimate"),
        ValueError,
        "init='mean' (also the default start of boundary='estimate')",
    ),
]
# Cases whose arguments only the NumPy backend reaches (the others run on every backend).
NUMPY_ONLY = {"device on numpy", "subnormal float64 image"}


def _bad_input_params():
    for name, overrides, exc, fragment in BAD_CALLS:
        for backend in ("numpy", OPENCL):
            if backend != "numpy" and (name in NUMPY_ONLY or "backend" in overrides):
                continue
            marks = backend.marks if backend != "numpy" else ()
            label = backend if backend == "numpy" else "opencl"
            yield pytest.param(label, overrides, exc, fragment, marks=marks, id=f"{label}-{name}")


@pytest.mark.parametrize("backend, overrides, exc, fragment", list(_bad_input_params()))
def test_bad_input_raises_named_error(backend, overrides, exc, fragment):
    require_backend(backend)
    kwargs = dict(image=IMG, psf=PSF, iterations=10, backend=backend)
    kwargs.update(overrides)
    if backend != "numpy" and kwargs.get("dtype") == "float64":
        kwargs["dtype"] = "float32"
    with pytest.raises(exc) as info:
        gd.richardson_lucy(**kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("overrides", [dict(image=masked_nan()), dict(device=0)])
def test_dask_entry_refuses_the_same(overrides):
    kwargs = dict(image=IMG, psf=PSF, iterations=3, backend="numpy")
    kwargs.update(overrides)
    with pytest.raises(TypeError):
        import gpu_deconv.dask as gdd

        gdd.richardson_lucy(**kwargs)


@pytest.mark.parametrize("backend", ["numpy", OPENCL])
def test_tv_on_a_dark_image_gives_zeros_as_plain_rl_does(backend):
    require_backend(backend)
    dark = np.zeros((16, 16))
    plain = gd.richardson_lucy(dark, PSF, 3, backend=backend)
    tv = gd.richardson_lucy(dark, PSF, 3, backend=backend, regularization=1e-3)
    assert not plain.any() and not tv.any()


def test_bad_model_psf_and_output_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="spacing is in micrometres: 100 is over 10 um"):
        gd.psf.widefield_psf((33, 33), spacing=100, wavelength=0.52, na=1.2)
    with pytest.raises(ValueError, match="refractive_index must be a medium's index"):
        gd.psf.widefield_psf((33, 33), spacing=0.1, wavelength=0.52, na=0.3, refractive_index=0.5)
    with pytest.raises(MemoryError, match="a model PSF of shape 2001x2001x2001 needs about"):
        gd.psf.widefield_psf((2001,) * 3, spacing=(0.3, 0.1, 0.1), wavelength=0.52, na=1.2)
    from gpu_deconv.io import write_tiff
    from gpu_deconv.stack_io import create_stack

    for data, voxel, exc, fragment in [
        (np.zeros((4, 4)), (1.0,), ValueError, "voxel_size must be positive numbers"),
        (np.zeros((4, 4)), "x", TypeError, "voxel_size must be numbers"),
        (np.zeros((0, 4)), None, ValueError, "non-empty 1D, 2D or 3D"),
        (np.zeros((4, 4), complex), None, TypeError, "boolean, integer or real"),
    ]:
        with pytest.raises(exc, match=fragment):
            write_tiff(tmp_path / "out.tif", data, voxel)
    for shape, axes, extra, exc, fragment in [
        ((2, 3, 4), "QYX", {}, ValueError, "distinct letters"),
        ((0, 3, 4), "ZYX", {}, ValueError, "shape must be positive lengths"),
        ((2, 3, 4), "ZYX", {"spacing": (1.0,)}, ValueError, "spacing must be 3 positive"),
        ((2, 3, 4, 5), "CZYX", {"channel_names": ["a"]}, ValueError, "name 2 channels"),
    ]:
        with (
            pytest.raises(exc, match=fragment),
            create_stack(tmp_path / "stack.tif", shape, "float32", axes=axes, **extra),
        ):
            pass
    assert not list(tmp_path.iterdir())  # nothing left behind
    gdd = pytest.importorskip("gpu_deconv.dask")
    with pytest.raises(ValueError, match="noise_variance is not offered chunk by chunk"):
        gdd.wiener(np.ones((16, 16)), PSF, noise_variance=1.0)


def test_negative_image_values_are_clipped_with_warning():
    image = IMG.copy()
    image[0, 0] = -5
    with pytest.warns(UserWarning, match="image has negative values") as record:
        result = gd.richardson_lucy(image, PSF, 0, backend="numpy")
    assert record[0].filename == __file__  # the warning points at the caller
    assert result[0, 0] == 0 and (result >= 0).all()


def test_psf_round_off_negatives_are_zeroed():
    psf = PSF.copy()
    psf[0, 0] = -1e-20  # as in a background-subtracted measured PSF
    expected = PSF.copy()
    expected[0, 0] = 0
    result = gd.richardson_lucy(IMG, psf, 3, backend="numpy")
    np.testing.assert_array_equal(result, gd.richardson_lucy(IMG, expected, 3, backend="numpy"))
    psf[0, 0] = -1e-3
    with pytest.raises(ValueError, match="psf has negative values"):
        gd.richardson_lucy(IMG, psf, 3, backend="numpy")


def test_input_arrays_are_not_modified():
    image = IMG.copy()
    image[0, 0] = -1
    psf = PSF * 3
    with pytest.warns(UserWarning):
        gd.richardson_lucy(image, psf, 2, backend="numpy")
    assert image[0, 0] == -1 and np.all(psf == PSF * 3)


@pytest.mark.parametrize("func", [gd.convolve, gd.correlate])
def test_blur_validates_like_richardson_lucy(func):
    with pytest.raises(ValueError, match="unknown boundary"):
        func(IMG, PSF, backend="numpy", boundary="clamp")
    with pytest.raises(ValueError, match="same number of dimensions"):
        func(IMG, np.ones(3), backend="numpy")


def test_choose_method_validates():
    with pytest.raises(ValueError, match="shape must hold positive lengths"):
        gd.choose_method((0, 4), PSF)
    with pytest.raises(ValueError, match="unknown backend"):
        gd.choose_method((8, 8), PSF, backend="vulkan")


def test_submodules_load_on_first_use():
    import subprocess
    import sys

    code = (
        "import sys, gpu_deconv as gd; assert 'gpu_deconv.io' not in sys.modules; "
        "assert gd.io.read_tiff and gd.tiling and gd.stack and gd.samples; "
        "assert gd.io is sys.modules['gpu_deconv.io']"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import gpu_deconv as gd

        gd.nope  # noqa: B018
