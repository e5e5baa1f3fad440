"""OpenCL device discovery, checking and choice: ``device=`` substring or type, GPU first.

A device selector comes from ``device=``, else the one set for this process
(:func:`set_process_device`, which :func:`gpu_deconv.dask.assign_devices` calls on each worker),
else ``$GPU_DECONV_DEVICE``. OpenCL drivers do not survive ``fork``: a child forked after this
process touched OpenCL gets a clear :class:`BackendUnavailableError` instead of a hang.

Every device is checked before it is trusted (:func:`device_problem`): a small kernel is built
and run on it, once per process and device. A driver can list a device it cannot compile for
(PyPI's PoCL 3.0, LLVM 14, on CPUs newer than 2022 such as AMD Zen 5: "unknown target CPU
'generic'"); such a device is listed as unusable, never chosen by default, and refused when named.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._base import BackendUnavailableError

DEVICE_ENV = "GPU_DECONV_DEVICE"
INSTALL_HINT = (
    "install an OpenCL driver: the distribution's PoCL (`apt-get install pocl-opencl-icd`, or "
    "conda-forge's `pocl`) gives a CPU device, or install your GPU vendor's OpenCL driver"
)
FIX_HINT = (
    "fix: install a driver that supports it (for a CPU the distribution's PoCL, `apt-get "
    "install pocl-opencl-icd`, or conda-forge's `pocl`), or use backend='numpy'"
)
PACKAGE_HINT = 'install the OpenCL extra: `pip install "gpu_deconv[opencl]"`'
FORK_HINT = (
    "OpenCL was initialised in process {parent} before this process ({child}) was forked "
    "from it, and OpenCL drivers do not work in a forked child; start worker processes with "
    "the 'spawn' or 'forkserver' method (multiprocessing.get_context('spawn')), or use "
    "backend='numpy' there"
)
# The process that first called into the OpenCL driver, and this process' own selector.
_opencl_pid: int | None = None
_process_device: str | None = None
# The check's verdict per (platform, platform version, device, driver version, device handle):
# None when the device passed, else the one-line reason it failed.
_CHECKED: dict[tuple[str, str, str, str, int], str | None] = {}
PROBE_KERNEL = "gpu_deconv_probe"
# Any failure of the compiler (an unknown CPU, a missing builtin) fails this build as it would
# fail the package's kernels; running it catches a device that builds but cannot launch.
PROBE_SOURCE = """
__kernel void gpu_deconv_probe(__global float *x)
{
    const size_t i = get_global_id(0);
    x[i] = fma(x[i], 2.0f, 1.0f);
}
"""
TYPE_SELECTORS = ("gpu", "cpu", "accelerator")


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
        Whether ``device=None`` picks this device (a usable GPU first, then the largest memory).
    driver : str
        The driver's version (``CL_DRIVER_VERSION``).
    usable : bool
        Whether the device passed its check (a kernel built and run on it).
    problem : str or None
        Why the device failed its check (one line), or None.
    """

    name: str
    platform: str
    type: str
    global_memory: int
    max_allocation: int
    is_default: bool
    driver: str = ""
    usable: bool = True
    problem: str | None = None


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


def _describe_key(device: Any) -> tuple[str, str, str, str]:
    platform = device.platform
    return (
        platform.name.strip(),
        platform.version.strip(),
        device.name.strip(),
        device.driver_version.strip(),
    )


def _check_key(device: Any) -> tuple[str, str, str, str, int]:
    # Per device, not per model: one of two identical GPUs can be held by another process
    # (exclusive compute mode) while the other works.
    return (*_describe_key(device), int(device.int_ptr))


def _run_probe(cl: Any, device: Any) -> None:
    """Build and run :data:`PROBE_SOURCE` on ``device``; raise whatever the driver raises."""
    context = cl.Context([device])
    queue = cl.CommandQueue(context)
    kernel = cl.Kernel(cl.Program(context, PROBE_SOURCE).build(), PROBE_KERNEL)
    host = np.arange(4, dtype=np.float32)
    buffer = cl.Buffer(context, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=host)
    kernel(queue, host.shape, None, buffer)
    cl.enqueue_copy(queue, host, buffer)
    if not np.array_equal(host, 2 * np.arange(4, dtype=np.float32) + 1):
        raise RuntimeError(f"the probe kernel computed {host.tolist()} instead of [1, 3, 5, 7]")


