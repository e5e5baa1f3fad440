"""Dim regions under float32 FFTs (issue 15, item 9): measured error, and the warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import make_psf, rel_rms

import gpu_deconv as gd
from gpu_deconv._precision import DIM_FRACTION, DYNAMIC_RANGE_LIMIT, dim_fraction

PSF = make_psf((5, 7), "gaussian")


def two_level_image(dynamic_range):
    """Structure over the whole image; the right half ``dynamic_range`` times dimmer."""
    rng = np.random.default_rng(5)
    image = rng.random((37, 44)) + 0.2
    image[:, 22:] /= dynamic_range
    return image


def dim_error(result, reference):
    return rel_rms(result[:, 22:], reference[:, 22:])


@pytest.mark.parametrize("dynamic_range", [1e6, 1e10])
def test_float32_fft_loses_dim_regions_and_warns(backend, dynamic_range):
    image = two_level_image(dynamic_range)
    reference = gd.richardson_lucy(image, PSF, 20, backend="numpy", method="spatial")
    with pytest.warns(gd.PrecisionWarning, match="below 1/1e\\+05 of its maximum") as record:
        result = gd.richardson_lucy(image, PSF, 20, backend=backend, method="fft", dtype="float32")
    assert record[0].filename == __file__  # the warning points at the caller
    # Measured here: 8e-2 (NumPy) and 5e-2 (OpenCL) at 1e6; everything lost at 1e10.
    assert dim_error(result, reference) > 5e-3
    spatial = gd.richardson_lucy(image, PSF, 20, backend=backend, method="spatial", dtype="float32")
    assert dim_error(spatial, reference) <= 1e-5  # the spatial method stays exact


def _run_without_warnings(image, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return gd.richardson_lucy(image, PSF, 20, **kwargs)


@pytest.mark.parametrize(
    "dynamic_range, method",
    [(1e4, "fft"), (1e6, "spatial"), (1e6, "separable")],  # fft within the limit: 5e-4
)
def test_no_warning_where_float32_is_accurate(backend, dynamic_range, method):
    image = two_level_image(dynamic_range)
    reference = gd.richardson_lucy(image, PSF, 20, backend="numpy", method="spatial")
    result = _run_without_warnings(image, backend=backend, method=method, dtype="float32")
    assert dim_error(result, reference) <= 1e-3


def test_no_warning_in_float64():
    image = two_level_image(1e6)
    reference = gd.richardson_lucy(image, PSF, 20, backend="numpy", method="spatial")
    result = _run_without_warnings(image, backend="numpy", method="fft", dtype="float64")
    assert dim_error(result, reference) <= 1e-8


def test_isolated_dim_voxels_do_not_warn():
    image = np.ones((37, 44), np.float32)
    image[3, 3] = 1e-9  # one voxel is not a region
    assert dim_fraction(image) < DIM_FRACTION
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gd.richardson_lucy(image, PSF, 2, backend="numpy", method="fft")


def test_dim_fraction_counts_positive_voxels_below_the_limit():
    image = np.array([0.0, 0.0, 1e-9, 0.5 / DYNAMIC_RANGE_LIMIT, 2 / DYNAMIC_RANGE_LIMIT, 1.0])
    assert dim_fraction(image) == pytest.approx(2 / 6)
    assert dim_fraction(np.zeros(4)) == 0.0


# -- where the exact blur is 0 and the data are not (issue 23, item 1) ---------------------------


def _off_centre_widefield():
    psf = gd.psf.widefield_psf((33, 33), spacing=0.1, wavelength=0.52, na=1.2)
    psf = np.roll(psf, (8, 8), (0, 1))
    psf[psf < 0.01 * psf.max()] = 0
    image = np.random.default_rng(0).random((128, 128)) * 100 + 10
    return image, psf, 10, "constant"


def _mass_left_of_centre():
    psf = np.zeros((5, 13))
    psf[1:4, 0:3] = 1.0  # the mass 4-6 px left of the centre
    image = np.random.default_rng(1).random((64, 80)) * 100 + 10
    return image, psf, 20, "constant"


def _ring(boundary):
    def case():
        yy, xx = np.mgrid[-8:9, -8:9]
        psf = ((np.hypot(yy, xx) > 4) & (np.hypot(yy, xx) < 6)).astype(float)  # zero centre
        rng = np.random.default_rng(2)
        image = np.full((96, 96), 0.5)
        image[rng.integers(0, 96, 20), rng.integers(0, 96, 20)] = 1000.0  # sparse
        return image, psf, 20, boundary

    return case


@pytest.mark.parametrize(
    "case",
    [_off_centre_widefield, _mass_left_of_centre, _ring("reflect"), _ring("wrap")],
    ids=["off-centre-widefield-constant", "mass-left-constant", "ring-reflect", "ring-wrap"],
)
def test_float32_fft_stays_with_float64_where_the_exact_blur_is_zero(backend, case):
    image, psf, iterations, boundary = case()
    expected = gd.richardson_lucy(image, psf, iterations, boundary=boundary, backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gd.PrecisionWarning)
        result = gd.richardson_lucy(
            image.astype(np.float32), psf, iterations, boundary=boundary, backend=backend,
            method="fft",
        )  # fmt: skip
    # Before the guard: 54x (NumPy) and 93x (OpenCL) the reference's RMS for the first case.
    assert rel_rms(result, expected) < 1e-4
