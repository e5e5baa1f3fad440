"""boundary="estimate" (Bertero-Boccacci edges) and masks against a dense float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import RL_RTOL, blob_image, make_psf, oracle_rl, rel_rms, require_backend
from estimate_reference import estimate_rl

import gpu_deconv as gd
from gpu_deconv import _validation as v
from gpu_deconv._model import build_model
from gpu_deconv.algorithms import RichardsonLucy
from gpu_deconv.backends import get_backend
from gpu_deconv.backends._base import BlurSpec

CASES = [
    ((23,), (5,), "gaussian"),
    ((17, 20), (5, 7), "gaussian"),
    ((17, 20), (6, 7), "random"),  # even PSF lengths: origin n // 2
    ((8, 9, 10), (3, 5, 4), "random"),
]


def sparse_mask(shape, seed=0):
    """About 10% of the voxels excluded, scattered (a well-posed masked problem)."""
    return np.random.default_rng(seed).random(shape) > 0.1


def max_rel(result, expected):
    return float(np.abs(np.asarray(result, np.float64) - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("shape, psf_shape, kind", CASES)
@pytest.mark.parametrize("margin", ["full", "half", 1])
@pytest.mark.parametrize("masked", [False, True])
def test_estimate_matches_the_dense_reference(
    backend_dtype, shape, psf_shape, kind, margin, masked
):
    name, dtype = backend_dtype
    image = blob_image(shape, seed=3)
    psf = make_psf(psf_shape, kind)
    mask = sparse_mask(shape) if masked else None
    expected, _ = estimate_rl(image, psf, 10, v.check_margin(margin, psf_shape), mask)
    result = gd.richardson_lucy(
        image.astype(dtype), psf, 10, backend=name, boundary="estimate", margin=margin, mask=mask
    )
    assert result.shape == shape and result.dtype == dtype
    assert rel_rms(result, expected) <= RL_RTOL[dtype]
    assert max_rel(result, expected) <= 2 * RL_RTOL[dtype]


# The modes whose correlation is the exact adjoint of their convolution (not reflect, nearest,
# mirror: their H^T is scipy.ndimage's correlation under the same mode, by definition).
@pytest.mark.parametrize("boundary", ["estimate", "wrap", "constant"])
def test_observed_flux_is_kept_after_every_iteration(backend_dtype, boundary):
    """Sum over observed voxels of H f_k equals the sum of g there, after every iteration."""
    name, dtype = backend_dtype
    image = blob_image((18, 21, 16), seed=4).astype(dtype)
    psf = make_psf((5, 7, 5), "random")
    mask = sparse_mask(image.shape, seed=1)
    be = get_backend(name)
    margins = v.check_margin("full", psf.shape) if boundary == "estimate" else ()
    spec = BlurSpec(psf, image.shape, boundary, "fft", dtype, margins)
    operator = be.blur_operator(spec)
    model = build_model(be, operator, spec, image, float(image[mask].mean()), mask, 1e-12)
    algorithm = RichardsonLucy(model)
    blurred = be.empty(image.shape, dtype)
    target = float(image[mask].sum(dtype=np.float64))
    for _ in range(8):
        algorithm.step()
        operator.convolve(algorithm.estimate, out=blurred)
        observed = be.to_numpy(blurred)[mask].sum(dtype=np.float64)
        assert abs(observed - target) <= 10 * np.finfo(dtype).eps * target


@pytest.mark.parametrize("boundary", ["estimate", "reflect", "constant"])
def test_masked_voxels_do_not_matter(backend, boundary):
    image = blob_image((24, 30), seed=5).astype(np.float32)
    mask = sparse_mask(image.shape, seed=2)
    corrupted = image.copy()
    corrupted[~mask] = 1e3  # saturated, hot or dead: anything
    psf = make_psf((5, 5), "gaussian")
    kwargs = dict(backend=backend, boundary=boundary, mask=mask, init="mean")
    clean = gd.richardson_lucy(image, psf, 10, **kwargs)
    assert rel_rms(gd.richardson_lucy(corrupted, psf, 10, **kwargs), clean) <= 1e-6


def test_a_full_mask_with_a_same_shape_mode_is_plain_rl():
    image = blob_image((20, 26), seed=6)
    psf = make_psf((5, 5), "random")
    full = np.ones(image.shape, bool)
    for boundary in ("reflect", "wrap", "nearest"):
        result = gd.richardson_lucy(image, psf, 10, backend="numpy", boundary=boundary, mask=full)
        assert rel_rms(result, oracle_rl(image, psf, 10, boundary)) <= 1e-12


def test_large_holes_are_not_estimated_and_come_back_zero(backend):
    image = blob_image((40, 40), seed=7).astype(np.float32)
    mask = np.ones(image.shape, bool)
    mask[10:30, 10:30] = False  # 20 px wide, PSF 5 px: the hole's centre is unobservable
    result = gd.richardson_lucy(image, make_psf((5, 5), "gaussian"), 5, backend=backend, mask=mask)
    assert (result[18:22, 18:22] == 0).all() and (result[mask] > 0).all()


def test_estimate_start_and_default_init():
    image = blob_image((16, 18), seed=8)
    psf = make_psf((5, 5), "gaussian")
    full = v.check_margin("full", psf.shape)
    flat, _ = estimate_rl(image, psf, 4, full)
    assert (
        rel_rms(gd.richardson_lucy(image, psf, 4, backend="numpy", boundary="estimate"), flat)
        < 1e-12
    )
    # init=0 iterations returns the start cut to the image: flat at the observed mean.
    start = gd.richardson_lucy(image, psf, 0, backend="numpy", boundary="estimate")
    np.testing.assert_allclose(start, image.mean(), rtol=1e-15)
    observed = gd.richardson_lucy(
        image, psf, 0, backend="numpy", boundary="estimate", init="observed"
    )
    np.testing.assert_array_equal(observed, image)


@pytest.mark.parametrize("margin", ["full", (2, 1)])
def test_an_observed_start_grows_into_the_margin_by_its_edge_values(backend_dtype, margin):
    """init="observed" starts the margin at the nearest edge voxel's value (np.pad "edge")."""
    name, dtype = backend_dtype
    image = blob_image((16, 18), seed=8)
    psf = make_psf((5, 5), "random")
    margins = v.check_margin(margin, psf.shape)
    start = np.pad(image, margins, mode="edge").ravel()
    expected, _ = estimate_rl(image, psf, 4, margins, init=start)
    result = gd.richardson_lucy(
        image.astype(dtype),
        psf,
        4,
        backend=name,
        boundary="estimate",
        margin=margin,
        init="observed",
    )
    assert rel_rms(result, expected) <= RL_RTOL[dtype]
    reflected, _ = estimate_rl(
        image, psf, 4, margins, init=np.pad(image, margins, "symmetric").ravel()
    )
    assert rel_rms(reflected, expected) > 100 * RL_RTOL[dtype]  # the start is what is tested


