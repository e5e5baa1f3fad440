"""OpenCL device discovery and choice: ``device=`` substring, this process' device, GPU first.

A device selector comes from ``device=``, else the one set for this process
(:func:`set_process_device`, which :func:`gpu_deconv.dask.assign_devices` calls on each worker),
else ``$GPU_DECONV_DEVICE``. OpenCL drivers do not survive ``fork``: a child forked after this
process touched OpenCL gets a clear :class:`BackendUnavailableError` instead of a hang.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ._base import BackendUnavailableError

DEVICE_ENV = "GPU_DECONV_DEVICE"
INSTALL_HINT = (
    "install an OpenCL driver: `pip install pocl-binary-distribution` gives a CPU device, "
    "or install your GPU vendor's OpenCL driver"
)
PACKAGE_HINT = 'install the OpenCL extra: `pip install "gpu_deconv[opencl,pocl]"`'
FORK_HINT = (
    "OpenCL was initialised in process {parent} before this process ({child}) was forked "
    "from it, and OpenCL drivers do not work in a forked child; start worker processes with "
    "the 'spawn' or 'forkserver' method (multiprocessing.get_context('spawn')), or use "
    "backend='numpy' there"
)
# The process that first called into the OpenCL driver, and this process' own selector.
_opencl_pid: int | None = None
_process_device: str | None = None


@dataclass(frozen=True)
class DeviceInfo:
    """One OpenCL device as :func:`list_devices` reports it.

    Attributes
    ----------
    name : str
        Device name, as matched by ``device=`` substrings.
    platform : str
        OpenCL platform name.
    type : str
        ``"GPU"``, ``"CPU"``, ``"ACCELERATOR"`` or ``"OTHER"``.
    global_memory : int
        Device memory in bytes.
    max_allocation : int
        Largest single buffer in bytes.
    is_default : bool
        Whether ``device=None`` picks this device (GPU first, then the largest memory).
    """

    name: str
    platform: str
    type: str
    global_memory: int
    max_allocation: int
    is_default: bool


def check_not_forked() -> None:
    """Raise :class:`BackendUnavailableError` in a child forked after OpenCL was used."""
    if _opencl_pid is not None and _opencl_pid != os.getpid():
        raise BackendUnavailableError(FORK_HINT.format(parent=_opencl_pid, child=os.getpid()))


def set_process_device(selector: str | None) -> None:
    """Make ``selector`` the device of this process when no ``device=`` is given.

    Parameters
    ----------
    selector : str or None
        A selector as :func:`pick_device` takes it; ``None`` goes back to
        ``$GPU_DECONV_DEVICE`` or the default device.
    """
    global _process_device
    _process_device = selector


def default_selector() -> str | None:
    """Return the selector ``device=None`` stands for: this process' device, else the env."""
    return _process_device or os.environ.get(DEVICE_ENV) or None


def import_pyopencl() -> Any:
    """Import pyopencl or raise :class:`BackendUnavailableError` with an install hint."""
    try:
        import pyopencl
    except ImportError as exc:
        raise BackendUnavailableError(f"pyopencl is not installed; {PACKAGE_HINT}") from exc
    return pyopencl


def _device_type(cl: Any, device: Any) -> str:
    if device.type & cl.device_type.GPU:
        return "GPU"
    if device.type & cl.device_type.ACCELERATOR:
        return "ACCELERATOR"
    if device.type & cl.device_type.CPU:
        return "CPU"
    return "OTHER"


def _all_devices() -> list[tuple[Any, Any]]:
    global _opencl_pid
    check_not_forked()
    cl = import_pyopencl()
    _opencl_pid = os.getpid()  # from here on the driver may hold threads a fork does not copy
    found: list[tuple[Any, Any]] = []
    try:
        platforms = cl.get_platforms()
    except cl.Error:  # the ICD loader reports "no platform" as an error
        platforms = []
    for platform in platforms:
        try:
            found.extend((platform, device) for device in platform.get_devices())
        except cl.Error:
            continue
    return found


