"""How much host memory a computation may still take on this machine."""

from __future__ import annotations

import os
from pathlib import Path

_CGROUP = Path("/sys/fs/cgroup")


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_available() -> int | None:
    """Room left under a cgroup v2 memory limit (containers, batch schedulers)."""
    try:
        limit = (_CGROUP / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((_CGROUP / "memory.current").read_text())
    except (OSError, ValueError):
        return None


def available_host_memory() -> int | None:
    """Return the bytes of host memory available now, or ``None`` where it cannot be told.

    The smaller of the kernel's ``MemAvailable`` and the room under a cgroup v2 limit; on
    systems without ``/proc``, free physical pages from ``os.sysconf``.
    """
    candidates = [n for n in (_meminfo_available(), _cgroup_available()) if n is not None]
    if not candidates:
        try:
            candidates = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
        except (ValueError, OSError, AttributeError):
            return None
    return max(0, min(candidates))
