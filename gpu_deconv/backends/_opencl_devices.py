"""OpenCL device discovery and choice: ``device=`` substring, ``GPU_DECONV_DEVICE``, GPU first."""

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
    cl = import_pyopencl()
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
        only when named.

    Returns
    -------
    pyopencl.Device
        The chosen device.

    Raises
    ------
    BackendUnavailableError
        If no OpenCL device exists, or none matches ``device``.
    """
    cl = import_pyopencl()
    devices = _ranked_devices(cl)
    if not devices:
        raise BackendUnavailableError(f"no OpenCL device found; {INSTALL_HINT}")
    wanted = device if device is not None else os.environ.get(DEVICE_ENV) or None
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


def list_devices() -> list[DeviceInfo]:
    """List the OpenCL devices this machine offers.

    Returns
    -------
    list of DeviceInfo
        Every device of every platform, in the order ``device="#k"`` counts them (the default
        first); empty when there is none (or pyopencl is missing).

    Examples
    --------
    >>> from gpu_deconv import list_devices
    >>> all(d.type in {"GPU", "CPU", "ACCELERATOR", "OTHER"} for d in list_devices())
    True
    """
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
