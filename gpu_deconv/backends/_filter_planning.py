"""Host-side planning of the direct filters (Wiener, Tikhonov), shared by every backend.

A direct filter divides by the blur in a basis where the blur is diagonal, so it needs the
whole periodic domain the boundary mode implies, not only the PSF's reach:

* ``"wrap"``: the image itself (period ``N``): the blur is circulant there, exactly.
* ``"reflect"`` / ``"mirror"``: the image's even extension (period ``2N`` / ``2N - 2``), on
  which the ``scipy.ndimage`` blur is circular. A mirror-symmetric PSF makes it diagonal in
  the DCT-II / DCT-I of the image itself (no extension in memory); other PSFs run a real FFT
  of the extension. Both compute the same filter.
* ``"nearest"`` / ``"constant"``: no periodic domain reproduces these modes, so the image is
  extended by the PSF's radius with the mode's values, then to a fast FFT length with the
  extra voxels split evenly before and after (SimpleITK's padding), and filtered circularly
  there.

The Laplacian regulariser is the 3-point second difference on every axis longer than one
voxel (centre ``2 * ndim``, neighbours ``-1``: scikit-image's), taken on the same domain.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

from ._base import FilterSpec
from ._planning import FFTGeometry, dct_gain, embed_psf, exact_dct, fast_length


def filter_geometry(
    shape: tuple[int, ...], psf_shape: tuple[int, ...], boundary: str
) -> FFTGeometry:
    """Return the periodic domain a filter acts on and where the image sits in it.

    See the module docstring for each mode. Axes of length 1 stay length 1 for the periodic
    modes (their extension is a constant).
    """
    padded, before = [], []
    for n, k in zip(shape, psf_shape):
        if boundary in ("wrap", "reflect", "mirror") and n == 1:
            padded.append(1)
            before.append(0)
        elif boundary == "wrap":
            padded.append(n)
            before.append(0)
        elif boundary in ("reflect", "mirror"):
            padded.append(2 * n if boundary == "reflect" else 2 * n - 2)
            before.append(0)
        else:
            reach = k // 2
            m = fast_length(n + 2 * reach)
            padded.append(m)
            before.append(reach + (m - n - 2 * reach) // 2)
    return FFTGeometry(tuple(shape), tuple(padded), tuple(before))


def filter_transform(spec: FilterSpec, transforms: tuple[str, ...]) -> str:
    """Return ``"dct2"``/``"dct1"`` where the blur is diagonal on the image itself, else ``"rfft"``.

    The DCT needs a mirror-symmetric PSF and ``"reflect"``/``"mirror"``; it is always
    cheaper than the real FFT of the extension (``2**ndim`` times the voxels).
    """
    blur = spec.blur
    dct = exact_dct(blur.psf, blur.shape, blur.boundary, blur.dtype)
    return dct if dct is not None and dct in transforms else "rfft"


def filter_domain(spec: FilterSpec, transforms: tuple[str, ...]) -> tuple[str, tuple[int, ...]]:
    """Return the transform (:func:`filter_transform`) and the shape of the grid it runs on."""
    transform = filter_transform(spec, transforms)
    if transform != "rfft":
        return transform, spec.blur.shape
    blur = spec.blur
    return transform, filter_geometry(blur.shape, blur.psf.shape, blur.boundary).padded_shape


def half_spectrum(domain: tuple[int, ...]) -> int:
    """Return how many complex values the real FFT of ``domain`` has (its half spectrum)."""
    return math.prod(domain[:-1]) * (domain[-1] // 2 + 1)


def transformed_axes(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Axes a filter transforms: those longer than one voxel."""
    return tuple(a for a, n in enumerate(shape) if n > 1)


def noise_power(spec: FilterSpec) -> float:
    """Return ``P``, the noise power per frequency of the domain's unnormalised transform.

    White noise of variance ``s**2`` has ``E|N_k|**2 = M s**2`` on ``M`` samples. The DCTs
    (unnormalised, as ``scipy.fft.dctn``) of the image have the magnitudes of the real FFT
    of its even extension, so ``M`` is the extension's size there too.
    """
    assert spec.noise_variance is not None
    geometry = filter_geometry(spec.blur.shape, spec.blur.psf.shape, spec.blur.boundary)
    return spec.noise_variance * math.prod(geometry.padded_shape)


