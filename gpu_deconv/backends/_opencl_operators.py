"""The OpenCL blur operators (spatial, separable, DCT, FFT) and the kernels' fused steps.

Each operator works on one :class:`~.opencl_backend.OpenCLBackend` (``be``), its device
buffers and kernels; the direct filters (:mod:`._opencl_filter`) reuse the FFT operator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.fft

from ._base import (
    NOISE_RATIO_LIMIT,
    BlurPlan,
)
from ._planning import (
    dct_gain,
    embed_psf,
    fft_geometry,
)

BOUNDARY_CODES = {"reflect": 0, "nearest": 1, "mirror": 2, "wrap": 3, "constant": 4}


def shape3(values: tuple[int, ...], fill: int = 1) -> tuple[int, int, int]:
    """Per-axis values for 3D kernels: leading axes added with ``fill`` (1 for shapes)."""
    return (fill,) * (3 - len(values)) + tuple(int(n) for n in values)  # type: ignore[return-value]


def i32(*values: int) -> list[np.int32]:
    return [np.int32(v) for v in values]


def whole_args(array: Any) -> list[np.int32]:
    """Crop arguments that read an unpadded array of ``array``'s shape as it is."""
    _, n1, n2 = shape3(array.shape)
    return i32(n1, n2, n1, n2, 0, 0, 0)


def crop_of(shape, offset, padded, row: int | None = None) -> tuple[list[np.int32], tuple]:
    """``crop`` kernel arguments and work size: ``shape`` at ``offset`` out of ``padded``.

    ``row`` is the padded buffer's row length in floats (by default its last axis; an in-place
    R2C buffer's rows are longer).
    """
    _, m1, m2 = shape3(padded)
    n0, n1, n2 = shape3(shape)
    b0, b1, b2 = shape3(offset, fill=0)
    return i32(n1, n2, m1, m2 if row is None else row, b0, b1, b2), (n2, n1, n0)


def optional_buffer(array: Any, stand_in: Any) -> tuple[Any, np.int32]:
    """Kernel arguments of an optional buffer: the buffer (or any valid one) and whether it is."""
    return (stand_in if array is None else array).data, np.int32(array is not None)


def crop_ratio(be, crop, padded, observed, eps, out, background, offset, noise) -> Any:
    """Run the padded operators' crop fused with ``ratio``: one pass instead of two."""
    crop_args, crop_global = crop
    be.launch(
        "crop_ratio",
        crop_global,
        out.data,
        padded.data,
        observed.data,
        *optional_buffer(background, observed),
        np.float32(offset),
        np.float32(eps),
        np.float32(noise),
        np.float32(NOISE_RATIO_LIMIT),
        *crop_args,
    )
    return out


def crop_update(be, crop, padded, point, weights, floor: float | None, out) -> Any:
    """Run the crop fused with the update of ``point`` by the correction in ``padded``.

    As ``multiply`` / ``weighted_update`` or, with a ``floor``, ``clamped_update``.
    """
    crop_args, crop_global = crop
    be.launch(
        "crop_update",
        crop_global,
        out.data,
        padded.data,
        point.data,
        *optional_buffer(weights, point),
        np.int32(floor is not None),
        np.float32(floor or 0.0),
        *crop_args,
    )
    return out


def accelerated_update(
    be, crop_args, padded, point, weights, floor, estimate, mode, aux, alpha=0.0, earlier=None
) -> list[float]:
    """Run ``accelerated_update_partial`` (reductions.cl) in ``mode``; return its two sums.

    The correction is read out of ``padded`` at ``crop_args``.
    """
    # A GPU's items cover whole rows (reductions.cl): rows longer than the items are run as runs.
    contiguous = bool(be._contiguous_shares) or int(crop_args[1]) > be._reduction_items
    return be._reduce(
        "accelerated_update_partial",
        estimate,
        aux,
        point,
        padded,
        *optional_buffer(weights, point),
        np.float32(floor),
        np.float32(alpha),
        np.int32(mode),
        (point if earlier is None else earlier).data,
        *crop_args,
        outputs=2,
        contiguous=contiguous,
    )