def first_error_line(exc: BaseException) -> str:
    """Return the compiler's own complaint out of a build log, else the first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "error:" in line:
            return line[line.index("error:") + len("error:") :].strip()[:200]
    return (lines[0] if lines else type(exc).__name__)[:200]


def device_problem(device: Any) -> str | None:
    """Check ``device`` once per process: None if it builds and runs a kernel, else why not.

    The verdict is cached per device (with its platform, name and driver version), so a device
    costs one small build per process (PoCL caches the binary on disk between processes).

    Parameters
    ----------
    device : pyopencl.Device
        The device to check.

    Returns
    -------
    str or None
        The one-line reason the device cannot be used, or None.
    """
    key = _check_key(device)
    if key not in _CHECKED:
        cl = import_pyopencl()
        try:
            _run_probe(cl, device)
            _CHECKED[key] = None
        except Exception as exc:  # any driver failure makes the device unusable
            _CHECKED[key] = first_error_line(exc)
    return _CHECKED[key]


def describe(device: Any) -> str:
    """Return ``'NAME' (PLATFORM, PLATFORM_VERSION, driver DRIVER)``, for messages."""
    platform, version, name, driver = _describe_key(device)
    return f"{name!r} ({platform}, {version}, driver {driver})"


def unusable_error(device: Any, problem: str) -> BackendUnavailableError:
    """Return the short error for a device that failed its check: device, reason, fix."""
    return BackendUnavailableError(
        f"OpenCL device {describe(device)} failed its check: {problem}\n{FIX_HINT}"
    )


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
    # Oclgrind calls itself a GPU but interprets kernels: never a default. The order does not
    # depend on the checks, so "#k" names the same device in every process.
    order = 3 if is_simulator(device) else {"GPU": 0, "ACCELERATOR": 1}.get(kind, 2)
    return (order, -int(device.global_mem_size))


def pick_device(device: str | None = None) -> Any:
    """Return the pyopencl device for a selector (or the env variable, or the default).

    Only devices that pass their check (:func:`device_problem`) are chosen.

    Parameters
    ----------
    device : str, optional
        ``"gpu"``, ``"cpu"`` or ``"accelerator"`` (by type), or a case-insensitive substring of
        the device name; either optionally followed by ``#k`` for the k-th match in
        :func:`list_devices` order (``"H100#1"``: the second H100; ``"#1"``: the second device).
        Without ``#k``, the first usable match. By default ``$GPU_DECONV_DEVICE``, and
        without it the first usable GPU (then accelerator, then CPU), larger memory first; the
        Oclgrind simulator only when named. ``None`` means this process' device
        (:func:`set_process_device`), else ``$GPU_DECONV_DEVICE``, else the default.

    Returns
    -------
    pyopencl.Device
        The chosen device.

    Raises
    ------
    BackendUnavailableError
        If no OpenCL device exists, none matches ``device``, the one it names failed its check
        (the message names the device, its driver and the fix), or this process was forked
        after its parent used OpenCL.
    """
    cl = import_pyopencl()
    devices = [d for _, d in _ranked_devices(cl)]
    if not devices:
        raise BackendUnavailableError(f"no OpenCL device found; {INSTALL_HINT}")
    wanted = device if device is not None else default_selector()
    if wanted is None:  # the first real device that passes its check (checked in turn)
        candidates = [d for d in devices if not is_simulator(d)]
        chosen = next((d for d in candidates if device_problem(d) is None), None)
        if chosen is None and candidates:
            raise unusable_error(candidates[0], str(device_problem(candidates[0])))
        if chosen is None:
            raise BackendUnavailableError(
                "only the Oclgrind simulator is here; name it with device='oclgrind'"
            )
        return chosen
    name, _, index = wanted.rpartition("#") if "#" in wanted else (wanted, "", "")
    if "#" in wanted and not index.isdigit():
        raise BackendUnavailableError(f"device {wanted!r}: '#' must be followed by an index")
    matches = [d for d in devices if _matches(cl, d, name)]
    if not index:  # the first match that works (a broken twin on another platform is skipped)
        chosen = next((d for d in matches if device_problem(d) is None), None)
        if chosen is None and matches:
            raise unusable_error(matches[0], str(device_problem(matches[0])))
    else:
        chosen = matches[int(index)] if int(index) < len(matches) else None
    if chosen is None:
        names = ", ".join(repr(d.name.strip()) for d in devices)
        found = f"only {len(matches)} match {name!r}" if matches else "none matches"
        raise BackendUnavailableError(
            f"no OpenCL device matches {wanted!r} ({found}); available: {names}"
        )
    problem = device_problem(chosen)
    if problem is not None:
        raise unusable_error(chosen, problem)
    return chosen


def _matches(cl: Any, device: Any, name: str) -> bool:
    """Whether ``device`` is of the type ``name`` names, or has ``name`` in its name."""
    if name.lower() in TYPE_SELECTORS:  # the simulator only by name
        return _device_type(cl, device) == name.upper() and not is_simulator(device)
    return name.lower() in device.name.lower()


def distinct_selectors() -> list[str]:
    """``"#k"`` selectors of this host's usable devices of the default's type, each once.

    What :func:`gpu_deconv.dask.assign_devices` hands out: GPUs if the host has a usable one,
    else CPU devices. Two platforms can expose the same CPU (the distribution's PoCL beside
    PyPI's): only the usable CPU devices of the first platform that has one count; the
    simulator never does.
    """
    cl = import_pyopencl()
    ranked = [d for _, d in _ranked_devices(cl)]
    usable = [d for d in ranked if device_problem(d) is None and not is_simulator(d)]
    if not usable:
        return []
    kind = _device_type(cl, usable[0])
    same = [d for d in usable if _device_type(cl, d) == kind]
    if kind == "CPU":  # the first platform with a usable CPU device
        platform = same[0].platform.int_ptr
        same = [d for d in same if d.platform.int_ptr == platform]
    return [f"#{ranked.index(d)}" for d in same]


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
        Every device of every platform, in the order ``device="#k"`` counts them (GPUs first,
        then larger memory; devices that failed their check say why); empty when there is
        none (or pyopencl is missing).

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
    try:
        default = pick_device(None)
    except BackendUnavailableError:
        default = None
    return [
        DeviceInfo(
            name=d.name.strip(),
            platform=p.name.strip(),
            type=_device_type(cl, d),
            global_memory=int(d.global_mem_size),
            max_allocation=int(d.max_mem_alloc_size),
            is_default=default is not None and d.int_ptr == default.int_ptr,
            driver=d.driver_version.strip(),
            usable=device_problem(d) is None,
            problem=device_problem(d),
        )
        for p, d in devices
    ]
