"""gpu_deconv: fast, verified Richardson-Lucy deconvolution for fluorescence microscopy.

The public API: :func:`richardson_lucy`, :func:`wiener`, :func:`tikhonov`, :func:`convolve`,
:func:`correlate`, :func:`choose_method`, :func:`calibrate`, :func:`get_backend`, :class:`Info`
(what a run did, with ``return_info=True``), the :mod:`gpu_deconv.psf` and
:mod:`gpu_deconv.metrics` modules.
"""

from . import metrics, psf
from ._calibrate import calibrate
from ._filters import tikhonov, wiener
from ._precision import PrecisionWarning
from ._rl import choose_method, convolve, correlate, richardson_lucy
from ._stopping import Info, StoppingWarning
from .backends import BackendUnavailableError, available_backends, get_backend
from .backends._opencl_devices import DeviceInfo, list_devices

__version__ = "0.1.0"

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