def fused_momentum_update(be, crop_args, padded, point, weights, floor, estimate, alpha, out):
    """``Backend.momentum_update``, the correction read out of ``padded`` at ``crop_args``."""
    mode = 1 if alpha > 0 else 0  # 1: also write the next point
    sums = accelerated_update(
        be, crop_args, padded, point, weights, floor, estimate, mode, out, alpha
    )
    return sums[0]


def fused_change_update(be, crop_args, padded, point, weights, floor, out, change, earlier):
    """``Backend.change_update``, the correction read out of ``padded`` at ``crop_args``."""
    sums = accelerated_update(
        be, crop_args, padded, point, weights, floor, out, 2, change, 0.0, earlier
    )
    return sums[0], sums[1]


class FusedUpdates:
    """The updates (plain and accelerated) with a padded operator's crop fused in.

    The operator provides ``_correlated(y)``: the padded buffer holding ``correlate(y)`` and the
    crop (kernel arguments, work size).
    """

    _be: Any  # the OpenCLBackend (not imported: it imports this module)
    _correlated: Callable[[Any], tuple[Any, tuple[list[np.int32], tuple[int, int, int]]]]

    def correlate_update(self, y, point, weights, floor: float | None, out):
        """Update ``point`` by the correction ``correlate(y)`` (see :func:`crop_update`)."""
        padded, crop = self._correlated(y)
        return crop_update(self._be, crop, padded, point, weights, floor, out)

    def correlate_momentum_update(self, y, point, weights, floor, estimate, alpha, out) -> float:
        """``Backend.momentum_update`` by the correction ``correlate(y)``."""
        padded, crop = self._correlated(y)
        return fused_momentum_update(
            self._be, crop[0], padded, point, weights, floor, estimate, alpha, out
        )

    def correlate_change_update(self, y, point, weights, floor, out, change, earlier):
        """``Backend.change_update`` by the correction ``correlate(y)``."""
        padded, crop = self._correlated(y)
        return fused_change_update(
            self._be, crop[0], padded, point, weights, floor, out, change, earlier
        )


def pyvkfft_opencl() -> Any:
    try:
        import pyvkfft.opencl
    except (ImportError, OSError):  # OSError: built without an OpenCL library to load
        return None
    return pyvkfft.opencl


class SpatialOperator:
    method = "spatial"
    inplace = False

    def __init__(self, backend: Any, plan: BlurPlan, psf: np.ndarray, shape, boundary):
        self.plan = plan
        self._be = backend
        self._psf = backend.upload(psf.astype(np.float32))
        self._args = i32(*shape3(shape), *shape3(psf.shape))
        self._mode = np.int32(BOUNDARY_CODES[boundary])
        self._global = tuple(reversed(shape3(shape)))

    def _apply(self, x, out, sign: int):
        self._be.launch(
            "convolve_spatial",
            self._global,
            out.data,
            x.data,
            self._psf.data,
            *self._args,
            np.int32(sign),
            self._mode,
        )
        return out

    def convolve(self, x, out):
        return self._apply(x, out, -1)

    def correlate(self, x, out):
        return self._apply(x, out, 1)


class SeparableOperator:
    method = "separable"
    inplace = False

    def __init__(self, backend: Any, plan: BlurPlan, profiles, shape, boundary: str):
        self.plan = plan
        self._be = backend
        lead = 3 - len(shape)
        self._passes = [
            (backend.upload(p.astype(np.float32)), np.int32(len(p)), np.int32(axis + lead))
            for axis, p in enumerate(profiles)
        ]
        self._dims = i32(*shape3(shape))
        self._mode = np.int32(BOUNDARY_CODES[boundary])
        self._global = tuple(reversed(shape3(shape)))
        self._scratch = [backend.empty(tuple(shape), np.float32) for _ in range(2)]

    def _apply(self, x, out, sign: int):
        source = x
        last = len(self._passes) - 1
        for i, (profile, length, axis) in enumerate(self._passes):
            target = out if i == last else self._scratch[i % 2]
            self._be.launch(
                "convolve_separable",
                self._global,
                target.data,
                source.data,
                profile.data,
                length,
                *self._dims,
                axis,
                np.int32(sign),
                self._mode,
            )
            source = target
        return out

    def convolve(self, x, out):
        return self._apply(x, out, -1)

    def correlate(self, x, out):
        return self._apply(x, out, 1)


