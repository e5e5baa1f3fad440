"""OpenCL backend: every iteration on device buffers, through pyopencl.

Each backend owns a context and a queue on its device; arrays are pyopencl arrays on that
queue, so backends on different devices (or threads of dask workers) never share state.
``to_backend`` / ``to_numpy`` are the only host-device transfers of image data; the PSF (or its
OTF / DCT gain) is uploaded once when an operator is prepared. Our kernels live in
``kernels/*.cl`` and are compiled once per backend (``get_backend`` keeps one per device);
FFTs and DCTs come from VkFFT (pyvkfft). Computation is float32.
"""

from __future__ import annotations

import importlib.resources
import math
import threading
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ._base import (
    NOISE_RATIO_LIMIT,
    BackendUnavailableError,
    BlurPlan,
    BlurSpec,
    FilterPlan,
    FilterSpec,
    MemoryNeed,
)
from ._calibration import load_costs
from ._opencl_devices import (
    device_problem,
    first_error_line,
    import_pyopencl,
    is_fast_device,
    list_devices,
    pick_device,
    unusable_error,
)
from ._opencl_operators import (
    DCTOperator,
    FFTOperator,
    PaddedDCTOperator,
    SeparableOperator,
    SpatialOperator,
    crop_of,
    fused_change_update,
    fused_momentum_update,
    i32,
    optional_buffer,
    pyvkfft_opencl,
    shape3,
    whole_args,
)
from ._planning import (
    CostModel,
    blur_plan,
    choose_method,
    fft_geometry,
    spectral_transform,
)

KERNEL_FILES = (
    "rl_ratio",
    "multiply",
    "weighted_update",
    "inverse_weights",
    "keep_where",
    "extrapolate",
    "clamped_update",
    "tv_factor",
    "complex_multiply",
    "wiener_spectrum",
    "pad_boundary",
    "crop",
    "crop_ratio",
    "crop_update",
    "convolve_spatial",
    "convolve_separable",
)
PYVKFFT_HINT = (
    "pyvkfft (VkFFT) is needed for method='fft' on OpenCL; it builds from source: "
    "`apt-get install opencl-headers ocl-icd-opencl-dev` (or conda's ocl-icd), then "
    "`VKFFT_BACKEND=opencl pip install pyvkfft`; methods 'spatial' and 'separable' work without it"
)
# Fraction of device memory a call may plan to use (the driver and VkFFT need the rest).
MEMORY_HEADROOM = 0.9

# Seconds per unit (see CostModel). CPU: measured with PoCL 3.0 on 2 cores (64x256x256 float32:
# VkFFT R2C+C2R pair 150 ms, DCT-II pair 290 ms). GPU: order-of-magnitude figures for a
# data-centre GPU (memory-bound FFTs and elementwise passes); only ratios matter.
OPENCL_CPU_COSTS = CostModel(
    spatial_per_mac=1.5e-9,
    separable_per_mac=1.5e-9,
    fft_per_nlogn=1.6e-9,
    fft_per_sample=2e-9,
    call_overhead=2e-4,
    dct_factor=2.1,  # VkFFT DCT-II 147 ms vs R2C 70 ms on 64x256x256
)
OPENCL_GPU_COSTS = CostModel(
    spatial_per_mac=2e-12,
    separable_per_mac=4e-12,
    fft_per_nlogn=1e-12,
    fft_per_sample=2e-11,
    call_overhead=1e-5,
    dct_factor=1.5,
)

FLOAT32 = np.dtype(np.float32)
FFT_PLAN_CACHE_SIZE = 8  # VkFFT plans compile kernels per shape: keep the recent ones
# Work items of a float64 reduction (reductions.cl): enough to fill the device, few partial
# sums to bring back (512 KiB on a GPU, 32 KiB on a CPU).
REDUCTION_ITEMS = {"gpu": 65536, "cpu": 4096}
# Most work items of the work group that combines one output's partial sums on the device
# (reductions.cl's combine_partials; fewer where the device allows fewer), and the code of
# each way of combining.
COMBINE_ITEMS = 64
COMBINE_CODES = {np.sum: 0, np.min: 1, np.max: 2}