@pytest.mark.parametrize(
    "kwargs, exc, fragment",
    [
        (dict(boundary="estimate", method="spatial"), ValueError, "method='fft'"),
        (dict(boundary="estimate", method="separable"), ValueError, "method='fft'"),
        (dict(boundary="estimate", margin="quarter"), ValueError, "unknown margin"),
        (dict(boundary="estimate", margin=(1, 2, 3)), ValueError, "margin must hold 2"),
        (dict(boundary="estimate", margin=-1), ValueError, ">= 0"),
        (dict(boundary="estimate", margin=1.5), TypeError, "margin must be"),
        (dict(boundary="reflect", margin="half"), ValueError, "boundary='estimate' only"),
        (dict(mask=np.ones((3, 3), bool)), ValueError, "mask must have the image's shape"),
        (dict(mask=np.zeros((12, 12), bool)), ValueError, "excludes every voxel"),
        (dict(mask=np.full((12, 12), 0.5)), TypeError, "mask must be boolean"),
        (dict(mask="yes"), TypeError, "mask must be boolean"),
    ],
)
def test_bad_estimate_and_mask_arguments(backend, kwargs, exc, fragment):
    with pytest.raises(exc, match=fragment):
        gd.richardson_lucy(np.ones((12, 12)), np.ones((3, 3)), 2, backend=backend, **kwargs)