class DCTOperator:
    """Symmetric PSF as an exact DCT: reflect/mirror on the image, nearest/constant padded.

    ``"dct2-padded"`` pads the image with the mode's values into a contiguous buffer, runs the
    DCT-II there and crops (:func:`~gpu_deconv.backends._planning.spectral_transform`).
    """

    method = "fft"
    inplace = True

    def __init__(self, backend: Any, plan: BlurPlan, psf: np.ndarray, shape, boundary):
        import pyopencl.array as cla

        self.plan = plan
        self._be = backend
        self.transform = plan.transform
        dct_type = 1 if plan.transform == "dct1" else 2
        grid = tuple(shape)
        self._buffer = None
        if plan.transform == "dct2-padded":
            geometry = fft_geometry(grid, psf.shape, boundary)
            grid = geometry.padded_shape
            self._buffer = cla.empty(backend.queue, grid, np.float32)
            m0, m1, m2 = shape3(grid)
            n0, n1, n2 = shape3(shape)
            b0, b1, b2 = shape3(geometry.pad_before, fill=0)
            mode = BOUNDARY_CODES[boundary]
            self._pad = (i32(n0, n1, n2, m1, m2, b0, b1, b2, mode), (m2, m1, m0))
            self._crop = crop_of(shape, geometry.pad_before, grid)
        # Only axes the PSF blurs and the grid extends: VkFFT refuses length-1 axes, and there
        # a symmetric PSF only scales (the gain has that axis' sum).
        axes = tuple(a - len(grid) for a, n in enumerate(psf.shape) if n > 1 and grid[a] > 1)
        gain = np.broadcast_to(dct_gain(psf, grid, dct_type, np.float32), grid)
        self._gain = backend.upload(gain)
        self._app = backend.fft_plan(grid, dct=dct_type, axes=axes) if axes else None

    def _blur(self, x, out):
        """Blur ``x``; return where the result is: the padded buffer, or ``out`` unpadded."""
        be = self._be
        if self._buffer is not None:
            (pad_args, pad_global), work = self._pad, self._buffer
            be.launch("pad_boundary", pad_global, work.data, x.data, *pad_args)
        else:
            if x is not out:
                be.device_copy(x, out)
            work = out
        if self._app is not None:
            self._app.fft(work)
        be.multiply(work, self._gain, work)
        if self._app is not None:
            self._app.ifft(work)
        return work

    def convolve(self, x, out):
        work = self._blur(x, out)
        if self._buffer is not None:
            crop_args, crop_global = self._crop
            self._be.launch("crop", crop_global, out.data, work.data, *crop_args)
        return out

    # A symmetric PSF equals its flip, so the correlation is the same operator.
    correlate = convolve


class PaddedDCTOperator(FusedUpdates, DCTOperator):
    """``"dct2-padded"``, its crop fused into the ratio and the update.

    (The unpadded DCT has no crop to fuse: the loop runs its plain ratio and update kernels.)
    """

    def convolve_ratio(self, x, observed, eps: float, out, background=None, offset=0.0, noise=0.0):
        """``ratio(observed, convolve(x), eps, out, background, offset, noise)``, crop fused."""
        work = self._blur(x, out)
        return crop_ratio(self._be, self._crop, work, observed, eps, out, background, offset, noise)

    def _correlated(self, y):
        return self._blur(y, y), self._crop


