"""gd.wiener and gd.tikhonov: against independent float64 references, peers and each backend."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import BOUNDARIES, rel_rms, require_backend
from filter_reference import dense_tikhonov, extended_filter, itk_wiener

import gpu_deconv as gd
from gpu_deconv.backends._base import BlurSpec, FilterSpec
from gpu_deconv.backends._filter_planning import filter_geometry
from gpu_deconv.psf import gaussian_psf

# float64 NumPy against the float64 references: rounding of FFTs on a few thousand voxels
# (measured at most 2e-14 relative RMS).
REF_RTOL = 1e-11
# OpenCL (float32) against float64 NumPy: measured 1.5e-7 to 5.3e-7 relative RMS.
OPENCL_RTOL = 2e-6

SYMMETRIC = gaussian_psf((7, 9), (1.2, 1.5))
# Even lengths and an off-centre peak: no DCT, the real FFT of the extension instead.
ASYMMETRIC = np.pad(SYMMETRIC, ((0, 1), (1, 0)))
ASYMMETRIC[2, 3] += 0.05


def scene(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random(shape) * 10


def noisy(shape, psf, sigma, seed=1):
    rng = np.random.default_rng(seed)
    blurred = gd.convolve(scene(shape, seed), psf, backend="numpy", normalize_psf=True)
    return blurred + rng.normal(0, sigma, shape)


FILTERS = [
    pytest.param(dict(lam=3e-3, regularizer="identity"), id="tikhonov-identity"),
    pytest.param(dict(lam=1e-2, regularizer="laplacian"), id="tikhonov-laplacian"),
    pytest.param(dict(noise_variance=0.02), id="wiener-noise"),
]


def ours(image, psf, boundary, backend="numpy", dtype=None, **kw):
    if "noise_variance" in kw:
        return gd.wiener(image, psf, noise_variance=kw["noise_variance"], boundary=boundary,
                         backend=backend, dtype=dtype)  # fmt: skip
    return gd.tikhonov(image, psf, kw["lam"], regularizer=kw["regularizer"], boundary=boundary,
                       backend=backend, dtype=dtype)  # fmt: skip


@pytest.mark.parametrize("kw", FILTERS)
@pytest.mark.parametrize("psf", [SYMMETRIC, ASYMMETRIC], ids=["symmetric", "asymmetric"])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_numpy_equals_extended_reference(boundary, psf, kw):
    image = noisy((23, 30), SYMMETRIC, 0.1)
    expected = extended_filter(image, psf, boundary, **kw)
    assert rel_rms(ours(image, psf, boundary, **kw), expected) <= REF_RTOL


@pytest.mark.parametrize("kw", FILTERS)
@pytest.mark.parametrize("boundary", ["reflect", "mirror", "nearest", "wrap"])
def test_3d_and_flat_axes_equal_reference(boundary, kw):
    """3D, and an axis of one voxel (only scaled by the PSF there, no Laplacian along it)."""
    psf3 = gaussian_psf((5, 5, 7), (1.0, 1.0, 1.5))
    image = noisy((8, 11, 12), psf3, 0.1)
    expected = extended_filter(image, psf3, boundary, **kw)
    assert rel_rms(ours(image, psf3, boundary, **kw), expected) <= REF_RTOL
    flat = noisy((1, 20, 24), gaussian_psf((1, 7, 7), (1.0, 1.5, 1.5)), 0.1)
    psf_flat = gaussian_psf((1, 7, 7), (1.0, 1.5, 1.5))
    expected = extended_filter(flat, psf_flat, boundary, **kw)
    assert rel_rms(ours(flat, psf_flat, boundary, **kw), expected) <= REF_RTOL


@pytest.mark.parametrize("regularizer", ["identity", "laplacian"])
@pytest.mark.parametrize("shape", [(17,), (9, 12)])
@pytest.mark.parametrize("boundary", ["wrap", "reflect"])
def test_tikhonov_is_the_dense_minimiser(boundary, shape, regularizer):
    """wrap, and reflect with a symmetric PSF: exactly argmin ||Hf - g||^2 + lam ||Rf||^2."""
    psf = gaussian_psf((5,) * len(shape), 1.2)
    image = scene(shape)
    expected = dense_tikhonov(image, psf, 1e-3, boundary, regularizer)
    result = gd.tikhonov(
        image, psf, 1e-3, regularizer=regularizer, boundary=boundary, backend="numpy"
    )
    assert rel_rms(result, expected) <= 1e-10


@pytest.mark.opencl
@pytest.mark.parametrize("kw", FILTERS)
@pytest.mark.parametrize("psf", [SYMMETRIC, ASYMMETRIC], ids=["symmetric", "asymmetric"])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_opencl_equals_numpy(boundary, psf, kw):
    require_backend("opencl")
    image = noisy((24, 30), SYMMETRIC, 0.1).astype(np.float32)
    expected = ours(image, psf, boundary, dtype="float64", **kw)
    result = ours(image, psf, boundary, backend="opencl", **kw)
    assert result.dtype == np.float32
    assert rel_rms(result, expected) <= OPENCL_RTOL


@pytest.mark.opencl
def test_opencl_3d_dct_and_fft():
    require_backend("opencl")
    psf3 = gaussian_psf((5, 5, 7), (1.0, 1.0, 1.5))
    image = noisy((8, 12, 15), psf3, 0.1).astype(np.float32)
    for boundary in ("reflect", "nearest"):
        expected = gd.wiener(image, psf3, 1e-2, boundary=boundary, dtype="float64", backend="numpy")
        result = gd.wiener(image, psf3, 1e-2, boundary=boundary, backend="opencl")
        assert rel_rms(result, expected) <= OPENCL_RTOL


@pytest.mark.parametrize("noise_variance", [None, 0.1])
@pytest.mark.parametrize("boundary, psf", [("reflect", SYMMETRIC), ("reflect", ASYMMETRIC),
                                           ("nearest", SYMMETRIC)])  # fmt: skip
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_memory_plan(dtype, boundary, psf, noise_variance):
    """The planned host memory covers the traced peak of preparing and applying a filter."""
    be = gd.get_backend("numpy")
    spec = FilterSpec(BlurSpec(psf, (96, 120), boundary, "fft", np.dtype(dtype)), "laplacian",
                      0.01, noise_variance)  # fmt: skip
    image = scene((96, 120)).astype(dtype)
    out = np.empty_like(image)
    tracemalloc.start()
    try:
        be.spectral_filter(spec).apply(image, out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    planned = be.plan_filter(spec).memory.total
    assert 0.6 * planned <= peak <= planned  # measured 0.8-1.0


# -- peers under their own conventions ----------------------------------------------------------


@pytest.mark.peers
@pytest.mark.parametrize("is_real", [True, False])
@pytest.mark.parametrize("shape, psf", [((40, 48), SYMMETRIC), ((10, 14, 17), None)])
def test_scikit_image_wiener(shape, psf, is_real):
    """skimage: circular on the image (our "wrap"), its Laplacian, ``balance``; no clip."""
    restoration = pytest.importorskip("skimage.restoration")
    psf = gaussian_psf((5, 5, 7), (1.0, 1.0, 1.5)) if psf is None else psf
    image = noisy(shape, psf, 0.1)
    theirs = restoration.wiener(image, psf, 0.05, is_real=is_real, clip=False)
    if not is_real:  # the full complex spectrum: a complex result with round-off imaginary part
        assert np.abs(theirs.imag).max() <= 1e-12 * np.abs(theirs.real).max()
        theirs = theirs.real
    result = gd.wiener(image, psf, 0.05, boundary="wrap", backend="numpy")
    assert rel_rms(result, theirs) <= 1e-12  # measured 5e-16


def _sitk(filter_name, image, psf, boundary, normalize=False, **settings):
    sitk = pytest.importorskip("SimpleITK")
    flt = getattr(sitk, filter_name)()
    for name, value in settings.items():
        getattr(flt, f"Set{name}")(value)
    flt.SetNormalize(normalize)
    flt.SetBoundaryCondition(getattr(flt, boundary))
    out = flt.Execute(sitk.GetImageFromArray(image), sitk.GetImageFromArray(psf))
    return sitk.GetArrayFromImage(out)


SITK_PADS = {"nearest": "ZERO_FLUX_NEUMANN_PAD", "constant": "ZERO_PAD"}


@pytest.mark.peers
@pytest.mark.parametrize("boundary", ["nearest", "constant"])
# (43, 71) + 2 * radius = (49, 77): 5-smooth lengths 50 and 80, split 0/1 and 1/2.
@pytest.mark.parametrize("shape", [(40, 48), (43, 71), (9, 13, 16)])
def test_simpleitk_tikhonov(shape, boundary):
    """SimpleITK pads by the radius, then to a 5-smooth length split evenly (ours too)."""
    psf = SYMMETRIC if len(shape) == 2 else gaussian_psf((5, 5, 7), (1.0, 1.0, 1.5))
    image = noisy(shape, psf, 0.1)
    raw = psf * 37.0  # its Normalize option against our normalize_psf
    theirs = _sitk(
        "TikhonovDeconvolutionImageFilter",
        image,
        raw,
        SITK_PADS[boundary],
        normalize=True,
        RegularizationConstant=0.01,
    )
    result = gd.tikhonov(image, raw, 0.01, boundary=boundary, backend="numpy")
    assert rel_rms(result, theirs) <= 1e-12  # measured 2e-15


@pytest.mark.peers
@pytest.mark.parametrize("amplitude, tol", [(100.0, 1e-6), (10.0, 2e-3)])
def test_simpleitk_wiener(amplitude, tol):
    """SimpleITK's NoiseVariance is P, the noise power per frequency of its unnormalised FFT.

    The formula of its source reproduces it to 1e-15 (which pins P and the padding). Ours
    differs only at frequencies where the data are at or below the noise level
    (``|G|^2 <= P``), which ours sets to 0 and SimpleITK divides by a negative power:
    measured 3e-7 relative RMS with the blurred scene's maximum 100 times the noise sigma,
    1e-3 at 10 times, 9e-3 at 1 time.
    """
    rng = np.random.default_rng(1)
    blurred = gd.convolve(scene((40, 48), 1) * amplitude, SYMMETRIC, backend="numpy")
    image = blurred + rng.normal(0, 1.0, blurred.shape)
    domain = filter_geometry(image.shape, SYMMETRIC.shape, "nearest").padded_shape
    power = 1.0 * np.prod(domain)  # P = M sigma^2
    theirs = _sitk(
        "WienerDeconvolutionImageFilter", image, SYMMETRIC, "ZERO_FLUX_NEUMANN_PAD",
        NoiseVariance=power,
    )  # fmt: skip
    assert rel_rms(itk_wiener(image, SYMMETRIC, power), theirs) <= 1e-12
    result = gd.wiener(image, SYMMETRIC, noise_variance=1.0, boundary="nearest", backend="numpy")
    expected = extended_filter(image, SYMMETRIC, "nearest", noise_variance=1.0)
    assert rel_rms(result, expected) <= REF_RTOL
    assert rel_rms(result, theirs) <= tol


# -- properties, scale and bad input ------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", [2.0**-100, 2.0**100])
def test_scale_equivariant(scale, dtype):
    """The power-of-two scaling is exact: a power-of-two scale gives bit-identical results."""
    image = noisy((24, 30), SYMMETRIC, 0.1)
    base = gd.tikhonov(image, SYMMETRIC, 1e-3, backend="numpy", dtype=dtype)
    wien = gd.wiener(image, SYMMETRIC, noise_variance=0.01, backend="numpy", dtype=dtype)
    scaled = gd.tikhonov(image * scale, SYMMETRIC, 1e-3, backend="numpy", dtype=dtype)
    np.testing.assert_array_equal(scaled / scale, base)
    scaled = gd.wiener(
        image * scale, SYMMETRIC, noise_variance=0.01 * scale**2, backend="numpy", dtype=dtype
    )
    np.testing.assert_array_equal(scaled / scale, wien)


def test_unnormalised_psf_scales_the_weights():
    """H = c H1: argmin ||c H1 f - g||^2 + c^2 lam ||f||^2 = argmin(H1, lam) / c."""
    image = noisy((24, 30), SYMMETRIC, 0.1)
    c = 3.0 * 2.0**70
    base = gd.tikhonov(image, SYMMETRIC, 1e-3, backend="numpy")
    raw = gd.tikhonov(image, SYMMETRIC * c, 1e-3 * c**2, backend="numpy", normalize_psf=False)
    assert rel_rms(raw * c, base) <= 1e-14
    # Wiener: L = c L1 in conj(L) S / (|L|^2 S + P); c = 96 keeps the division well posed.
    c = 96.0
    raw = gd.wiener(image, SYMMETRIC * c, noise_variance=0.01, backend="numpy", normalize_psf=False)
    expected = extended_filter(
        image, SYMMETRIC * c, "reflect", noise_variance=0.01, normalize=False
    )
    assert rel_rms(raw, expected) <= REF_RTOL


def test_linear_and_negative_values_kept():
    a, b = noisy((24, 30), SYMMETRIC, 0.1, seed=2), noisy((24, 30), SYMMETRIC, 0.1, seed=3)
    difference = gd.tikhonov(a - b, SYMMETRIC, 1e-3, backend="numpy")
    expected = gd.tikhonov(a, SYMMETRIC, 1e-3, backend="numpy") - gd.tikhonov(
        b, SYMMETRIC, 1e-3, backend="numpy"
    )
    assert (a - b).min() < 0
    assert rel_rms(difference, expected) <= 1e-13


def test_weak_regularization_inverts_the_blur():
    """A noise-free blur with a tiny weight comes back to the scene (wrap: no edge error)."""
    truth = gd.convolve(scene((32, 40)), gaussian_psf((5, 5), 0.8), backend="numpy")
    blurred = gd.convolve(truth, gaussian_psf((5, 5), 0.7), boundary="wrap", backend="numpy")
    restored = gd.tikhonov(blurred, gaussian_psf((5, 5), 0.7), 1e-10, boundary="wrap")
    assert rel_rms(restored, truth) <= 1e-4 < rel_rms(blurred, truth)


BAD = [
    (dict(regularization=0.0), ValueError, "regularization must be a positive"),
    (dict(regularization=-1.0), ValueError, "regularization must be a positive"),
    (dict(regularization=np.inf), ValueError, "regularization must be a positive"),
    (dict(regularization=np.nan), ValueError, "regularization must be a positive"),
    (dict(regularization="0.1"), TypeError, "regularization must be a real number"),
    (dict(regularization=True), TypeError, "regularization must be a real number"),
    (dict(regularizer="tv"), ValueError, "unknown regularizer 'tv'"),
    (dict(boundary="estimate"), ValueError, "boundary='estimate' has no direct filter"),
    (dict(boundary="periodic"), ValueError, "unknown boundary 'periodic'"),
    (dict(image=np.full((8, 8), np.nan)), ValueError, "image contains NaN"),
    (dict(psf=-np.ones((3, 3))), ValueError, "psf has negative values"),
    (dict(psf=np.ones(3)), ValueError, "psf must have the same number of dimensions"),
    (dict(backend="cuda"), ValueError, "unknown backend"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD)
def test_bad_input_tikhonov(kwargs, error, message):
    args = dict(image=np.ones((8, 8)), psf=np.ones((3, 3)), regularization=0.1, backend="numpy")
    args.update(kwargs)
    with pytest.raises(error, match=message):
        gd.tikhonov(args.pop("image"), args.pop("psf"), args.pop("regularization"), **args)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(), "exactly one of balance"),
        (dict(balance=0.1, noise_variance=1.0), "exactly one of balance"),
        (dict(noise_variance=1.0, regularizer="laplacian"), "regularizer applies with balance"),
        (dict(noise_variance=0.0), "noise_variance must be a positive"),
        (dict(balance=-0.1), "balance must be a positive"),
    ],
)
def test_bad_input_wiener(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gd.wiener(np.ones((8, 8)), np.ones((3, 3)), backend="numpy", **kwargs)


@pytest.mark.parametrize("dtype, weight", [("float32", 1e-8), ("float64", 1e-17)])
def test_weight_below_the_dtype_resolution_raises(dtype, weight):
    image = noisy((24, 30), SYMMETRIC, 0.1)
    with pytest.raises(ValueError, match=f"below what {dtype} resolves"):
        gd.tikhonov(image, SYMMETRIC, weight, backend="numpy", dtype=dtype)
    raw = SYMMETRIC * 1e3  # the weight is against the squared PSF sum (1e6)
    options = dict(backend="numpy", dtype=dtype, normalize_psf=False)
    with pytest.raises(ValueError, match="below what"):
        gd.tikhonov(image, raw, weight * 1e6, **options)
    assert np.isfinite(gd.tikhonov(image, raw, weight * 1e8, **options)).all()


def test_float32_overflow_raises():
    """A near-inverse filter of data near float32's top: a clear error, not inf."""
    image = noisy((24, 30), SYMMETRIC, 0.5) * 1e37
    with pytest.raises(ValueError, match="exceeds the float32 range"):
        gd.tikhonov(image, SYMMETRIC, 1e-6, backend="numpy", dtype="float32")