def is_simulator(device: Any) -> bool:
    """Whether ``device`` is a checking simulator (Oclgrind), usable only when named."""
    return "oclgrind" in device.platform.name.lower()


def is_fast_device(device: Any) -> bool:
    """Whether ``device`` is a GPU or accelerator (not a simulator): where OpenCL beats NumPy."""
    cl = import_pyopencl()
    fast = bool(device.type & (cl.device_type.GPU | cl.device_type.ACCELERATOR))
    return fast and not is_simulator(device)


def _rank(cl: Any, device: Any) -> tuple[int, int]:
    kind = _device_type(cl, device)
    # Oclgrind calls itself a GPU but interprets kernels: never a default.
    order = 3 if is_simulator(device) else {"GPU": 0, "ACCELERATOR": 1}.get(kind, 2)
    return (order, -int(device.global_mem_size))


def pick_device(device: str | None = None) -> Any:
    """Return the pyopencl device for a name substring (or the env variable, or the default).

    Parameters
    ----------
    device : str, optional
        Case-insensitive substring of the device name, optionally followed by ``#k`` for the
        k-th match (``"H100#1"``: the second H100; ``"#1"``: the second device in
        :func:`list_devices` order); by default ``$GPU_DECONV_DEVICE``, and without it the
        first GPU (then accelerator, then CPU), larger memory first; the Oclgrind simulator
        only when named. ``None`` means this process' device (:func:`set_process_device`),
        else ``$GPU_DECONV_DEVICE``, else the default.

    Returns
    -------
    pyopencl.Device
        The chosen device.

    Raises
    ------
    BackendUnavailableError
        If no OpenCL device exists, none matches ``device``, or this process was forked after
        its parent used OpenCL.
    """
    cl = import_pyopencl()
    devices = _ranked_devices(cl)
    if not devices:
        raise BackendUnavailableError(f"no OpenCL device found; {INSTALL_HINT}")
    wanted = device if device is not None else default_selector()
    if wanted is None:
        return devices[0][1]
    name, _, index = wanted.rpartition("#") if "#" in wanted else (wanted, "", "0")
    matches = [(p, d) for p, d in devices if name.lower() in d.name.lower()]
    if not index.isdigit():
        raise BackendUnavailableError(f"device {wanted!r}: '#' must be followed by an index")
    if int(index) >= len(matches):
        names = ", ".join(repr(d.name.strip()) for _, d in devices)
        found = f"only {len(matches)} match {name!r}" if matches else "none matches"
        raise BackendUnavailableError(
            f"no OpenCL device matches {wanted!r} ({found}); available: {names}"
        )
    return matches[int(index)][1]


def _ranked_devices(cl: Any) -> list[tuple[Any, Any]]:
    """All devices, GPUs first and larger memory first (a stable sort: ties keep platform order)."""
    return sorted(_all_devices(), key=lambda pd: _rank(cl, pd[1]))


def device_index(device: Any) -> int:
    """Position of ``device`` in :func:`list_devices` order: ``"#k"`` selects it."""
    return [d for _, d in _ranked_devices(import_pyopencl())].index(device)


def list_devices() -> list[DeviceInfo]:
    """List the OpenCL devices this machine offers.

    Returns
    -------
    list of DeviceInfo
        Every device of every platform, in the order ``device="#k"`` counts them (the default
        first); empty when there is none (or pyopencl is missing).

    Raises
    ------
    BackendUnavailableError
        In a child forked after its parent used OpenCL (its devices cannot be used there).

    Examples
    --------
    >>> from gpu_deconv import list_devices
    >>> all(d.type in {"GPU", "CPU", "ACCELERATOR", "OTHER"} for d in list_devices())
    True
    """
    check_not_forked()
    try:
        cl = import_pyopencl()
        devices = _ranked_devices(cl)
    except BackendUnavailableError:
        return []
    return [
        DeviceInfo(
            name=d.name.strip(),
            platform=p.name.strip(),
            type=_device_type(cl, d),
            global_memory=int(d.global_mem_size),
            max_allocation=int(d.max_mem_alloc_size),
            is_default=i == 0,
        )
        for i, (p, d) in enumerate(devices)
    ]
