"""The NumPy backend's transforms: real FFTs into preallocated buffers, boundary padding.

Shared by the blur operators (:mod:`.numpy_backend`) and the direct filters
(:mod:`._numpy_filter`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.fft

from ._planning import FFTGeometry, boundary_index

try:  # pocketfft's own binding writes into out=: no fresh pages to fault in every iteration
    from scipy.fft._pocketfft import pypocketfft as _pocketfft
except ImportError:  # another SciPy layout: the public scipy.fft API, which allocates
    _pocketfft = None


class BoundaryPadder:
    """Writes an image and its boundary extension into a preallocated padded buffer."""

    def __init__(self, geometry: FFTGeometry, boundary: str, dtype):
        self.geometry = geometry
        self.buffer = np.zeros(geometry.padded_shape, dtype)
        self._boundary = boundary
        # Per axis: padded positions outside the image and the padded positions they copy from.
        self._fills = []
        for axis, (n, m, b) in enumerate(
            zip(geometry.shape, geometry.padded_shape, geometry.pad_before)
        ):
            outside = np.concatenate([np.arange(0, b), np.arange(b + n, m)])
            if outside.size == 0:
                continue
            source = None
            if boundary != "constant":
                source = boundary_index(outside - b, n, boundary) + b
            self._fills.append((axis, outside, source))

    def fill(self, x: np.ndarray) -> np.ndarray:
        buf = self.buffer
        buf[self.geometry.crop] = x
        for axis, outside, source in self._fills:
            index: list[Any] = [slice(None)] * buf.ndim
            index[axis] = outside
            # Axes filled earlier are already extended, so later axes copy full-length slabs:
            # that is the tensor-product extension scipy.ndimage uses.
            if source is None:
                buf[tuple(index)] = 0
            else:
                buf[tuple(index)] = np.take(buf, source, axis=axis)
        return buf


def in_place(transform, x: np.ndarray, **options) -> None:
    """Apply a ``scipy.fft`` real transform to ``x`` in place (``overwrite_x``)."""
    result = transform(x, overwrite_x=True, **options)
    if not np.may_share_memory(result, x):  # SciPy may still hand back a new array
        np.copyto(x, result)


def rfftn(x: np.ndarray, out: np.ndarray, workers: int) -> np.ndarray:
    """``scipy.fft.rfftn(x)`` over all axes, written into ``out`` where SciPy allows it."""
    if _pocketfft is None:
        return scipy.fft.rfftn(x, workers=workers)
    return _pocketfft.r2c(x, tuple(range(x.ndim)), True, 0, out, workers)


def irfftn(spectrum: np.ndarray, out: np.ndarray, workers: int) -> np.ndarray:
    """``scipy.fft.irfftn`` back to ``out.shape``, written into ``out`` where SciPy allows it."""
    if _pocketfft is None:
        return scipy.fft.irfftn(spectrum, s=out.shape, workers=workers, overwrite_x=True)
    # inorm=2: divide by the number of samples, as irfftn's default normalisation does.
    return _pocketfft.c2r(spectrum, tuple(range(out.ndim)), out.shape[-1], False, 2, out, workers)