# -- tiles and dask -----------------------------------------------------------------------------

TILE_PSF = gaussian_psf((15, 15), 2.0)
INNER = (slice(30, -30), slice(30, -30))
# Default overlap (10 RMS widths = 20 voxels), tiles of 64x64 on 160x200, regularization 1e-2.
# Measured (relative RMS against the whole image): tiles 1.4e-5 (reflect) to 2.0e-5 (wrap),
# dask 1.8e-5 to 2.4e-5; 30 voxels inside the border every mode 1.3e-5 to 2.8e-5.
# nearest/constant differ more at the border itself (1.6e-3 / 5.5e-4): their padded domain
# wraps around the window, not the image.
TILE_RTOL = 5e-5


@pytest.fixture(scope="module")
def tile_image():
    return noisy((160, 200), TILE_PSF, 0.1)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_tiles_and_dask_match_whole(tile_image, boundary):
    da = pytest.importorskip("dask.array")
    import gpu_deconv.dask as gdd

    whole = gd.tikhonov(tile_image, TILE_PSF, 1e-2, boundary=boundary, backend="numpy")
    tiled = gd.tikhonov(
        tile_image, TILE_PSF, 1e-2, boundary=boundary, backend="numpy", tile_shape=(64, 64)
    )
    lazy = gdd.tikhonov(
        da.from_array(tile_image, chunks=(64, 64)), TILE_PSF, 1e-2, boundary=boundary,
        backend="numpy",
    ).compute(scheduler="synchronous")  # fmt: skip
    for result in (tiled, lazy):
        assert rel_rms(result[INNER], whole[INNER]) <= TILE_RTOL
        if boundary not in ("nearest", "constant"):
            assert rel_rms(result, whole) <= TILE_RTOL


