"""gpu_deconv: fast, verified Richardson-Lucy deconvolution for fluorescence microscopy.

The public API: :func:`richardson_lucy`, :func:`wiener`, :func:`tikhonov`, :func:`convolve`,
:func:`correlate`, :func:`choose_method`, :func:`calibrate`, :func:`get_backend`, :class:`Info`
(what a run did, with ``return_info=True``), the :mod:`gpu_deconv.psf` and
:mod:`gpu_deconv.metrics` modules; :mod:`gpu_deconv.io`, :mod:`gpu_deconv.dask`,
:mod:`gpu_deconv.stack`, :mod:`gpu_deconv.tiling` and :mod:`gpu_deconv.samples` are imported
when first used (``gd.io.read_tiff``), so that ``import gpu_deconv`` stays light.
"""

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from . import metrics, psf
from ._calibrate import calibrate
from ._filters import tikhonov, wiener
from ._precision import PrecisionWarning
from ._rl import choose_method, convolve, correlate, richardson_lucy
from ._stopping import Info, StoppingWarning
from .backends import BackendUnavailableError, available_backends, get_backend
from .backends._opencl_devices import DeviceInfo, list_devices

__version__ = "0.1.0"
_ON_FIRST_USE = ("dask", "io", "samples", "stack", "tiling")


if TYPE_CHECKING:  # type checkers see them as attributes; the import waits for first use
    from . import dask, io, samples, stack, tiling  # noqa: F401


def __getattr__(name: str) -> ModuleType:
    """Import the submodules of ``_ON_FIRST_USE`` when first used as attributes."""
    if name in _ON_FIRST_USE:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BackendUnavailableError",
    "DeviceInfo",
    "Info",
    "PrecisionWarning",
    "StoppingWarning",
    "available_backends",
    "calibrate",
    "choose_method",
    "convolve",
    "correlate",
    "get_backend",
    "list_devices",
    "metrics",
    "psf",
    "richardson_lucy",
    "tikhonov",
    "wiener",
]