class FFTOperator(FusedUpdates):
    """Padded in-place real FFT blur with a precomputed OTF.

    Same-shape modes pad the input with its boundary extension and crop the result. With
    ``"estimate"`` the padded domain is the work domain: ``convolve`` copies the estimate in
    and crops the image out; ``correlate`` embeds the image in zeros and returns the domain.
    """

    method = "fft"
    transform = "rfft"

    def __init__(self, backend: Any, plan: BlurPlan, psf: np.ndarray, shape, boundary):
        import pyopencl.array as cla

        self.plan = plan
        self.inplace = plan.inplace
        self._be = backend
        geometry = fft_geometry(shape, psf.shape, boundary)
        padded = geometry.padded_shape
        row = 2 * (padded[-1] // 2 + 1)  # in-place R2C rows hold the half spectrum
        buffer_shape = (*padded[:-1], row)
        self._buffer = cla.empty(backend.queue, buffer_shape, np.float32)
        self._spectrum = self._buffer.data  # the same memory, read as complex pairs
        self._n_complex = math.prod(buffer_shape) // 2
        # float32 in, complex64 out: no float64 copies of the padded volume on the host.
        otf = scipy.fft.rfftn(embed_psf(psf, padded, np.float32), workers=-1)
        self._otf = backend.upload(otf)
        self._app = backend.fft_plan(
            buffer_shape, r2c=True, r2c_odd=bool(padded[-1] % 2), ndim=len(padded)
        )
        image = (shape, geometry.pad_before)
        whole = (padded, (0,) * len(padded))
        if boundary == "estimate":
            # convolve: the work domain in as it is, the image out; correlate: the reverse,
            # the image embedded in zeros ("constant").
            self._convolve = (*self._pad_crop(whole, 1, image, row, padded), 0)
            self._correlate = (*self._pad_crop(image, 4, whole, row, padded), 1)
        else:
            mode = BOUNDARY_CODES[boundary]
            self._convolve = (*self._pad_crop(image, mode, image, row, padded), 0)
            self._correlate = (*self._pad_crop(image, mode, image, row, padded), 1)

    @staticmethod
    def _pad_crop(source, mode: int, target, row: int, padded):
        """Kernel arguments: pad ``source`` (shape, offset) in, crop ``target`` (shape, offset)."""
        m0, m1, m2 = shape3(padded)
        (n0, n1, n2), (b0, b1, b2) = shape3(source[0]), shape3(source[1], fill=0)
        pad = (i32(n0, n1, n2, m1, row, b0, b1, b2, mode), (m2, m1, m0))
        return pad, crop_of(target[0], target[1], padded, row)

    def _transform(self, x, direction) -> None:
        """Pad ``x`` into the buffer and leave ``H x`` (or ``H^T x``) there, uncropped."""
        be = self._be
        (pad_args, pad_global), _, conjugate = direction
        be.launch("pad_boundary", pad_global, self._buffer.data, x.data, *pad_args)
        self._app.fft(self._buffer)
        be.launch(
            "complex_multiply",
            (self._n_complex,),
            self._spectrum,
            self._otf.data,
            np.int32(conjugate),
        )
        self._app.ifft(self._buffer)

    def _apply(self, x, out, direction):
        self._transform(x, direction)
        crop_args, crop_global = direction[1]
        self._be.launch("crop", crop_global, out.data, self._buffer.data, *crop_args)
        return out

    def convolve(self, x, out):
        return self._apply(x, out, self._convolve)

    def convolve_ratio(self, x, observed, eps: float, out, background=None, offset=0.0, noise=0.0):
        """``ratio(observed, convolve(x), eps, out, background, offset, noise)``, crop fused."""
        self._transform(x, self._convolve)
        crop = self._convolve[1]
        return crop_ratio(
            self._be, crop, self._buffer, observed, eps, out, background, offset, noise
        )

    def _correlated(self, y):
        self._transform(y, self._correlate)
        return self._buffer, self._correlate[1]

    def correlate(self, x, out):
        return self._apply(x, out, self._correlate)