def laplacian_power(domain: tuple[int, ...], transform: str, dtype: np.dtype) -> np.ndarray:
    """Return ``|r|**2`` of the discrete Laplacian on ``domain`` (broadcastable), in ``dtype``.

    The 3-point Laplacian (centre ``2 * ndim``, neighbours ``-1``) on the axes longer than one
    voxel is diagonal in all three transforms, with eigenvalues ``sum_d 2 - 2 cos(w_d)``:
    ``w = 2 pi k / M`` for the real FFT of ``M`` samples (half spectrum on the last axis),
    ``pi k / N`` for the DCT-II and ``pi k / (N - 1)`` for the DCT-I of ``N`` samples.
    """
    eigen = np.zeros((1,) * len(domain), dtype)
    for axis, m in enumerate(domain):
        if m == 1:
            continue
        last = axis == len(domain) - 1
        if transform == "rfft":
            k = np.arange(m // 2 + 1 if last else m)
            omega = 2 * np.pi * k / m
        else:
            omega = np.pi * np.arange(m) / (m if transform == "dct2" else m - 1)
        shape = [1] * len(domain)
        shape[axis] = omega.size
        eigen = eigen + (2 - 2 * np.cos(omega)).astype(dtype).reshape(shape)
    return np.square(eigen, out=eigen)


def eigenvalues(spec: FilterSpec, transform: str) -> tuple[np.ndarray, np.ndarray | float]:
    """Return the blur's eigenvalues and ``|r|**2`` of the regulariser, in the compute dtype.

    ``(otf, reg_power)``: the blur's eigenvalues (complex half spectrum for ``"rfft"``, real
    DCT gains otherwise, broadcastable to the transformed grid) and ``|r|**2`` (1.0 for the
    identity). Computed in the compute dtype, as the blur operators' OTFs: a float64 detour
    would double the set-up's peak memory.
    """
    blur = spec.blur
    dtype = blur.dtype
    if transform == "rfft":
        domain = filter_geometry(blur.shape, blur.psf.shape, blur.boundary).padded_shape
        otf = scipy.fft.rfftn(embed_psf(blur.psf, domain, dtype))
    else:
        domain = blur.shape
        otf = dct_gain(blur.psf, blur.shape, 1 if transform == "dct1" else 2, dtype)
    if spec.regularizer == "identity":
        return otf, 1.0
    return otf, laplacian_power(domain, transform, dtype)


def tikhonov_response(otf: np.ndarray, reg_power: np.ndarray | float, weight: float) -> np.ndarray:
    """Return ``conj(L) / (|L|**2 + weight |r|**2)``, written over ``otf``.

    The denominator is positive: ``|r|`` is 0 only at zero frequency, where ``L`` is the
    PSF's sum.
    """
    denominator = np.square(np.abs(otf))
    denominator += np.asarray(weight * reg_power, denominator.dtype)
    response = np.conjugate(otf, out=otf) if np.iscomplexobj(otf) else otf
    if response.shape != np.broadcast_shapes(response.shape, denominator.shape):
        response = np.array(np.broadcast_to(response, denominator.shape))
    response /= denominator
    return response


def filter_response(spec: FilterSpec, transform: str) -> np.ndarray:
    """Return what a backend multiplies the spectrum by, in the compute dtype (C-contiguous).

    Tikhonov (and Wiener with ``balance``): the response itself. Wiener with
    ``noise_variance``: the OTF ``L``, since the response needs the data's spectrum (the
    backends form ``conj(L) S / (|L|**2 S + P)``, ``P`` from :func:`noise_power`).
    """
    otf, reg_power = eigenvalues(spec, transform)
    if spec.noise_variance is None:
        otf = tikhonov_response(otf, reg_power, spec.regularization)
    return np.ascontiguousarray(otf)
