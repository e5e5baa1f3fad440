"""The NumPy backend's direct filters: real FFTs of the filter domain, or DCTs of the image."""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

from ._base import FilterPlan, FilterSpec, MemoryNeed
from ._filter_planning import (
    filter_domain,
    filter_geometry,
    filter_response,
    half_spectrum,
    noise_power,
    transformed_axes,
)
from ._numpy_transforms import BoundaryPadder, in_place, irfftn, rfftn


def plan_filter(spec: FilterSpec, transforms: tuple[str, ...]) -> FilterPlan:
    """Plan transform, domain and host memory (checked against tracemalloc in the tests).

    DCT: the response, the transform's scratch and the set-up's ``|L|**2 + lam |r|**2``
    and ``|r|**2`` (one image each); Wiener keeps ``conj(L)`` and ``|L|**2`` and makes three
    temporaries instead. Real FFT: the padded domain, the inverse transform's output, one
    boundary slab, the spectrum and the response (complex), and the set-up's two real
    arrays of the spectrum's size; Wiener adds ``|L|**2`` and three temporaries.
    """
    blur = spec.blur
    transform, domain = filter_domain(spec, transforms)
    item = blur.dtype.itemsize
    wiener = spec.noise_variance is not None
    small = 4 * blur.psf.size * 8 + 2**16  # PSF copies, index maps, 1-D eigenvalues
    real = math.prod(domain) * item
    if transform != "rfft":
        return FilterPlan(transform, domain, MemoryNeed((5 if wiener else 4) * real + small, real))
    half = half_spectrum(domain) * item  # real values of the spectrum
    slab = max(real * (m - n) // m for n, m in zip(blur.shape, domain))
    total = 2 * real + (9 if wiener else 6) * half + slab + small
    return FilterPlan(transform, domain, MemoryNeed(total, max(real, 2 * half)))


class NumpyFilter:
    """A prepared direct filter on NumPy arrays (see :class:`~gpu_deconv.backends.FilterSpec`)."""

    def __init__(self, spec: FilterSpec, plan: FilterPlan, workers: int):

        self.plan = plan
        blur = spec.blur
        self._workers = workers
        self._axes = transformed_axes(blur.shape)
        self._response = filter_response(spec, plan.transform)
        self._wiener = spec.noise_variance is not None
        if self._wiener:  # the response needs the data: keep conj(L) and |L|**2
            self._noise = noise_power(spec)
            self._noise_weight = spec.noise_weight
            self._power = np.square(np.abs(self._response))
            np.conjugate(self._response, out=self._response)
        self._padder = None
        if plan.transform == "rfft":
            geometry = filter_geometry(blur.shape, blur.psf.shape, blur.boundary)
            self._padder = BoundaryPadder(geometry, blur.boundary, blur.dtype)
            self._result = np.empty(geometry.padded_shape, blur.dtype)
            self._spectrum = np.empty(self._response.shape, self._response.dtype)

    def apply(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:

        if self._padder is None:  # the DCT of the image, in place in out
            if x is not out:
                np.copyto(out, x)
            if not self._axes:
                return self._respond(out)
            options = dict(type=1 if self.plan.transform == "dct1" else 2, axes=self._axes)
            in_place(scipy.fft.dctn, out, workers=self._workers, **options)
            self._respond(out)
            in_place(scipy.fft.idctn, out, workers=self._workers, **options)
            return out
        spectrum = rfftn(self._padder.fill(x), self._spectrum, self._workers)
        self._respond(spectrum)
        out[...] = irfftn(spectrum, self._result, self._workers)[self._padder.geometry.crop]
        return out

    def _respond(self, spectrum: np.ndarray) -> np.ndarray:
        if not self._wiener:
            spectrum *= self._response
            return spectrum
        return wiener_step(spectrum, self._response, self._power, self._noise, self._noise_weight)


def wiener_step(
    spectrum: np.ndarray, conj_otf: np.ndarray, power: np.ndarray, noise: float, weight: float
) -> np.ndarray:
    """Multiply ``G`` in place by ``conj(L) S / (|L|**2 S + weight P)``, ``S = max(|G|**2 - P, 0)``.

    ``power`` is ``|L|**2``. Where ``S`` is 0 (the data at or below the noise level) the
    result is 0.
    """
    signal: np.ndarray = np.square(spectrum.real)
    if np.iscomplexobj(spectrum):
        signal += spectrum.imag**2
    signal -= noise
    np.maximum(signal, 0, out=signal)
    denominator = power * signal
    denominator += weight * noise
    np.divide(signal, denominator, out=signal)
    spectrum *= signal
    spectrum *= conj_otf
    return spectrum
