"""The NumPy reference backend: ``scipy.ndimage`` for spatial methods, ``scipy.fft`` for FFTs.

This is the oracle every other backend is tested against, and the fallback where no OpenCL
device exists. It computes in float32 or float64; real-to-complex FFTs run on all cores.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys

import numpy as np
import scipy.fft
import scipy.ndimage as ndi

from .. import _noise
from . import _numpy_filter
from ._base import NOISE_RATIO_LIMIT, BlurPlan, BlurSpec, FilterPlan, FilterSpec, MemoryNeed
from ._host_memory import available_host_memory
from ._numpy_transforms import BoundaryPadder, in_place, irfftn, rfftn
from ._planning import (
    CostModel,
    blur_plan,
    choose_method,
    dct_gain,
    embed_psf,
    fft_geometry,
    spectral_transform,
)

# Measured on a 2-core x86-64 machine (float32, 64x128x128 and 80x288x288 volumes);
# only the ratios matter for choosing a method.
NUMPY_COSTS = CostModel(
    spatial_per_mac=7e-10,
    separable_per_mac=5e-10,
    fft_per_nlogn=2.5e-10,
    fft_per_sample=3e-9,
    call_overhead=3e-5,
    dct_factor=1.5,
)


SMALL_TRANSFORM = 2**17
# Fraction of the available host memory one call may plan to take (the rest is for the OS,
# the caller's own arrays and allocator slack).
HOST_MEMORY_HEADROOM = 0.8


class _SpatialOperator:
    method = "spatial"
    inplace = False  # scipy.ndimage cannot write over its input

    def __init__(self, plan: BlurPlan, psf: np.ndarray, boundary: str):
        self.plan = plan
        self._psf = psf
        self._mode = boundary

    def convolve(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        ndi.convolve(x, self._psf, output=out, mode=self._mode)
        return out

    def correlate(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        ndi.correlate(x, self._psf, output=out, mode=self._mode)
        return out


class _SeparableOperator:
    method = "separable"
    inplace = False

    def __init__(self, plan: BlurPlan, profiles: list[np.ndarray], boundary: str, shape, dtype):
        self.plan = plan
        self._profiles = profiles
        self._mode = boundary
        # Two scratch buffers so that consecutive 1-D passes never read what they write.
        self._scratch = (np.empty(shape, dtype), np.empty(shape, dtype))

    def _apply(self, filter1d, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        source = x
        last = len(self._profiles) - 1
        for axis, profile in enumerate(self._profiles):
            target = out if axis == last else self._scratch[axis % 2]
            filter1d(source, profile, axis=axis, output=target, mode=self._mode)
            source = target
        return out

    def convolve(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        return self._apply(ndi.convolve1d, x, out)

    def correlate(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        return self._apply(ndi.correlate1d, x, out)


class _DCTOperator:
    """Blur by a symmetric PSF as an exact DCT diagonalisation.

    ``"dct2"``/``"dct1"``: reflect/mirror, on the image itself (no padding). ``"dct2-padded"``:
    nearest/constant, a DCT-II of the image padded with the mode's values, then cropped.
    """

    method = "fft"
    inplace = True  # the input is consumed by the forward transform before out is written

    def __init__(self, plan: BlurPlan, psf: np.ndarray, shape, boundary: str, dtype, workers):
        self.plan = plan
        self.transform = plan.transform
        self._type = 1 if plan.transform == "dct1" else 2
        self._axes = tuple(a for a, n in enumerate(psf.shape) if n > 1)
        self._workers = workers
        grid = tuple(shape)
        self._padder = None
        if plan.transform == "dct2-padded":
            self._padder = BoundaryPadder(fft_geometry(grid, psf.shape, boundary), boundary, dtype)
            grid = self._padder.geometry.padded_shape
        self._gain = dct_gain(psf, grid, self._type, dtype)

    def convolve(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        if not self._axes:  # a 1x1x1 PSF only scales
            return np.multiply(x, self._gain, out=out)
        # In place (in out, or the padded buffer): no fresh volume-sized arrays in the loop.
        if self._padder is not None:
            work = self._padder.fill(x)
        else:
            if x is not out:
                np.copyto(out, x)
            work = out
        options = dict(type=self._type, axes=self._axes, workers=self._workers)
        in_place(scipy.fft.dctn, work, **options)
        work *= self._gain
        in_place(scipy.fft.idctn, work, **options)
        if self._padder is not None:
            out[...] = work[self._padder.geometry.crop]
        return out

    # A symmetric PSF equals its flip, so the correlation is the same operator.
    correlate = convolve


class _FFTOperator:
    """Real-FFT blur with a precomputed OTF on a padded domain.

    Same-shape modes pad the input with its boundary extension and crop the result. With
    ``"estimate"`` the padded domain is the work domain itself: ``convolve`` transforms the
    estimate as it is and crops the image out; ``correlate`` embeds the image in zeros and
    returns the whole domain.
    """

    method = "fft"
    transform = "rfft"

    def __init__(self, plan: BlurPlan, psf: np.ndarray, shape, boundary: str, dtype, workers):
        self.plan = plan
        self.inplace = plan.inplace
        geometry = fft_geometry(shape, psf.shape, boundary)
        self._estimate = boundary == "estimate"
        # The estimate mode's correlation embeds the image in zeros: the "constant" padder.
        self._padder = BoundaryPadder(geometry, "constant" if self._estimate else boundary, dtype)
        self._workers = workers
        # The OTF in the compute dtype: a float64 detour would triple the set-up's peak memory.
        self._otf = scipy.fft.rfftn(embed_psf(psf, geometry.padded_shape, dtype), workers=workers)
        self._otf_conj = np.conj(self._otf)
        # Transforms write into these: fresh ~volume-sized arrays per transform made glibc
        # return and re-fault their pages (confocal case: 62 -> 47 ms per iteration).
        self._spectrum = np.empty_like(self._otf)
        self._result = np.empty(geometry.padded_shape, dtype)

    def _apply(self, padded: np.ndarray, otf: np.ndarray, out: np.ndarray, crop) -> np.ndarray:
        spectrum = rfftn(padded, self._spectrum, self._workers)
        spectrum *= otf
        if crop is None:  # the whole domain: transform straight into out
            return _copy_result(irfftn(spectrum, out, self._workers), out)
        out[...] = irfftn(spectrum, self._result, self._workers)[crop]
        return out

    def convolve(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        crop = self._padder.geometry.crop
        if self._estimate:
            return self._apply(x, self._otf, out, crop)
        return self._apply(self._padder.fill(x), self._otf, out, crop)

    def correlate(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        padded = self._padder.fill(x)
        crop = None if self._estimate else self._padder.geometry.crop
        return self._apply(padded, self._otf_conj, out, crop)


def _copy_result(result: np.ndarray, out: np.ndarray) -> np.ndarray:
    if result is not out:  # the public scipy.fft path returns a new array
        np.copyto(out, result)
    return out


# Bytes NumPy's buffered float64 reductions hold while they run: einsum casts both operands
# to float64 through buffers of np.getbufsize() elements (measured: 132 KiB for 8192).
REDUCTION_SCRATCH = 2 * np.getbufsize() * 8 + 2**12
MEAN_FLOOR = 1e-30  # the model mean of a KL term is kept above it (ln 0 is -inf)


def _dot64(a: np.ndarray, b: np.ndarray) -> float:
    """``sum(a * b)`` in float64 through einsum's buffered casts: no image-sized temporaries."""
    return float(np.einsum("i,i->", a.reshape(-1), b.reshape(-1), dtype=np.float64))


