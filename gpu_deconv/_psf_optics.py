"""PSF models from the optics: widefield and confocal, computed by the ``psf`` package.

``psf`` (BSD, NumPy only) evaluates the Richards-Wolf diffraction integrals on a (z, r) grid
from the focus. Here that grid is chosen so that every z of the requested grid is one of its
rows, and is 8 times finer than the finest lateral spacing in r, so that the volume only needs
a 1-D interpolation in r per plane.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from . import _validation as v

RADIAL_OVERSAMPLING = 8


def widefield_psf(
    shape: Sequence[int],
    *,
    spacing: float | Sequence[float],
    wavelength: float,
    na: float,
    refractive_index: float = 1.333,
) -> np.ndarray:
    """Return the PSF of a widefield fluorescence microscope, sampled on the image grid.

    The detection (emission) PSF of an aplanatic objective (Richards-Wolf, unpolarised), from
    the ``psf`` package; the peak is at index ``n // 2`` on every axis (the focus).

    Parameters
    ----------
    shape : sequence of int
        ``(z, y, x)`` for a 3D PSF, or ``(y, x)`` for the in-focus plane.
    spacing : float or sequence of float
        Voxel size in micrometres, one for all axes or one per axis (the image's, e.g. from
        its metadata or napari's ``layer.scale``).
    wavelength : float
        Emission wavelength in micrometres (e.g. 0.52).
    na : float
        Numerical aperture of the objective.
    refractive_index : float, optional
        Of the immersion and sample medium, by default 1.333 (water); must exceed ``na``.

    Returns
    -------
    ndarray
        float64 PSF of ``shape``, normalised to sum 1.

    Raises
    ------
    ValueError
        If ``shape`` does not have 2 or 3 positive lengths, a spacing or ``na`` is not
        positive and finite, the wavelength is not 0.1-10 um (a number in nm), or
        ``na >= refractive_index``.

    Examples
    --------
    >>> from gpu_deconv.psf import widefield_psf
    >>> h = widefield_psf((33, 65, 65), spacing=(0.2, 0.05, 0.05), wavelength=0.52, na=1.0)
    >>> h.shape, round(float(h.sum()), 12), tuple(map(int, np.unravel_index(h.argmax(), h.shape)))
    ((33, 65, 65), 1.0, (16, 32, 32))
    """
    import psf

    return _model(
        psf.ISOTROPIC | psf.EMISSION,
        shape,
        spacing,
        na,
        refractive_index,
        em_wavelen=_wavelength(wavelength, "wavelength") * 1e3,
    )


def confocal_psf(
    shape: Sequence[int],
    *,
    spacing: float | Sequence[float],
    wavelength: float,
    excitation_wavelength: float,
    na: float,
    refractive_index: float = 1.333,
    pinhole: float = 1.0,
) -> np.ndarray:
    """Return the PSF (observation volume) of a point-scanning confocal microscope.

    The excitation PSF times the emission PSF seen through a round pinhole (``psf``'s
    ``ISOTROPIC | CONFOCAL``), sampled as :func:`widefield_psf` samples its model.

    Parameters
    ----------
    shape, spacing, na, refractive_index
        As :func:`widefield_psf`.
    wavelength : float
        Emission wavelength in micrometres.
    excitation_wavelength : float
        Excitation wavelength in micrometres.
    pinhole : float, optional
        Pinhole diameter in Airy units of the emission (1 AU = ``1.22 * wavelength / na``,
        in the sample), by default 1; above about 8 AU the model is widefield detection.

    Returns
    -------
    ndarray
        The observation volume (float64, sum 1) of ``shape``: what the excitation focus
        lights and the pinhole lets through.

    Raises
    ------
    ValueError
        As :func:`widefield_psf`, and if ``excitation_wavelength`` or ``pinhole`` is not
        positive and finite.

    Examples
    --------
    >>> from gpu_deconv.psf import confocal_psf
    >>> h = confocal_psf((17, 33, 33), spacing=(0.2, 0.05, 0.05), wavelength=0.52,
    ...                  excitation_wavelength=0.488, na=1.0, pinhole=1.0)
    >>> h.shape, tuple(map(int, np.unravel_index(h.argmax(), h.shape)))
    ((17, 33, 33), (8, 16, 16))
    """
    import psf

    emission = _wavelength(wavelength, "wavelength")
    numerical_aperture = _positive(na, "na")
    radius = _positive(pinhole, "pinhole") * 1.22 * emission / numerical_aperture / 2
    return _model(
        psf.ISOTROPIC | psf.CONFOCAL,
        shape,
        spacing,
        numerical_aperture,
        refractive_index,
        em_wavelen=emission * 1e3,
        ex_wavelen=_wavelength(excitation_wavelength, "excitation_wavelength") * 1e3,
        pinhole_radius=radius,
    )


# Light microscopy's wavelengths, in um: outside, the number is in other units (520 nm).
WAVELENGTHS_UM = (0.1, 10.0)
# Float64 arrays of the PSF's size a model PSF holds at once (planes, their stack, the copy).
MODEL_COPIES = 3
# A model PSF's voxels, in um: coarser ones are a number in nm (100 for 0.1 um).
MAX_SPACING_UM = 10.0
# Immersion and mounting media's refractive indices.
REFRACTIVE_INDICES = (1.0, 2.5)


def _wavelength(value: float, name: str) -> float:
    """Return ``value`` (micrometres), or raise ValueError if it is not a light wavelength."""
    number = _positive(value, name)
    low, high = WAVELENGTHS_UM
    if not low <= number <= high:
        raise ValueError(
            f"{name} is in micrometres: {value!r} is outside {low:g}-{high:g} um "
            "(nm / 1000: 520 nm is 0.52)"
        )
    return number


def _positive(value: float, name: str) -> float:
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return number


def grid_spacing(shape: Sequence[int], spacing: float | Sequence[float]) -> tuple[float, ...]:
    """Return ``spacing`` as one positive float per axis of ``shape``, or raise ValueError."""
    values = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
    if values.size == 1:
        values = np.repeat(values, len(shape))
    if values.shape != (len(shape),):
        raise ValueError(
            f"spacing must be one number or one per axis ({len(shape)}), got {spacing}"
        )
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError(f"spacing must be positive and finite, got {spacing}")
    return tuple(float(s) for s in values)


def _check_fits(shape: tuple[int, ...]) -> None:
    """Raise MemoryError before building a model PSF the host's memory cannot hold.

    The planes, their stack and the normalised copy are float64 arrays of the PSF's size.
    """
    from .backends._host_memory import available_host_memory

    need = MODEL_COPIES * math.prod(shape) * 8
    available = available_host_memory()
    if available is not None and need > available:
        raise MemoryError(
            f"a model PSF of shape {'x'.join(map(str, shape))} needs about "
            f"{v.format_bytes(need)} and {v.format_bytes(available)} are available: a PSF "
            "needs only a few times the blur's width on each axis"
        )


def _model(kind, shape, spacing, na, refractive_index, **wavelengths) -> np.ndarray:
    import psf

    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or any(n < 1 for n in shape):
        raise ValueError(f"shape must have 2 or 3 positive lengths, got {shape}")
    steps = grid_spacing(shape, spacing)
    if max(steps) > MAX_SPACING_UM:
        raise ValueError(
            f"spacing is in micrometres: {spacing!r} is over {MAX_SPACING_UM:g} um per voxel, "
            "coarser than any microscope resolves (nm / 1000: 100 nm is 0.1)"
        )
    na = _positive(na, "na")
    low, high = REFRACTIVE_INDICES
    if not low <= float(refractive_index) <= high:
        raise ValueError(
            f"refractive_index must be a medium's index, {low:g}-{high:g} (air 1.0, water "
            f"1.33, oil 1.518), got {refractive_index}"
        )
    if not float(refractive_index) > na:
        raise ValueError(
            f"refractive_index ({refractive_index}) must exceed na ({na}): "
            "no objective collects beyond its medium's index"
        )
    _check_fits(shape)
    dz, dy, dx = steps if len(shape) == 3 else (min(steps), *steps)
    planes = shape[0] if len(shape) == 3 else 1
    z_index = np.abs(np.arange(planes) - planes // 2)
    y = (np.arange(shape[-2]) - shape[-2] // 2) * dy
    x = (np.arange(shape[-1]) - shape[-1] // 2) * dx
    r = np.hypot(y[:, None], x[None, :])
    step = min(dy, dx) / RADIAL_OVERSAMPLING
    rows = max(int(z_index.max()) + 1, 2)  # psf needs two rows; a 2D PSF uses the first
    columns = int(math.ceil(r.max() / step)) + 2
    model = psf.PSF(
        kind,
        shape=(rows, columns),
        dims=((rows - 1) * dz, (columns - 1) * step),
        num_aperture=na,
        refr_index=float(refractive_index),
        **wavelengths,
    )
    radii = np.arange(columns) * step
    out = np.stack([np.interp(r, radii, model.data[k]) for k in z_index])
    out = out.reshape(shape)
    return v.check_psf(out, out.ndim, normalize=True)
