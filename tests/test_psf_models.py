"""Optical PSF models against diffraction theory; bead PSFs cleaned, centred and resampled."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import jv
from test_cli_io import cli

from gpu_deconv.io import read_tiff, write_tiff
from gpu_deconv.psf import (
    axis_moments,
    bead_psf,
    center_psf,
    confocal_psf,
    crop_psf,
    gaussian_psf,
    remove_background,
    resample_psf,
    rms_width,
    widefield_psf,
)


def fwhm(profile: np.ndarray, step: float) -> float:
    """Full width at half maximum of a single-peaked profile, crossings interpolated."""
    p = profile / profile.max()
    above = np.flatnonzero(p >= 0.5)
    lo, hi = above[0], above[-1]
    left = lo - (p[lo] - 0.5) / (p[lo] - p[lo - 1])
    right = hi + (p[hi] - 0.5) / (p[hi] - p[hi + 1])
    return float((right - left) * step)


def richards_wolf(r: float, z: float, wavelength: float, na: float, n: float) -> float:
    """Isotropic Richards-Wolf intensity |I0|^2 + 4|I1|^2 + |I2|^2 (Hess & Webb 2002, eq. 3).

    Midpoint rule over the aperture angle with the aplanatic factor sqrt(cos): an
    independent evaluation of the theory the psf package implements.
    """
    alpha = np.arcsin(na / n)
    theta = (np.arange(4000) + 0.5) * alpha / 4000
    s, c = np.sin(theta), np.cos(theta)
    k = 2 * np.pi * n / wavelength
    weight = np.sqrt(c) * np.exp(1j * k * z * c) * alpha / 4000
    i0 = np.sum(weight * s * (1 + c) * jv(0, k * r * s))
    i1 = np.sum(weight * s * s * jv(1, k * r * s))
    i2 = np.sum(weight * s * (1 - c) * jv(2, k * r * s))
    return float(abs(i0) ** 2 + 4 * abs(i1) ** 2 + abs(i2) ** 2)


def theory_fwhm(wavelength, na, n):
    peak = richards_wolf(0, 0, wavelength, na, n)
    lateral = brentq(lambda r: richards_wolf(r, 0, wavelength, na, n) / peak - 0.5, 1e-4, 1.0)
    reach = 2 * wavelength / (n - np.sqrt(n * n - na * na))
    axial = brentq(lambda z: richards_wolf(0, z, wavelength, na, n) / peak - 0.5, 1e-4, reach)
    return 2 * lateral, 2 * axial


# (na, refractive index, emission wavelength um): air, water and oil objectives
OPTICS = [(0.4, 1.0, 0.52), (0.8, 1.0, 0.52), (1.2, 1.333, 0.52), (1.4, 1.515, 0.6)]


@pytest.mark.parametrize("na, n, wavelength", OPTICS)
def test_widefield_fwhm_matches_theory(na, n, wavelength):
    axial_formula = 0.88 * wavelength / (n - np.sqrt(n * n - na * na))
    dz, dx = axial_formula / 20, 0.01
    h = widefield_psf(
        (101, 129, 129), spacing=(dz, dx, dx), wavelength=wavelength, na=na, refractive_index=n
    )
    lateral, axial = fwhm(h[50, 64, :], dx), fwhm(h[:, 64, 64], dz)
    assert fwhm(h[50, :, 64], dx) == pytest.approx(lateral, rel=1e-9)  # rotationally symmetric
    rw_lateral, rw_axial = theory_fwhm(wavelength, na, n)
    # measured: lateral 0.4-1.5% below the integral, axial 0.0-2.4% below it
    assert lateral == pytest.approx(rw_lateral, rel=0.03)
    assert axial == pytest.approx(rw_axial, rel=0.03)
    # the textbook axial width 0.88 lambda / (n - sqrt(n^2 - NA^2)): measured 0.7-1.3% above
    assert axial == pytest.approx(axial_formula, rel=0.02)
    if na <= 0.4:  # paraxial: the Airy disc, 0.5145 lambda / NA (measured 2% above)
        assert lateral == pytest.approx(0.5145 * wavelength / na, rel=0.03)


def test_confocal_is_narrower_and_closes_to_theory():
    optics = dict(wavelength=0.52, excitation_wavelength=0.488, na=1.2, refractive_index=1.333)
    spacing = (0.02, 0.01, 0.01)
    small = confocal_psf((101, 129, 129), spacing=spacing, pinhole=0.2, **optics)
    open_ = confocal_psf((101, 129, 129), spacing=spacing, pinhole=1.0, **optics)
    wide = widefield_psf(
        (101, 129, 129), spacing=spacing, wavelength=0.52, na=1.2, refractive_index=1.333
    )
    widths = {
        name: (fwhm(h[50, 64], 0.01), fwhm(h[:, 64, 64], 0.02))
        for name, h in [("small", small), ("open", open_), ("wide", wide)]
    }
    assert widths["small"][0] < widths["open"][0] < widths["wide"][0]
    assert widths["small"][1] < widths["open"][1] < widths["wide"][1]
    # A closed pinhole multiplies the excitation and emission PSFs: Gaussian widths add as
    # 1/w^2 = 1/w_ex^2 + 1/w_em^2 (w_ex scales with the wavelength); measured 5% above.
    ex = widths["wide"][0] * 0.488 / 0.52
    product = ex * widths["wide"][0] / np.hypot(ex, widths["wide"][0])
    assert widths["small"][0] == pytest.approx(product, rel=0.07)
    # axial: 0.64 lambda_mean / (n - sqrt(n^2 - NA^2)), measured 4% above
    mean = np.sqrt(2) * 0.488 * 0.52 / np.hypot(0.488, 0.52)
    assert widths["small"][1] == pytest.approx(
        0.64 * mean / (1.333 - np.sqrt(1.333**2 - 1.44)), rel=0.06
    )


def test_models_centred_normalised_2d_and_even():
    h = widefield_psf((16, 17), spacing=0.1, wavelength=0.5, na=0.9, refractive_index=1.0)
    assert h.shape == (16, 17) and h.sum() == pytest.approx(1.0, rel=1e-12)
    assert np.unravel_index(h.argmax(), h.shape) == (8, 8)
    three = widefield_psf(
        (5, 16, 17), spacing=(0.3, 0.1, 0.1), wavelength=0.5, na=0.9, refractive_index=1.0
    )
    np.testing.assert_allclose(three[2] / three[2].sum(), h, rtol=1e-12)  # in-focus plane


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(shape=(9,)), "shape must have 2 or 3"),
        (dict(spacing=(0.1, 0.1)), "spacing must be one number or one per axis"),
        (dict(spacing=-0.1), "spacing must be positive"),
        (dict(wavelength=float("nan")), "wavelength must be positive"),
        (dict(wavelength=520), "wavelength is in micrometres: 520 is outside 0.1-10 um"),
        (dict(wavelength=5.2e-4), "wavelength is in micrometres"),
        (dict(na=0), "na must be positive"),
        (dict(na=1.4), r"refractive_index \(1.333\) must exceed na"),
    ],
)
def test_model_bad_input(kwargs, message):
    args = dict(shape=(5, 9, 9), spacing=0.1, wavelength=0.5, na=1.0, **{})
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        widefield_psf(args.pop("shape"), **args)
    with pytest.raises(ValueError, match="pinhole must be positive"):
        confocal_psf(
            (5, 9, 9), spacing=0.1, wavelength=0.5, excitation_wavelength=0.45, na=1.0, pinhole=0
        )


def test_bead_psf_recovers_centred_psf_from_noisy_offset_bead():
    rng = np.random.default_rng(3)
    truth = gaussian_psf((15, 31, 31), (2.0, 1.5, 1.5))
    # the bead 2.4 / -1.7 / 3.3 voxels off centre, 50 counts of background, Poisson noise
    shifted = np.zeros((31, 47, 47))
    z, y, x = np.meshgrid(*(np.arange(n) for n in shifted.shape), indexing="ij")
    c = (15 + 2.4, 23 - 1.7, 23 + 3.3)
    shifted = np.exp(
        -0.5 * (((z - c[0]) / 2.0) ** 2 + ((y - c[1]) / 1.5) ** 2 + ((x - c[2]) / 1.5) ** 2)
    )
    clean = bead_psf(5000 * shifted + 50, shape=(15, 31, 31))
    for (offset, width), expected in zip(axis_moments(clean), (2.0, 1.5, 1.5)):
        assert abs(offset) < 0.02  # measured: at most 0.01 voxels
        assert width == pytest.approx(expected, rel=0.01)
    h = bead_psf(rng.poisson(5000 * shifted + 50).astype(np.float64), shape=(15, 31, 31))
    assert h.shape == truth.shape and h.sum() == pytest.approx(1.0)
    for offset, _ in axis_moments(h):
        assert abs(offset) < 0.05  # measured: at most 0.02 voxels
    # the clipped noise floor stays (it widens the moments), the peak's shape is the truth's
    assert np.abs(h / h.max() - truth / truth.max()).max() < 0.05


def test_background_centre_crop_steps():
    bead = np.full((9, 9), 7.0)
    bead[3, 5] = 20.0
    assert remove_background(bead).max() == 13.0
    assert remove_background(bead, level=10.0).sum() == 10.0
    np.testing.assert_array_equal(
        crop_psf(np.arange(25.0).reshape(5, 5), (3, 1)), [[7.0], [12.0], [17.0]]
    )
    centred = center_psf(remove_background(bead))
    assert np.unravel_index(centred.argmax(), centred.shape) == (4, 4)
    with pytest.raises(ValueError, match="nothing is left"):
        remove_background(np.ones((5, 5)))
    with pytest.raises(ValueError, match="shape must have 1 to"):
        crop_psf(bead, (11, 3))
    with pytest.raises(ValueError, match="NaN"):
        remove_background(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="give both spacing and target_spacing"):
        bead_psf(bead, spacing=0.1)


@pytest.mark.parametrize("factor", [0.5, 2.0, 3.0])
def test_resample_keeps_the_physical_width(factor):
    # sigma (0.4, 0.2) um sampled at (0.1, 0.05) um, resampled by factor; a voxel of the
    # target size adds its box variance (t^2 - s^2) / 12 to the second moment
    source = np.array([0.1, 0.05])
    fine = gaussian_psf((61, 61), (4.0, 4.0))
    coarse = resample_psf(fine, source, source * factor)
    assert coarse.shape == tuple(2 * int(30 / factor) + 1 for _ in range(2))
    assert np.unravel_index(coarse.argmax(), coarse.shape) == tuple(n // 2 for n in coarse.shape)
    expected = np.sqrt(0.16 * source**2 * 100 + np.maximum(factor**2 - 1, 0) * source**2 / 12)
    measured = np.array(rms_width(coarse)) * source * factor
    np.testing.assert_allclose(measured, expected, rtol=0.02)


WIDEFIELD = "psf widefield --shape 9,33,33 --spacing 0.3,0.1,0.1 --wavelength 0.52 --na 1.2"
CONFOCAL = (
    "psf confocal --shape 9,33,33 --spacing 0.1 --wavelength 0.52 --excitation 0.488 --na 1.2 "
    "--pinhole 0.5"
)


def test_cli_psf_models_and_bead(tmp_path):
    out = tmp_path / "wf.tif"
    done = cli(*WIDEFIELD.split(), "--refractive-index", "1.33", "-o", out)
    assert done.returncode == 0, done.stderr
    written = read_tiff(out)
    expected = widefield_psf(
        (9, 33, 33), spacing=(0.3, 0.1, 0.1), wavelength=0.52, na=1.2, refractive_index=1.33
    )
    np.testing.assert_allclose(written.data, expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(written.voxel_size, (0.3, 0.1, 0.1), rtol=1e-6)
    done = cli(*CONFOCAL.split(), "-o", tmp_path / "cf.tif")
    assert done.returncode == 0, done.stderr
    bead = (1000 * np.roll(gaussian_psf((21, 21), 2.0), (1, -2), axis=(0, 1)) + 3.0).astype(
        np.float32
    )
    write_tiff(tmp_path / "bead.tif", bead, (0.05, 0.05))
    done = cli(
        *f"psf bead {tmp_path}/bead.tif --image-spacing 0.1 --shape 7,7 "
        f"-o {tmp_path}/psf.tif".split()
    )
    assert done.returncode == 0, done.stderr
    psf = read_tiff(tmp_path / "psf.tif")
    assert psf.data.shape == (7, 7) and psf.voxel_size == pytest.approx((0.1, 0.1))
    np.testing.assert_allclose(
        psf.data, bead_psf(bead, shape=(7, 7), spacing=0.05, target_spacing=0.1), rtol=1e-6
    )
    bad = cli(*WIDEFIELD.replace("1.2", "1.5").split(), "-o", tmp_path / "x.tif")
    assert bad.returncode == 2 and "must exceed na" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