def test_blur_functions_refuse_the_estimate_mode():
    with pytest.raises(ValueError, match="unknown boundary 'estimate'"):
        gd.convolve(np.ones((8, 8)), np.ones((3, 3)), boundary="estimate", backend="numpy")


@pytest.mark.parametrize("masked", [False, True])
def test_estimate_tiles_agree_with_the_whole_image(backend, masked):
    image = blob_image((48, 60, 52), seed=9).astype(np.float32)
    psf = make_psf((5, 7, 7), "gaussian")
    mask = sparse_mask(image.shape, seed=3) if masked else None
    kwargs = dict(backend=backend, boundary="estimate", mask=mask)
    whole = gd.richardson_lucy(image, psf, 10, tile_shape=None, **kwargs)
    tiled = gd.richardson_lucy(image, psf, 10, tile_shape=(24, 30, 26), **kwargs)
    assert rel_rms(tiled, whole) <= 1e-4 and max_rel(tiled, whole) <= 1e-3


@pytest.mark.parametrize("masked", [False, True])
def test_estimate_on_dask_agrees_with_the_whole_image(masked):
    import dask
    import dask.array as da

    from gpu_deconv.dask import richardson_lucy as dask_rl

    require_backend("numpy")
    image = blob_image((64, 70), seed=10).astype(np.float32)
    psf = make_psf((7, 7), "gaussian")
    mask = sparse_mask(image.shape, seed=4) if masked else None
    whole = gd.richardson_lucy(image, psf, 10, backend="numpy", boundary="estimate", mask=mask)
    lazy = dask_rl(
        da.from_array(image, chunks=32), psf, 10, backend="numpy", boundary="estimate", mask=mask
    )
    with dask.config.set(scheduler="sync"):
        result = lazy.compute()
    assert rel_rms(result, whole) <= 1e-4 and max_rel(result, whole) <= 1e-3


@pytest.mark.parametrize("scale", [1.0, 3.7, 1e30])
@pytest.mark.parametrize("kwargs", [dict(boundary="estimate"), dict(mask=True)])
def test_weighted_results_do_not_depend_on_the_psf_scale(backend, scale, kwargs):
    """A PSF normalised to 0.9999999999999999 (this one) once halved every weighted result:
    the weights must not follow the PSF's scale, exactly as plain RL does not."""
    from gpu_deconv.psf import gaussian_psf

    psf = gaussian_psf((25, 11, 11), (4.0, 1.5, 1.5))
    image = np.full((16, 32, 32), 50.0, np.float32)
    kwargs = dict(kwargs, backend=backend)
    if kwargs.pop("mask", False):
        kwargs["mask"] = np.ones(image.shape, bool)
    normalised = gd.richardson_lucy(image, psf, 3, **kwargs)
    scaled = gd.richardson_lucy(image, psf * scale, 3, normalize_psf=False, **kwargs)
    assert rel_rms(scaled, normalised) <= 1e-6
    # A flat scene stays flat away from the corners of the margin (w <= 1e-3 there).
    inner = normalised[4:-4, 4:-4, 4:-4]
    assert np.abs(inner - 50).max() <= 1e-3 * 50


def test_dask_takes_integer_masks_and_refuses_margins_of_other_modes():
    import dask
    import dask.array as da

    from gpu_deconv.dask import richardson_lucy as dask_rl

    image = blob_image((40, 48), seed=12).astype(np.float32)
    psf = make_psf((5, 5), "gaussian")
    mask = np.ones(image.shape, np.uint8)
    mask[5:9, 5:9] = 0
    lazy = dask_rl(
        da.from_array(image, chunks=(20, 24)),
        psf,
        8,
        backend="numpy",
        boundary="estimate",
        mask=mask,
    )
    with dask.config.set(scheduler="sync"):
        result = lazy.compute()
    whole = gd.richardson_lucy(image, psf, 8, backend="numpy", boundary="estimate", mask=mask)
    assert rel_rms(result, whole) <= 1e-4
    with pytest.raises(ValueError, match="boundary='estimate' only"):
        dask_rl(da.from_array(image), psf, 8, backend="numpy", margin="half")
