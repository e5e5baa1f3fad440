"""The noise model: background kept in the denominator, read noise as a variance shift.

Against the independent float64 reference of ``model_reference`` (scipy.ndimage, dense
matrices for estimated edges), on both backends.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blob_image, make_psf, rel_rms
from model_reference import model_rl

import gpu_deconv as gd

# Relative RMS against the float64 reference: float64 round-off, float32 round-off.
TOLERANCE = {"float64": 1e-12, "float32": 5e-6}


def _poisson(shape, background, seed=0, photons=200.0):
    truth = blob_image(shape, seed=seed) * photons
    psf = make_psf((5,) * len(shape), "gaussian")
    mean = gd.convolve(truth, psf, backend="numpy") + background
    return np.random.default_rng(seed).poisson(mean).astype(np.float64), psf, truth


@pytest.mark.parametrize("map_background", [False, True])
@pytest.mark.parametrize("boundary", ["reflect", "wrap", "estimate"])
def test_background_matches_the_reference(backend_dtype, boundary, map_background):
    backend, dtype = backend_dtype
    image, psf, _ = _poisson((23, 26), 8.0)
    background = 8.0
    if map_background:
        background = np.linspace(4.0, 12.0, image.size).reshape(image.shape)
    mask = image < np.quantile(image, 0.97)  # the brightest voxels "saturated"
    kwargs = dict(boundary=boundary, mask=mask, background=background, read_noise=1.5)
    if boundary == "estimate":
        kwargs["margin"] = 2
    init = "mean" if boundary == "estimate" else "observed"
    expected = model_rl(
        image, psf, 12, boundary, ((2, 2), (2, 2)), mask, background, 1.5, init=init
    )
    result = gd.richardson_lucy(image, psf, 12, backend=backend, dtype=dtype, init=init, **kwargs)
    assert rel_rms(result, expected) < TOLERANCE[dtype.name]


def test_background_is_not_plain_rl_on_the_data(image2d):
    psf = make_psf((5, 5), "gaussian")
    with_background = gd.richardson_lucy(image2d, psf, 10, backend="numpy", background=0.04)
    plain = gd.richardson_lucy(image2d, psf, 10, backend="numpy")
    assert rel_rms(with_background, plain) > 1e-3  # the model changes the estimate


def test_result_excludes_the_background():
    # A flat scene of 0 photons under a background of 50: the object is ~0, not ~50.
    image = np.random.default_rng(3).poisson(50.0, (40, 40)).astype(float)
    psf = make_psf((5, 5), "gaussian")
    result = gd.richardson_lucy(image, psf, 30, backend="numpy", background=50.0, init="mean")
    assert result.mean() < 0.1 * 50.0
    assert gd.richardson_lucy(image, psf, 30, backend="numpy").mean() == pytest.approx(50, 0.01)


def test_the_psf_scale_does_not_matter_with_a_background():
    # As in plain Richardson-Lucy, the model's H is the PSF normalised to sum 1.
    image, psf, _ = _poisson((20, 22), 5.0, seed=4)
    result = gd.richardson_lucy(
        image, psf * 3.0, 8, backend="numpy", normalize_psf=False, background=5.0
    )
    assert rel_rms(result, model_rl(image, psf, 8, background=5.0)) < 1e-12


@pytest.mark.parametrize("total", [1 - 2**-40, 1 + 2**-40])
def test_a_psf_summing_to_just_under_or_over_one(total):
    # Normalised PSFs sum to 1 within an ulp; the driver's power-of-two scaling of the PSF
    # (by 2 when the sum is just below 1) must not change the background model.
    image, psf, _ = _poisson((20, 22), 5.0, seed=5)
    result = gd.richardson_lucy(
        image, psf * total, 8, backend="numpy", normalize_psf=False, background=5.0
    )
    assert rel_rms(result, model_rl(image, psf, 8, background=5.0)) < 1e-10


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(background=-1.0), "background must be a finite number >= 0"),
        (dict(background=np.ones((3, 3))), "background must have the image's shape"),
        (dict(background=np.full((16, 16), np.nan)), "finite and >= 0"),
        (dict(background="dark"), "background must be a number or an array"),
        (dict(read_noise=-1.0), "read_noise must be a finite number >= 0"),
        (dict(read_noise=True), "read_noise must be a number"),
    ],
)
def test_bad_noise_parameters_are_refused(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        gd.richardson_lucy(np.ones((16, 16)), np.ones((3, 3)), 2, backend="numpy", **kwargs)


def test_read_noise_shift_keeps_slightly_negative_data():
    # Offset-subtracted camera data dip below 0; with read noise those values are kept
    # (shifted by sigma^2) rather than clipped, and only values below -sigma^2 warn.
    image = np.random.default_rng(6).normal(20.0, 3.0, (24, 24))
    image[0, 0] = -2.0
    psf = make_psf((5, 5), "gaussian")
    result = gd.richardson_lucy(image, psf, 5, backend="numpy", read_noise=2.0)
    expected = model_rl(image, psf, 5, read_noise=2.0)
    assert rel_rms(result, expected) < 1e-12
    with pytest.warns(UserWarning, match="below -read_noise"):
        gd.richardson_lucy(image - 10, psf, 1, backend="numpy", read_noise=2.0)


def test_background_with_tiles_and_dask_equals_whole(backend):
    image, psf, _ = _poisson((40, 44), 6.0, seed=7)
    background = np.linspace(3.0, 9.0, image.size).reshape(image.shape)
    kwargs = dict(backend=backend, background=background, read_noise=1.0)
    whole = gd.richardson_lucy(image, psf, 10, tile_shape=None, **kwargs)
    tiled = gd.richardson_lucy(image, psf, 10, tile_shape=(20, 22), overlap=10, **kwargs)
    assert rel_rms(tiled, whole) < 3e-4
    from gpu_deconv.dask import richardson_lucy as dask_rl

    lazy = dask_rl(image, psf, 10, chunks=(20, 22), overlap=10, **kwargs)
    assert rel_rms(lazy.compute(), whole) < 3e-4


@pytest.mark.parametrize("as_map", [False, True])
def test_a_background_above_every_value_warns_at_the_call(as_map):
    image = np.random.default_rng(1).poisson(20.0, (24, 24)).astype(np.float32)
    psf = make_psf((5, 5), "gaussian")
    level = float(image.max()) + 1
    background = np.full(image.shape, level) if as_map else level
    with pytest.warns(UserWarning, match="is at or above .* no light is left") as caught:
        gd.richardson_lucy(image, psf, 2, backend="numpy", background=background)
    assert caught[0].filename == __file__
    # one value above the background is enough light: no warning (filterwarnings=error)
    gd.richardson_lucy(image, psf, 2, backend="numpy", background=float(image.max()) - 0.5)


def test_dark_chunks_and_volumes_do_not_warn_of_the_background(tmp_path):
    import warnings

    da = pytest.importorskip("dask.array")
    import gpu_deconv.dask as gdd
    from gpu_deconv.stack import deconvolve_stack

    image = np.zeros((48, 48), np.float32)
    image[:16, :16] = np.random.default_rng(2).poisson(30.0, (16, 16))  # light in one corner
    psf = make_psf((5, 5), "gaussian")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lazy = gdd.richardson_lucy(
            da.from_array(image, chunks=16), psf, 2, backend="numpy", background=5.0
        )
        lazy.compute(scheduler="synchronous")
        stack = np.stack([image, np.zeros_like(image)])
        deconvolve_stack(stack, [psf], 2, axes="TYX", backend="numpy", background=5.0)
    assert not [w for w in caught if "no light" in str(w.message)]


def test_dask_observed_start_with_read_noise_takes_the_whole_images_floor():
    """The start's floor (1% of the mean) is the whole image's, not each chunk's own."""
    from gpu_deconv.dask import richardson_lucy as dask_rl

    rng = np.random.default_rng(3)
    dark, bright = rng.poisson(0.2, (40, 22)), rng.poisson(80.0, (40, 22))
    image = np.concatenate([dark, bright], axis=1).astype(np.float64)
    psf = make_psf((5, 5), "gaussian")
    kwargs = dict(backend="numpy", read_noise=2.0)
    whole = gd.richardson_lucy(image, psf, 10, tile_shape=None, **kwargs)
    lazy = dask_rl(image, psf, 10, chunks=(40, 22), overlap=10, **kwargs).compute()
    assert rel_rms(lazy, whole) < 1e-6  # each chunk's floor had made 8e-4
    # iterations="auto" runs the central chunk with the same start
    auto = dict(chunks=(40, 22), overlap=10, stop="relative", return_info=True, **kwargs)
    _, info = dask_rl(image, psf, "auto", **auto)
    assert info.iterations >= 1 and info.rule_met
