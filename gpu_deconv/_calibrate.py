"""``calibrate``: measure an OpenCL device's cost model and store it for later runs."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .backends import get_backend
from .backends._calibration import DEFAULT_SHAPE, device_key, measure, store_costs


def calibrate(device: str | None = None, shape: tuple[int, ...] = DEFAULT_SHAPE) -> dict[str, Any]:
    """Time the transforms and kernels of an OpenCL device and store its cost model.

    ``method="auto"`` and the choice between the DCT and the padded FFT then use the
    measured constants on that device (in this process and later ones) instead of the
    built-in estimates. The file is ``calibration.json`` in ``$GPU_DECONV_CACHE_DIR``, else
    the user's cache directory (``~/.cache/gpu_deconv`` on Linux), written atomically.

    Parameters
    ----------
    device : str, optional
        OpenCL device as for ``get_backend("opencl", device=...)``; by default the process'.
    shape : tuple of int, optional
        The timed volume, 2D or 3D, every axis at least 14; by default ``(32, 64, 64)``.

    Returns
    -------
    dict
        ``device`` (its key in the file), ``path`` (the file) and ``constants`` (the
        :class:`~gpu_deconv.backends._planning.CostModel` fields, seconds per unit).

    Raises
    ------
    BackendUnavailableError
        If the OpenCL backend cannot run on ``device``.
    ValueError
        If ``shape`` is not 2D or 3D with every axis at least 14.

    Examples
    --------
    >>> import gpu_deconv as gd
    >>> result = gd.calibrate()  # doctest: +SKIP
    >>> sorted(result["constants"])  # doctest: +SKIP
    ['call_overhead', 'dct_factor', 'fft_per_nlogn', 'fft_per_sample', ...]
    """
    shape = tuple(int(n) for n in shape)
    backend: Any = get_backend("opencl", device=device)
    costs = measure(backend, shape)
    path = store_costs(backend.device, costs)
    with backend.lock:
        backend.cost_model = costs  # the cached backend plans with them from now on
    return {"device": device_key(backend.device), "path": str(path), "constants": asdict(costs)}