class NumpyBackend:
    """CPU reference backend on NumPy arrays.

    Parameters
    ----------
    workers : int, optional
        Threads for ``scipy.fft``; by default all cores.
    """

    name = "numpy"
    cost_model = NUMPY_COSTS
    dtypes: tuple[str, ...] = ("float32", "float64")
    transforms: tuple[str, ...] = ("rfft", "dct1", "dct2")
    auto_priority = 1  # the fallback: any backend that wants "auto" ranks above it
    # Calls share no state (operators are per call), so threads need no lock.
    lock = contextlib.nullcontext()
    uses_host_memory = True
    device_name = ""
    reduction_scratch = REDUCTION_SCRATCH

    def __init__(self, workers: int | None = None):
        self.workers = workers or os.cpu_count() or 1
        self._tv_guarded = 0

    @staticmethod
    def list_devices() -> list:
        return []

    def to_backend(self, array: np.ndarray) -> np.ndarray:
        # Host arrays need no transfer: share the (validated, private) array, never copy it.
        return np.ascontiguousarray(array)

    def to_numpy(self, array: np.ndarray, region=None) -> np.ndarray:
        return np.array(array if region is None else array[region], copy=True, order="C")

    def full(self, shape, value: float, dtype) -> np.ndarray:
        return np.full(shape, value, dtype=dtype)

    def empty(self, shape, dtype) -> np.ndarray:
        return np.empty(shape, dtype)

    def copy(self, array: np.ndarray) -> np.ndarray:
        return array.copy()

    def plan_blur(self, spec: BlurSpec) -> BlurPlan:
        """Plan method, transform, work domain and host memory of the operator (no allocation).

        The operator's own buffers: the separable path's two scratch images, the DCT gain, or
        the padded FFT's padded buffer, inverse-transform output, OTF and its conjugate,
        spectrum and one boundary slab (checked against tracemalloc).
        """
        method, profiles = choose_method(
            spec.method, spec.shape, spec.psf, spec.boundary, spec.dtype, self.cost_model
        )
        transform = ""
        if method == "fft":
            transform = spectral_transform(
                spec.psf, spec.shape, spec.boundary, spec.dtype, self.cost_model
            )
        n = math.prod(spec.shape) * spec.dtype.itemsize
        small = 4 * spec.psf.size * 8 + 2**16  # PSF copies, index maps, profiles
        if method == "spatial":
            memory = MemoryNeed(small, 0)
        elif method == "separable":
            memory = MemoryNeed(2 * n + small, n)
        elif transform in ("dct1", "dct2"):
            memory = MemoryNeed(n + small, n)
        elif transform == "dct2-padded":
            padded = fft_geometry(spec.shape, spec.psf.shape, spec.boundary).padded_shape
            real = math.prod(padded) * spec.dtype.itemsize
            slab = max(real * (m - k) // m for k, m in zip(spec.shape, padded))
            memory = MemoryNeed(2 * real + slab + small, real)  # padded buffer and gain
        else:
            padded = fft_geometry(spec.shape, spec.psf.shape, spec.boundary).padded_shape
            real = math.prod(padded) * spec.dtype.itemsize
            spectrum = math.prod(padded[:-1]) * (padded[-1] // 2 + 1) * 2 * spec.dtype.itemsize
            # The padder's largest slab: the boundary extension along one axis, copied at once.
            slab = max(real * (m - k) // m for k, m in zip(spec.shape, padded))
            memory = MemoryNeed(2 * real + 3 * spectrum + slab + small, spectrum)
        return blur_plan(spec, method, transform, memory, profiles)

    def blur_operator(self, spec: BlurSpec):
        plan = self.plan_blur(spec)
        psf, shape, boundary = spec.psf, spec.shape, spec.boundary
        if plan.method == "spatial":
            return _SpatialOperator(plan, psf, boundary)
        if plan.method == "separable":
            assert plan.profiles is not None  # choose_method guarantees it
            return _SeparableOperator(plan, plan.profiles, boundary, shape, spec.dtype)
        workers = self.fft_workers(plan.work_shape)
        if plan.transform != "rfft":
            return _DCTOperator(plan, psf, shape, boundary, spec.dtype, workers)
        return _FFTOperator(plan, psf, shape, boundary, spec.dtype, workers)

    def plan_filter(self, spec: FilterSpec) -> FilterPlan:
        return _numpy_filter.plan_filter(spec, self.transforms)

    def spectral_filter(self, spec: FilterSpec) -> _numpy_filter.NumpyFilter:
        plan = self.plan_filter(spec)
        return _numpy_filter.NumpyFilter(spec, plan, self.fft_workers(plan.domain))

    def memory_limits(self) -> MemoryNeed:
        """Available host memory (with headroom); unbounded where the OS does not say."""
        available = available_host_memory()
        total = sys.maxsize if available is None else int(available * HOST_MEMORY_HEADROOM)
        return MemoryNeed(total, total)

    def check_memory(self, need: MemoryNeed) -> None:
        """Host memory: nothing to refuse up front (the OS may swap; tile_shape='auto' plans)."""
        return None

    def fft_workers(self, shape) -> int:
        """Return the FFT threads for ``shape``: one below 2**17 samples.

        Starting threads costs more than it saves there (70x70 DCT pair: 53 us on one thread,
        174 us on two).
        """
        return 1 if math.prod(shape) < SMALL_TRANSFORM else self.workers

    def ratio(self, observed, blurred, eps: float, out, background=None, offset=0.0, noise=0.0):
        model = blurred
        if background is not None:
            model = np.add(blurred, background, out=out)
        if offset:
            model = np.add(model, offset, out=out)
        small = model <= eps
        risky = model <= noise if noise else None  # read before out (may be model) is written
        np.divide(observed, model, out=out, where=~small)
        out[small] = 0
        if risky is not None:  # round-off in the denominator: no ratio beyond the limit there
            np.greater(out, NOISE_RATIO_LIMIT, out=small)  # small's buffer reused: no temporary
            small &= risky
            out[small] = 0
        return out

    def multiply(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
        return np.multiply(a, b, out=out)

    def weighted_update(self, estimate, correction, weights, out) -> np.ndarray:
        np.multiply(estimate, correction, out=out)
        return np.multiply(out, weights, out=out)

    def inverse_weights(self, weights: np.ndarray, threshold: float, out: np.ndarray):
        kept = weights > threshold
        np.divide(1, weights, out=out, where=kept)
        out[~kept] = 0
        return out

    def keep_where(self, x: np.ndarray, weights: np.ndarray, out: np.ndarray) -> np.ndarray:
        return np.multiply(x, weights > 0, out=out)

    def extrapolate(self, estimate, previous, alpha: float, floor: float, out) -> np.ndarray:
        np.subtract(estimate, previous, out=out)
        out *= alpha
        out += estimate
        # Masked copies rather than np.maximum and fancy indexing: several times faster here.
        np.copyto(out, floor, where=out < floor)
        np.copyto(out, 0, where=estimate <= 0)
        np.copyto(previous, estimate)
        return out

    def clamped_update(self, point, correction, weights, floor: float, out) -> np.ndarray:
        lift = point > 0  # live voxels (found before out, which may be point, is written)...
        if weights is not None:
            lift &= weights > 0
        np.multiply(point, correction, out=out)
        if weights is not None:
            out *= weights
        lift &= out < floor  # ...below the floor; the others stay 0
        np.copyto(out, floor, where=lift)
        return out

    def momentum_update(self, point, correction, weights, floor, estimate, alpha, out) -> float:
        fresh = self.clamped_update(point, correction, weights, floor, out=correction)
        agreement = 0.0
        if point is not estimate:
            np.subtract(point, estimate, out=point)  # p - f: the point is not needed again
        change = np.subtract(fresh, estimate, out=estimate)
        if point is not estimate:
            agreement = _dot64(change, point)
        if alpha > 0:
            np.multiply(change, alpha, out=out)
            out += fresh
            np.copyto(out, floor, where=out < floor)
            np.copyto(out, 0, where=fresh == 0)  # voxels out of the estimate stay out
        np.copyto(estimate, fresh)
        return agreement

    def change_update(self, point, correction, weights, floor, out, change, earlier):
        self.clamped_update(point, correction, weights, floor, out=out)
        np.subtract(out, point, out=change)
        return _dot64(change, earlier), _dot64(change, change)

    def tv_factor(
        self, estimate, weights, spacing, strength, smoothing, floor, out, periodic=False
    ) -> None:
        kept = None if weights is None else weights > 0
        steps = spacing[3 - estimate.ndim :]
        divergence = _tv_divergence(estimate, steps, smoothing, kept, periodic)
        np.multiply(divergence, -strength, out=out)
        out += 1.0
        guard = out < floor
        if kept is not None:
            guard &= kept  # voxels out of the estimate stay 0, unguarded
        self._tv_guarded += int(np.count_nonzero(guard))
        np.maximum(out, floor, out=out)
        np.divide(1.0, out, out=out)
        if weights is not None:
            out *= weights

    def tv_guarded(self) -> int:
        count, self._tv_guarded = self._tv_guarded, 0
        return count

    def discrepancy_terms(self, observed, blurred, mask, background, offset, gain, scale, table):
        mean = _model_mean(blurred, background, offset, gain)
        g = observed.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = 2.0 * (mean - g + np.where(g > 0, g * np.log(g / mean), 0.0))
        expected = _noise.expected_2kl_approx(mean / scale) * scale
        if mask is not None:
            terms, expected = terms[mask > 0], expected[mask > 0]
        return float(terms.sum()), float(expected.sum())

    def holdout_terms(self, validation, blurred, mask, background, offset, gain) -> float:
        mean = _model_mean(blurred, background, offset, gain)
        terms = validation * np.log(mean) - mean
        return float((terms if mask is None else terms[mask > 0]).sum())

    def synchronize(self) -> None:
        return None


def _model_mean(blurred: np.ndarray, background, offset: float, gain: float) -> np.ndarray:
    """``gain (blurred + background + offset)`` in float64, kept off 0 (a KL needs ``ln mu``)."""
    mean = blurred.astype(np.float64)
    if background is not None:
        mean += background
    mean += offset
    mean *= gain
    return np.maximum(mean, MEAN_FLOOR, out=mean)


def _tv_divergence(
    f: np.ndarray, spacing, smoothing: float, kept=None, periodic: bool = False
) -> np.ndarray:
    """``div(grad f / sqrt(|grad f|^2 + smoothing^2))``: forward gradient, backward divergence.

    Differences past an axis' end, or to a voxel ``kept`` excludes, are 0 (Neumann); with
    ``periodic``, the last index's difference is to the first.
    """
    grads = []
    for axis, step in enumerate(spacing):
        if periodic:
            grad = np.roll(f, -1, axis) - f
            if kept is not None:
                grad *= kept & np.roll(kept, -1, axis)
        else:
            ahead, here = _neighbours(axis, f.ndim)
            grad = np.zeros_like(f)
            np.subtract(f[ahead], f[here], out=grad[here])
            if kept is not None:
                grad[here] *= kept[ahead] & kept[here]
        grad /= step
        grads.append(grad)
    norm = np.full_like(f, smoothing * smoothing)
    for grad in grads:
        norm += grad * grad
    np.sqrt(norm, out=norm)
    divergence = np.zeros_like(f)
    for axis, (grad, step) in enumerate(zip(grads, spacing)):
        grad /= norm * step  # the flux p_i / s_i; 0 at the last index (Neumann)
        divergence += grad
        if periodic:
            divergence -= np.roll(grad, 1, axis)
        else:
            ahead, here = _neighbours(axis, f.ndim)
            divergence[ahead] -= grad[here]
    return divergence


def _neighbours(axis: int, ndim: int) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Index pairs ``(x + e_axis, x)`` over every ``x`` that has a successor on ``axis``."""
    ahead = [slice(None)] * ndim
    here = [slice(None)] * ndim
    ahead[axis], here[axis] = slice(1, None), slice(None, -1)
    return tuple(ahead), tuple(here)
