"""Measured cost models: ``gpu-deconv calibrate`` times a device, backends read the result.

The constants of :class:`~gpu_deconv.backends._planning.CostModel` are timed on the device
itself (its FFTs, DCTs, element-wise passes and convolution kernels) and kept per device in
``calibration.json`` in the user's cache directory: ``$GPU_DECONV_CACHE_DIR`` if set, else
platformdirs' user cache directory when platformdirs is installed, else
``$XDG_CACHE_HOME/gpu_deconv`` or ``~/.cache/gpu_deconv``. A file that cannot be read is
ignored with a warning (the built-in constants are used), never trusted.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from ._base import BlurSpec
from ._planning import CostModel, fft_geometry

FILE_NAME = "calibration.json"
# The timed volume: big enough that launches do not dominate, small enough for seconds on PoCL.
DEFAULT_SHAPE = (32, 64, 64)
PSF_WIDTH = 7  # taps per axis of the timed spatial and separable kernels
REPEATS = 3  # the median of these timings, after one warm-up run


def cache_dir() -> Path:
    """Return the directory the calibration file lives in (see the module)."""
    forced = os.environ.get("GPU_DECONV_CACHE_DIR")
    if forced:
        return Path(forced)
    try:
        import platformdirs
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "gpu_deconv"
    return Path(platformdirs.user_cache_dir("gpu_deconv"))


def device_key(device: Any) -> str:
    """Identify an OpenCL device across processes: platform, name and driver version."""
    return f"{device.platform.name.strip()} | {device.name.strip()} | {device.driver_version}"


def load_costs(device: Any, default: CostModel) -> CostModel:
    """Return the stored cost model of ``device``, or ``default`` when none is stored.

    A file or entry that is not valid JSON, misses a constant, or holds one that is not a
    finite positive number is ignored with a :class:`RuntimeWarning`.
    """
    path = cache_dir() / FILE_NAME
    if not path.exists():
        return default
    try:
        entry = json.loads(path.read_text()).get(device_key(device))
        if entry is None:
            return default
        return _cost_model(entry)
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
        warnings.warn(
            f"ignoring the calibration in {path} ({exc}); run `gpu-deconv calibrate` again",
            RuntimeWarning,
            stacklevel=2,
        )
        return default


def _cost_model(entry: dict) -> CostModel:
    values = {}
    for f in fields(CostModel):
        value = entry[f.name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{f.name} is {value!r}, not a number")
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{f.name} = {value!r} is not finite and positive")
        values[f.name] = float(value)
    return CostModel(**values)


def store_costs(device: Any, costs: CostModel) -> Path:
    """Write ``costs`` for ``device`` into the calibration file (atomically); return its path.

    Other devices' entries are kept; an unreadable file is replaced.
    """
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE_NAME
    try:
        table = json.loads(path.read_text())
        table = table if isinstance(table, dict) else {}
    except (OSError, ValueError):
        table = {}
    table[device_key(device)] = asdict(costs)
    from ..io import _temporary  # the umask's permissions, unlike mkstemp's 0600

    # A temporary file in the same folder, then a rename: readers see the old or the new file.
    temporary = _temporary(path, ".json")
    try:
        temporary.write_text(json.dumps(table, indent=1, sort_keys=True))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _seconds(backend: Any, run) -> float:
    """Median wall time of ``run()`` on ``backend`` (queue drained), after one warm-up."""
    run()
    backend.synchronize()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        backend.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(backend: Any, shape: tuple[int, ...] = DEFAULT_SHAPE) -> CostModel:
    """Time ``backend``'s operators on a ``shape`` volume and return the measured constants.

    Each constant is one operator's time divided by its unit count (as in
    :class:`CostModel`): a DCT-II blur against an unpadded same-size real FFT blur gives the
    DCT factor, a padded FFT blur minus its transforms the per-sample cost.
    """
    from ..psf import gaussian_psf

    if len(shape) not in (2, 3) or min(shape) < 2 * PSF_WIDTH:
        raise ValueError(
            f"calibration shape must be 2D or 3D with every axis >= {2 * PSF_WIDTH}, got {shape}"
        )
    psf = gaussian_psf((PSF_WIDTH,) * len(shape), sigma=1.5).astype(np.float32)
    x = backend.to_backend(np.random.default_rng(0).random(shape, dtype=np.float32))
    out = backend.empty(shape, np.float32)
    n = math.prod(shape)

    def blur(method: str, boundary: str, transform: str | None = None):
        spec = BlurSpec(psf, tuple(shape), boundary, method, np.dtype(np.float32))
        operator = backend.blur_operator(spec)
        if transform is not None and operator.plan.transform != transform:
            return None
        return _seconds(backend, lambda: operator.convolve(x, out))

    tiny = backend.to_backend(np.ones(1, np.float32))
    overhead = _seconds(backend, lambda: backend.multiply(tiny, tiny, tiny))
    spatial = blur("spatial", "reflect") - overhead
    separable = blur("separable", "reflect") - len(shape) * overhead
    padded = math.prod(fft_geometry(tuple(shape), psf.shape, "reflect").padded_shape)
    # "wrap" on an FFT-friendly shape is an unpadded FFT: transforms plus one multiply.
    wrap = blur("fft", "wrap") - overhead
    reflect = blur("fft", "reflect") - overhead
    multiply = _seconds(backend, lambda: backend.multiply(x, x, out))
    per_nlogn = max(wrap - multiply, overhead) / (n * math.log2(n))
    transforms = padded * math.log2(padded) * per_nlogn
    per_sample = max(reflect - transforms, multiply) / padded
    dct = None
    if "dct2" in getattr(backend, "transforms", ()):
        backend_costs = backend.cost_model
        backend.cost_model = CostModel(**{**asdict(backend_costs), "dct_factor": 1e-3})
        try:  # a tiny factor makes the planner pick the unpadded DCT-II for this blur
            dct = blur("fft", "reflect", transform="dct2")
        finally:
            backend.cost_model = backend_costs
    dct_factor = (
        1.0 if dct is None else max(dct - multiply, overhead) / max(wrap - multiply, overhead)
    )
    return CostModel(
        spatial_per_mac=max(spatial, overhead) / (n * psf.size),
        separable_per_mac=max(separable, overhead) / (n * sum(psf.shape)),
        fft_per_nlogn=per_nlogn,
        fft_per_sample=per_sample,
        call_overhead=overhead,
        dct_factor=dct_factor,
    )
