"""The OpenCL backend's direct filters: VkFFT real FFTs of the filter domain, or DCTs in place.

The image goes to the device once and the result comes back once; the response (or, for
the data-dependent Wiener filter, the OTF) is uploaded when the filter is prepared.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._base import FilterPlan, FilterSpec, MemoryNeed
from ._filter_planning import (
    filter_domain,
    filter_geometry,
    filter_response,
    half_spectrum,
    noise_power,
    transformed_axes,
)
from ._opencl_operators import BOUNDARY_CODES, FFTOperator


def plan_filter(spec: FilterSpec, transforms: tuple[str, ...]) -> FilterPlan:
    """Plan transform, domain and device memory: the in-place transform buffer and the response.

    The DCT runs in the output buffer itself (the caller's), so only its response (one
    image) is the filter's; the real FFT holds the padded half-spectrum buffer and the
    complex response of the same size.
    """
    transform, domain = filter_domain(spec, transforms)
    if transform != "rfft":
        n = math.prod(domain) * 4
        return FilterPlan(transform, domain, MemoryNeed(n, n))
    spectrum = half_spectrum(domain) * 8  # complex64
    return FilterPlan(transform, domain, MemoryNeed(2 * spectrum, spectrum))


class OpenCLFilter:
    """A prepared direct filter on device buffers (see :class:`~gpu_deconv.backends.FilterSpec`)."""

    def __init__(self, backend: Any, spec: FilterSpec, plan: FilterPlan):
        import pyopencl.array as cla

        self.plan = plan
        self._be = backend
        blur = spec.blur
        response = filter_response(spec, plan.transform)  # Wiener: the OTF (the kernel conjugates)
        self._noise: tuple[np.float32, np.float32] | None = None
        if spec.noise_variance is not None:
            self._noise = (np.float32(noise_power(spec)), np.float32(spec.noise_weight))
        self._rfft = plan.transform == "rfft"
        if self._rfft:
            geometry = filter_geometry(blur.shape, blur.psf.shape, blur.boundary)
            padded = geometry.padded_shape
            row = 2 * (padded[-1] // 2 + 1)  # in-place R2C rows hold the half spectrum
            buffer_shape = (*padded[:-1], row)
            self._buffer = cla.empty(backend.queue, buffer_shape, np.float32)
            self._values = math.prod(buffer_shape) // 2
            self._app = backend.fft_plan(
                buffer_shape, r2c=True, r2c_odd=bool(padded[-1] % 2), ndim=len(padded)
            )
            image = (blur.shape, geometry.pad_before)
            mode = BOUNDARY_CODES[blur.boundary]
            self._pad, self._crop = FFTOperator._pad_crop(image, mode, image, row, padded)
        else:
            dct_type = 1 if plan.transform == "dct1" else 2
            axes = tuple(a - blur.psf.ndim for a in transformed_axes(blur.shape))
            response = np.ascontiguousarray(np.broadcast_to(response, blur.shape))
            self._values = response.size
            self._app = backend.fft_plan(blur.shape, dct=dct_type, axes=axes) if axes else None
        self._response = backend.upload(response)

    def apply(self, x: Any, out: Any) -> Any:
        be = self._be
        if self._rfft:
            (pad_args, pad_global), (crop_args, crop_global) = self._pad, self._crop
            be.launch("pad_boundary", pad_global, self._buffer.data, x.data, *pad_args)
            self._app.fft(self._buffer)
            self._respond(self._buffer, complex_values=1)
            self._app.ifft(self._buffer)
            be.launch("crop", crop_global, out.data, self._buffer.data, *crop_args)
            return out
        if x is not out:
            be.device_copy(x, out)
        if self._app is not None:
            self._app.fft(out)
        self._respond(out, complex_values=0)
        if self._app is not None:
            self._app.ifft(out)
        return out

    def _respond(self, spectrum: Any, complex_values: int) -> None:
        be, values = self._be, (self._values,)
        if self._noise is not None:
            noise, weight = self._noise
            be.launch(
                "wiener_spectrum",
                values,
                spectrum.data,
                self._response.data,
                noise,
                weight,
                np.int32(complex_values),
            )
        elif complex_values:
            be.launch("complex_multiply", values, spectrum.data, self._response.data, np.int32(0))
        else:
            be.multiply(spectrum, self._response, spectrum)
