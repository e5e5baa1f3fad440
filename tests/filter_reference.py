"""Independent float64 references for the direct filters (no gpu_deconv code).

Two of them:

* :func:`dense_tikhonov`: the minimiser of ``||H f - g||^2 + lam ||R f||^2`` by dense normal
  equations, ``H`` built column by column from ``scipy.ndimage.convolve`` with the mode. It
  is what the filter computes for ``"wrap"`` and, with a symmetric PSF, for ``"reflect"``.
* :func:`extended_filter`: the documented discretisation for every mode: the image extended
  with ``np.pad`` to the mode's periodic domain, full complex FFTs, the filter, the crop.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.ndimage as ndi


def laplacian(ndim: int) -> np.ndarray:
    """3-point Laplacian on every axis (centre 2 ndim, neighbours -1), as scikit-image's."""
    stencil = np.zeros((3,) * ndim)
    centre = (1,) * ndim
    stencil[centre] = 2.0 * ndim
    for axis in range(ndim):
        for side in (0, 2):
            index = list(centre)
            index[axis] = side
            stencil[tuple(index)] = -1.0
    return stencil


def operator_matrix(shape, kernel, mode):
    """Dense matrix of ``x -> ndi.convolve(x, kernel, mode=mode)`` on images of ``shape``."""
    columns = []
    for j in range(int(np.prod(shape))):
        delta = np.zeros(shape)
        delta.flat[j] = 1.0
        columns.append(ndi.convolve(delta, kernel, mode=mode).ravel())
    return np.stack(columns, axis=1)


def dense_tikhonov(image, psf, lam, mode, regularizer="identity"):
    """``argmin ||H f - g||^2 + lam ||R f||^2`` with dense ``H`` (and ``R``) under ``mode``."""
    g = np.asarray(image, np.float64)
    h = np.asarray(psf, np.float64) / np.sum(psf)
    H = operator_matrix(g.shape, h, mode)
    if regularizer == "identity":
        R = np.eye(g.size)
    else:
        R = operator_matrix(g.shape, laplacian(g.ndim), mode)
    f = np.linalg.solve(H.T @ H + lam * R.T @ R, H.T @ g.ravel())
    return f.reshape(g.shape)


def _extend(image, psf_shape, mode):
    """The image on its filter domain (np.pad) and the slices of the image in it."""
    pads = []
    for n, k in zip(image.shape, psf_shape):
        if n == 1 and mode in ("wrap", "reflect", "mirror"):
            pads.append((0, 0))
        elif mode == "wrap":
            pads.append((0, 0))
        elif mode == "reflect":
            pads.append((0, n))  # the half-sample even extension, period 2n
        elif mode == "mirror":
            pads.append((0, n - 2))  # the whole-sample even extension, period 2n - 2
        else:  # SimpleITK's padding: radius, then a 5-smooth length split evenly
            reach = k // 2
            m = scipy.fft.next_fast_len(n + 2 * reach, real=True)
            before = reach + (m - n - 2 * reach) // 2
            pads.append((before, m - n - before))
    numpy_mode = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge"}.get(mode, mode)
    extended = np.pad(image, pads, mode=numpy_mode) if mode != "wrap" else image.copy()
    crop = tuple(slice(b, b + n) for (b, _), n in zip(pads, image.shape))
    return extended, crop


def _transfer(kernel, domain):
    """Full complex FFT of ``kernel`` placed with its origin (``n // 2``) at index 0."""
    assert all(k <= m for k, m in zip(kernel.shape, domain)), "reference needs PSF <= domain"
    placed = np.zeros(domain)
    placed[tuple(slice(0, k) for k in kernel.shape)] = kernel
    return np.fft.fftn(np.roll(placed, [-(k // 2) for k in kernel.shape], axis=range(placed.ndim)))


def extended_filter(
    image, psf, mode, lam=None, regularizer="identity", noise_variance=None, normalize=True
):
    """The filter on the mode's domain: Tikhonov (``lam``) or the data-driven Wiener."""
    g = np.asarray(image, np.float64)
    h = np.asarray(psf, np.float64) / (np.sum(psf) if normalize else 1.0)
    extended, crop = _extend(g, h.shape, mode)
    L = _transfer(h, extended.shape)
    G = np.fft.fftn(extended)
    if noise_variance is not None:
        P = noise_variance * extended.size
        S = np.maximum(np.abs(G) ** 2 - P, 0)
        W = np.conj(L) * S / (np.abs(L) ** 2 * S + P)
    else:
        active = [m > 1 for m in extended.shape]
        if regularizer == "identity":
            reg = 1.0
        else:
            stencil = laplacian(sum(active)).reshape([3 if a else 1 for a in active])
            reg = np.abs(_transfer(stencil, extended.shape)) ** 2
        W = np.conj(L) / (np.abs(L) ** 2 + lam * reg)
    return np.fft.ifftn(G * W).real[crop]


def itk_wiener(image, psf, noise_power, threshold=1e-4):
    """SimpleITK's Wiener filter as its source states, zero-flux Neumann padding.

    ``conj(L) / (|L|^2 + P / (|G|^2 - P))``, 0 where that denominator's magnitude is below
    ``threshold`` (ITK's KernelZeroMagnitudeThreshold); ``P`` is its NoiseVariance.
    """
    g = np.asarray(image, np.float64)
    h = np.asarray(psf, np.float64) / np.sum(psf)
    extended, crop = _extend(g, h.shape, "nearest")
    L = _transfer(h, extended.shape)
    G = np.fft.fftn(extended)
    with np.errstate(divide="ignore"):
        denominator = np.abs(L) ** 2 + noise_power / (np.abs(G) ** 2 - noise_power)
    W = np.where(np.abs(denominator) >= threshold, np.conj(L) / denominator, 0)
    return np.fft.ifftn(G * W).real[crop]