class DeviceStatistics(NamedTuple):
    """One pass over a device array (:meth:`OpenCLBackend.statistics`)."""

    nonfinite: int
    kept: int
    sum: float
    min: float
    max: float
    dim: int
    above: int


class InsufficientDeviceMemoryError(MemoryError):
    """The planned buffers do not fit the OpenCL device (use a smaller volume or tiles)."""


def _kernel_source() -> str:
    folder = importlib.resources.files("gpu_deconv.backends").joinpath("kernels")
    parts = [folder.joinpath("boundary_index.cl").read_text()]
    parts += [folder.joinpath(f"{name}.cl").read_text() for name in KERNEL_FILES]
    return "\n".join(parts)


class OpenCLBackend:
    """Backend on one OpenCL device, chosen as in :func:`pick_device`.

    The backend owns its context and queue (no process-wide current device): several
    backends on several devices can be used in turn or from different threads.

    Parameters
    ----------
    device : str, optional
        ``"gpu"``, ``"cpu"``, a device name substring, ``"name#k"`` for the k-th match; by
        default the device set for this process (:func:`~gpu_deconv.dask.assign_devices`),
        ``$GPU_DECONV_DEVICE`` or the first GPU.
    queue : pyopencl.CommandQueue, optional
        Run on this queue, its context and device instead (keyword only; ``device`` is then
        ignored): how arrays another library made (``pyclesperanto_prototype.push``) are
        deconvolved where they are.

    Raises
    ------
    BackendUnavailableError
        If pyopencl is missing, no device matches, or OpenCL was initialised in the parent of
        this (forked) process.
    """

    name = "opencl"
    dtypes: tuple[str, ...] = ("float32",)
    uses_host_memory = False
    list_devices = staticmethod(list_devices)

    def __init__(self, device: str | None = None, *, queue: Any = None):
        cl = import_pyopencl()
        import pyopencl.array

        if queue is None:
            chosen = pick_device(device)
        else:  # a queue the caller owns (clesperanto's): its device, checked like any other
            chosen = queue.device
            problem = device_problem(chosen)
            if problem is not None:
                raise unusable_error(chosen, problem)
        self._cl = cl
        self._array = pyopencl.array
        self.device = chosen
        self.device_name = chosen.name.strip()
        # Our own context and queue: every buffer, kernel and FFT plan of this backend lives
        # there, whatever other backends (or clesperanto's current device) use. Or the
        # caller's, so that its arrays are used where they are.
        self.context = cl.Context([chosen]) if queue is None else queue.context
        self.queue = cl.CommandQueue(self.context) if queue is None else queue
        is_gpu = is_fast_device(chosen)
        self._reduction_items = REDUCTION_ITEMS["gpu" if is_gpu else "cpu"]
        self._contiguous_shares = np.int32(not is_gpu)  # how reductions split (share())
        self.reduction_scratch = self._reduction_items * 8  # the partial sums
        # Measured constants (`gpu-deconv calibrate`) where this device has them.
        self.cost_model = load_costs(chosen, OPENCL_GPU_COSTS if is_gpu else OPENCL_CPU_COSTS)
        # On a CPU device the NumPy backend (priority 1) is faster: backend="auto" keeps it.
        self.auto_priority = 2 if is_gpu else 0
        self.transforms: tuple[str, ...] = ("rfft", "dct1", "dct2") if pyvkfft_opencl() else ()
        self._warned_no_fft = False
        try:
            program = cl.Program(self.context, _kernel_source()).build()
        except cl.Error as exc:  # a compiler the probe did not trip (device_problem)
            raise unusable_error(chosen, first_error_line(exc)) from None
        self.kernels = {name: cl.Kernel(program, name) for name in KERNEL_FILES}
        self._fft_plans: dict[tuple, Any] = {}
        self._reductions: dict[str, Any] | None = None  # built on first use
        self._combine_group = COMBINE_ITEMS
        self._guarded: Any = None  # the count of tv_factor's guarded voxels, made on first use
        # pyopencl kernels hold their arguments between set and enqueue: one thread at a time.
        self.lock = threading.RLock()

    def __repr__(self) -> str:
        return f"OpenCLBackend(device={self.device.name.strip()!r})"

    # -- transfers: the only host <-> device copies of image data -----------------------------
    def to_backend(self, array: np.ndarray) -> Any:
        if array.dtype != np.float32:
            raise TypeError(f"the opencl backend computes in float32, got {array.dtype}")
        if isinstance(array, self._array.Array):  # already here (a device image's pieces)
            return array
        return self._array.to_device(self.queue, np.ascontiguousarray(array))

    def to_numpy(self, array: Any, region: tuple[slice, ...] | None = None) -> np.ndarray:
        host = array.get(queue=self.queue)
        # The whole buffer comes over, then the region is cut out on the host.
        return host if region is None else np.ascontiguousarray(host[region])

    def region_copy(self, array: Any, region: tuple[slice, ...] | None = None) -> Any:
        """Return a new device array holding ``array[region]`` (all of it by default)."""
        if region is None:
            return self.copy(array)
        shape = tuple(s.stop - s.start for s in region)
        out = self.empty(shape, np.float32)
        crop_args, crop_global = crop_of(shape, tuple(s.start for s in region), array.shape)
        self.launch("crop", crop_global, out.data, array.data, *crop_args)
        return out

    # -- device-side allocation ------------------------------------------------------------------
    def full(self, shape, value: float, dtype) -> Any:
        out = self.empty(shape, dtype)
        out.fill(np.float32(value), queue=self.queue)
        return out

    def empty(self, shape, dtype) -> Any:
        return self._array.empty(self.queue, tuple(shape), np.float32)

    def copy(self, array: Any) -> Any:
        out = self.empty(array.shape, np.float32)
        return self.device_copy(array, out)

    def device_copy(self, source: Any, out: Any) -> Any:
        """Copy one device buffer into another of the same size (no host transfer)."""
        self._cl.enqueue_copy(self.queue, out.data, source.data)
        return out

    # -- kernels -----------------------------------------------------------------------------------
    def launch(self, name: str, global_size: tuple[int, ...], *args: Any) -> None:
        """Enqueue kernel ``name`` on ``global_size`` work items (pyopencl argument order)."""
        self.kernels[name](self.queue, global_size, None, *args)

    def ratio(self, observed, blurred, eps: float, out, background=None, offset=0.0, noise=0.0):
        self.launch(
            "rl_ratio",
            (out.size,),
            out.data,
            observed.data,
            blurred.data,
            *optional_buffer(background, blurred),
            np.float32(offset),
            np.float32(eps),
            np.float32(noise),
            np.float32(NOISE_RATIO_LIMIT),
        )
        return out

    def multiply(self, a: Any, b: Any, out: Any) -> Any:
        self.launch("multiply", (out.size,), out.data, a.data, b.data)
        return out

    def weighted_update(self, estimate: Any, correction: Any, weights: Any, out: Any) -> Any:
        self.launch(
            "weighted_update", (out.size,), out.data, estimate.data, correction.data, weights.data
        )
        return out

    def inverse_weights(self, weights: Any, threshold: float, out: Any) -> Any:
        self.launch("inverse_weights", (out.size,), out.data, weights.data, np.float32(threshold))
        return out

    def keep_where(self, x: Any, weights: Any, out: Any) -> Any:
        self.launch("keep_where", (out.size,), out.data, x.data, weights.data)
        return out

    def extrapolate(self, estimate, previous, alpha: float, floor: float, out) -> Any:
        self.launch(
            "extrapolate",
            (out.size,),
            out.data,
            previous.data,
            estimate.data,
            np.float32(alpha),
            np.float32(floor),
        )
        return out

    def clamped_update(self, point, correction, weights, floor: float, out) -> Any:
        has_weights = weights is not None
        self.launch(
            "clamped_update",
            (out.size,),
            out.data,
            point.data,
            correction.data,
            (weights if has_weights else correction).data,
            np.int32(has_weights),
            np.float32(floor),
        )
        return out

    def tv_factor(
        self, estimate, weights, spacing, strength, smoothing, floor, out, periodic=False
    ) -> None:
        import pyopencl.array as cla

        if self._guarded is None:
            self._guarded = cla.zeros(self.queue, (1,), np.int32)
        nz, ny, nx = shape3(estimate.shape)
        self.launch(
            "tv_factor",
            (nx, ny, nz),
            out.data,
            estimate.data,
            *optional_buffer(weights, estimate),
            *i32(nz, ny, nx),
            *(np.float32(step) for step in spacing),
            np.float32(strength),
            np.float32(smoothing),
            np.float32(floor),
            np.int32(periodic),
            self._guarded.data,
        )

    def tv_guarded(self) -> int:
        if self._guarded is None:
            return 0
        count = int(self._guarded.get()[0])
        self._guarded.fill(0)
        return count

    def discrepancy_terms(self, observed, blurred, mask, background, offset, gain, scale, table):
        from .. import _noise

        kl, expected = self._reduce(
            "discrepancy_partial",
            observed,
            blurred,
            *optional_buffer(mask, blurred),
            *optional_buffer(background, blurred),
            np.float64(offset),
            np.float64(gain),
            np.float64(scale),
            table,
            np.int32(table.size),
            np.float64(_noise.LOG_MIN),
            np.float64(_noise.LOG_STEP),
            outputs=2,
        )
        return kl, expected

    def holdout_terms(self, validation, blurred, mask, background, offset, gain) -> float:
        return self._reduce(
            "holdout_partial",
            validation,
            blurred,
            *optional_buffer(mask, blurred),
            *optional_buffer(background, blurred),
            np.float64(offset),
            np.float64(gain),
        )[0]

    def momentum_update(self, point, correction, weights, floor, estimate, alpha, out) -> float:
        whole = whole_args(estimate)  # the correction is unpadded
        return fused_momentum_update(
            self, whole, correction, point, weights, floor, estimate, alpha, out
        )

    def change_update(self, point, correction, weights, floor, out, change, earlier):
        whole = whole_args(out)  # the correction is unpadded
        return fused_change_update(
            self, whole, correction, point, weights, floor, out, change, earlier
        )

    def _reduce(
        self,
        name: str,
        first: Any,
        *args: Any,
        outputs: int = 1,
        contiguous: bool | None = None,
        combines: list[Callable[[np.ndarray], Any]] | None = None,
    ) -> list[float]:
        """Run a float64 partial-sum kernel (``reductions.cl``); combine its partials.

        ``first`` (a backend array) sets the element count; ``args`` are arrays or scalars in
        the kernel's order. The partials are combined on the device (``combine_partials``):
        one float64 per output comes to the host. ``contiguous`` overrides how the items share
        the elements (by default, by device); ``combines`` how each output's partials are
        combined (``np.sum``, the default, ``np.min`` or ``np.max``). Under the backend's lock:
        kernels hold their arguments between set and enqueue.
        """
        import pyopencl.array as cla

        with self.lock:
            reductions = self._reduction_kernels()
            items = self._reduction_items
            partial = cla.empty(self.queue, (outputs * items,), np.float64)
            values = [x.data if isinstance(x, cla.Array) else x for x in (first, *args)]
            n = np.uint64(first.size)
            runs = self._contiguous_shares if contiguous is None else np.int32(contiguous)
            reductions[name](self.queue, (items,), None, partial.data, *values, n, runs)
            ops = combines or [np.sum] * outputs
            codes = sum(COMBINE_CODES[op] << (2 * row) for row, op in enumerate(ops))
            combined = cla.empty(self.queue, (outputs,), np.float64)
            group = self._combine_group
            reductions["combine_partials"](
                self.queue,
                (group, outputs),
                (group, 1),
                combined.data,
                partial.data,
                np.uint32(items),
                np.uint32(codes),
                self._cl.LocalMemory(8 * group),
            )
            return [float(value) for value in combined.get()]

    def _reduction_kernels(self) -> dict[str, Any]:
        """Build ``reductions.cl`` on first use (it needs ``cl_khr_fp64``)."""
        if self._reductions is None:
            folder = importlib.resources.files("gpu_deconv.backends").joinpath("kernels")
            source = "\n".join(
                folder.joinpath(name).read_text() for name in ("boundary_index.cl", "reductions.cl")
            )
            try:
                program = self._cl.Program(self.context, source).build()
            except self._cl.Error as exc:
                raise BackendUnavailableError(
                    f"{self.device_name!r} cannot build float64 reductions (cl_khr_fp64), "
                    "which acceleration, stopping rules, return_info and device-array images "
                    "need; use a fixed count without them, backend='numpy', or image.get()"
                ) from exc
            names = (
                "accelerated_update_partial",
                "discrepancy_partial",
                "holdout_partial",
                "statistics_partial",
                "combine_partials",
            )
            self._reductions = {k: self._cl.Kernel(program, k) for k in names}
            # The combining work group: a power of two the device allows for that kernel.
            allowed = self._reductions["combine_partials"].get_work_group_info(
                self._cl.kernel_work_group_info.WORK_GROUP_SIZE, self.device
            )
            self._combine_group = 1 << (min(COMBINE_ITEMS, int(allowed)).bit_length() - 1)
        return self._reductions

    def statistics(
        self, x: Any, mask: Any = None, other: Any = None, shift: float = 0.0, below: float = 0.0
    ) -> DeviceStatistics:
        """Summarise a device array in one pass; only the partial results come to the host.

        ``mask`` (float, > 0 where kept) restricts the count and sum; ``below`` counts the
        voxels in ``(0, below)``; ``other`` counts the voxels above ``other + shift``.
        """
        nonfinite, kept, total, lowest, highest, dim, above = self._reduce(
            "statistics_partial",
            x,
            *optional_buffer(mask, x),
            *optional_buffer(other, x),
            np.float32(shift),
            np.float32(below),
            outputs=7,
            combines=[np.sum, np.sum, np.sum, np.min, np.max, np.sum, np.sum],
        )
        return DeviceStatistics(
            int(nonfinite), int(kept), total, lowest, highest, int(dim), int(above)
        )

    def synchronize(self) -> None:
        self.queue.finish()

    # -- operators ---------------------------------------------------------------------------------
    def _choose(self, spec: BlurSpec) -> tuple[str, Any, str]:
        if spec.dtype != np.float32:
            raise ValueError("the opencl backend computes in float32; pass dtype='float32'")
        needs_fft = spec.method == "fft" or spec.boundary == "estimate"
        if needs_fft and "rfft" not in self.transforms:
            raise BackendUnavailableError(PYVKFFT_HINT)
        if spec.method == "auto" and not self.transforms and not self._warned_no_fft:
            self._warned_no_fft = True
            warnings.warn(
                f"OpenCL runs without FFTs (method='auto' picks spatial or separable); "
                f"{PYVKFFT_HINT}",
                RuntimeWarning,
                stacklevel=5,
            )
        method, profiles = choose_method(
            spec.method,
            spec.shape,
            spec.psf,
            spec.boundary,
            FLOAT32,
            self.cost_model,
            self.transforms,
        )
        transform = ""
        if method == "fft":
            transform = spectral_transform(
                spec.psf, spec.shape, spec.boundary, FLOAT32, self.cost_model, self.transforms
            )
        return method, profiles, transform

    def plan_blur(self, spec: BlurSpec) -> BlurPlan:
        """Plan method, transform, work domain and device memory of the operator (no allocation).

        The operator's own buffers: the PSF (spatial), two scratch images (separable), the DCT
        gain, or the in-place padded FFT buffer and the half-spectrum OTF.
        """
        method, profiles, transform = self._choose(spec)
        n = math.prod(spec.shape) * 4
        if method == "spatial":
            memory = MemoryNeed(spec.psf.size * 4, spec.psf.size * 4)
        elif method == "separable":
            memory = MemoryNeed(2 * n + sum(spec.psf.shape) * 4, n)
        elif transform in ("dct1", "dct2"):
            memory = MemoryNeed(n, n)
        elif transform == "dct2-padded":  # the padded buffer and the DCT gain
            voxels = math.prod(fft_geometry(spec.shape, spec.psf.shape, spec.boundary).padded_shape)
            memory = MemoryNeed(2 * voxels * 4, voxels * 4)
        else:
            padded = fft_geometry(spec.shape, spec.psf.shape, spec.boundary).padded_shape
            spectrum = math.prod(padded[:-1]) * (padded[-1] // 2 + 1) * 8
            memory = MemoryNeed(2 * spectrum, spectrum)
        return blur_plan(spec, method, transform, memory, profiles)

    def plan_filter(self, spec: FilterSpec) -> FilterPlan:
        from . import _opencl_filter

        return _opencl_filter.plan_filter(spec, self._filter_transforms(spec))

    def spectral_filter(self, spec: FilterSpec) -> Any:
        from . import _opencl_filter

        plan = self.plan_filter(spec)
        self.check_memory(plan.memory)
        return _opencl_filter.OpenCLFilter(self, spec, plan)

    def _filter_transforms(self, spec: FilterSpec) -> tuple[str, ...]:
        if spec.blur.dtype != np.float32:
            raise ValueError("the opencl backend computes in float32; pass dtype='float32'")
        if "rfft" not in self.transforms:
            raise BackendUnavailableError(PYVKFFT_HINT)
        return self.transforms

    def memory_limits(self) -> MemoryNeed:
        """Return the device's global memory (with headroom) and its largest allocation."""
        total = int(self.device.global_mem_size * MEMORY_HEADROOM)
        return MemoryNeed(total, min(total, int(self.device.max_mem_alloc_size)))

    def blur_operator(self, spec: BlurSpec):
        plan = self.plan_blur(spec)
        self.check_memory(plan.memory)
        shape, psf, boundary = spec.shape, spec.psf, spec.boundary
        if plan.method == "spatial":
            return SpatialOperator(self, plan, psf, shape, boundary)
        if plan.method == "separable":
            assert plan.profiles is not None  # choose_method guarantees it
            return SeparableOperator(self, plan, plan.profiles, shape, boundary)
        if plan.transform == "dct2-padded":
            return PaddedDCTOperator(self, plan, psf, shape, boundary)
        if plan.transform != "rfft":
            return DCTOperator(self, plan, psf, shape, boundary)
        return FFTOperator(self, plan, psf, shape, boundary)

    def check_memory(self, need: MemoryNeed) -> None:
        """Raise :class:`InsufficientDeviceMemoryError` if ``need`` will not fit the device."""
        limits = self.memory_limits()
        name = self.device.name.strip()
        hint = "pass tile_shape='auto' (or a tuple) to deconvolve in tiles"
        if need.total > limits.total:
            raise InsufficientDeviceMemoryError(
                f"this call needs about {need.total / 2**20:.0f} MiB of device memory, but "
                f"{name!r} offers {limits.total / 2**20:.0f} MiB; {hint}"
            )
        if need.largest > limits.largest:
            raise InsufficientDeviceMemoryError(
                f"one buffer of {need.largest / 2**20:.0f} MiB exceeds the largest allocation "
                f"{limits.largest / 2**20:.0f} MiB of {name!r}; {hint}"
            )

    def fft_plan(self, shape: tuple[int, ...], **options: Any) -> Any:
        """Return a cached in-place float32 VkFFT plan for ``shape`` and ``options``."""
        key = (shape, tuple(sorted(options.items())))
        plan = self._fft_plans.pop(key, None)
        if plan is None:
            plan = pyvkfft_opencl().VkFFTApp(
                shape, np.float32, self.queue, inplace=True, norm=1, **options
            )
        self._fft_plans[key] = plan  # most recently used last
        while len(self._fft_plans) > FFT_PLAN_CACHE_SIZE:
            self._fft_plans.pop(next(iter(self._fft_plans)))
        return plan

    def upload(self, array: np.ndarray) -> Any:
        """Upload operator constants (PSF, OTF, DCT gain) once, at preparation time."""
        import pyopencl.array as cla

        return cla.to_device(self.queue, np.ascontiguousarray(array))