def test_dask_wiener_and_opencl_tiles(tile_image):
    da = pytest.importorskip("dask.array")
    import gpu_deconv.dask as gdd

    whole = gd.wiener(tile_image, TILE_PSF, 1e-2, backend="numpy")
    lazy = gdd.wiener(da.from_array(tile_image, chunks=(64, 64)), TILE_PSF, 1e-2, backend="numpy")
    assert rel_rms(lazy.compute(scheduler="synchronous"), whole) <= 2e-4  # measured 6.9e-5


@pytest.mark.opencl
def test_opencl_tiles(tile_image):
    require_backend("opencl")
    image = tile_image.astype(np.float32)
    whole = gd.tikhonov(image, TILE_PSF, 1e-2, backend="numpy", dtype="float64")
    tiled = gd.tikhonov(image, TILE_PSF, 1e-2, backend="opencl", tile_shape=(64, 100))
    assert rel_rms(tiled, whole) <= TILE_RTOL


def test_noise_variance_is_never_tiled(tile_image):
    with pytest.raises(ValueError, match="is not tiled"):
        gd.wiener(tile_image, TILE_PSF, noise_variance=0.01, backend="numpy", tile_shape=(64, 64))
    with pytest.raises(ValueError, match="is not tiled"):
        gd.wiener(tile_image, TILE_PSF, noise_variance=0.01, backend="numpy", max_memory=2**20)


def test_max_memory_tiles_automatically(tile_image):
    whole = gd.tikhonov(tile_image, TILE_PSF, 1e-2, backend="numpy")
    capped = gd.tikhonov(tile_image, TILE_PSF, 1e-2, backend="numpy", max_memory=2**20)
    assert 0 < rel_rms(capped, whole) <= TILE_RTOL  # tiled (not bit-identical), and close
