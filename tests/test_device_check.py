"""Devices are checked before they are trusted: a driver that lists a device it cannot compile for.

PyPI's PoCL 3.0 (LLVM 14) lists AMD Zen 5 CPUs and then fails every build with "unknown target
CPU 'generic'". These tests make the real probe fail the same way on whatever device this
machine has: in a fresh interpreter whose ``sitecustomize`` replaces the probe's run (so dask's
worker processes, which import it too, see the same broken driver), or in-process on stand-in
devices for the choice between two platforms.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import require_backend

import gpu_deconv as gd
from gpu_deconv.backends import _opencl_devices as devices

pytestmark = pytest.mark.opencl
BUILD_LOG = (
    "clBuildProgram failed: BUILD_PROGRAM_FAILURE - clBuildProgram failed: "
    "BUILD_PROGRAM_FAILURE - clBuildProgram failed: BUILD_PROGRAM_FAILURE\n\n"
    "Build on <pyopencl.Device 'pthread-znver5' on 'Portable Computing Language'>:\n\n"
    "error: unknown target CPU 'generic'\nnote: valid target CPU values are: nocona, core2\n"
)
# Installed as sitecustomize: every device of every platform fails its build, as PyPI's PoCL
# does on Zen 5 (where it is the only OpenCL).
BROKEN_DRIVER = f"""
from gpu_deconv.backends import _opencl_devices

def _broken(cl, device):
    raise RuntimeError({BUILD_LOG!r})

_opencl_devices._run_probe = _broken
"""


def run_broken(tmp_path, code: str, env: dict[str, str] | None = None) -> dict:
    """Run ``code`` where every OpenCL device fails its check; return its printed JSON."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BROKEN_DRIVER)
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    environment = {**os.environ, **(env or {}), "PYTHONPATH": str(site)}
    environment.pop("GPU_DECONV_DEVICE", None)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


BROKEN_ONLY = """
import contextlib, io, json, sys, warnings
from pathlib import Path
import numpy as np
import gpu_deconv as gd
from gpu_deconv import cli
from gpu_deconv.demo import available_backends_for_demo
from gpu_deconv.io import write_tiff
from gpu_deconv.psf import gaussian_psf

out = Path(sys.argv[1])
rng = np.random.default_rng(3)
image = rng.poisson(50 * (1 + rng.random((24, 30)))).astype(np.float32)
psf = gaussian_psf((7, 7), 1.2)
listed = [d.__dict__ if hasattr(d, "__dict__") else d._asdict() for d in gd.list_devices()]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    auto = gd.richardson_lucy(image, psf, 5, backend="auto")
reference = gd.richardson_lucy(image, psf, 5, backend="numpy")
try:
    gd.get_backend("opencl")
    named = None
except gd.BackendUnavailableError as exc:
    named = str(exc)
write_tiff(out / "image.tif", image)
write_tiff(out / "psf.tif", psf)
codes, errors = [], []
for extra in (["--backend", "opencl"], ["--backend", "opencl", "--device", "cpu"]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        codes.append(cli.main([
            "run", str(out / "image.tif"), "--psf", str(out / "psf.tif"), "-n", "3",
            "-o", str(out / "result.tif"), "--quiet", *extra,
        ]))
    errors.append(err.getvalue())
listing = io.StringIO()
with contextlib.redirect_stdout(listing):
    cli.main(["devices"])
with warnings.catch_warnings(record=True) as skipped:
    warnings.simplefilter("always")
    demo_backends = [be.name for be in available_backends_for_demo("auto")]
print(json.dumps({
    "listed": [{k: v for k, v in d.items() if k in ("usable", "problem", "is_default")}
               for d in listed],
    "auto_equal": bool(np.array_equal(auto, reference)),
    "auto_warnings": [str(w.message) for w in caught],
    "named": named,
    "codes": codes,
    "errors": errors,
    "written": (out / "result.tif").exists(),
    "listing": listing.getvalue(),
    "demo_backends": demo_backends,
    "demo_warnings": [str(w.message) for w in skipped],
}))
"""


def test_a_device_that_cannot_compile_is_never_used_and_refused_clearly(tmp_path):
    require_backend("opencl")
    found = run_broken(tmp_path, BROKEN_ONLY)
    assert found["listed"], "no device listed"
    for device in found["listed"]:
        assert device == {
            "usable": False,
            "problem": "unknown target CPU 'generic'",
            "is_default": False,
        }
    # backend="auto": the NumPy result, with one warning that says why.
    assert found["auto_equal"]
    assert len(found["auto_warnings"]) == 1
    assert "unknown target CPU 'generic'" in found["auto_warnings"][0]
    # Named: at most three lines naming the device, its driver and the fix.
    named = found["named"]
    assert named is not None and len(named.splitlines()) <= 3
    assert "failed its check: unknown target CPU 'generic'" in named
    assert "driver" in named and "apt-get install pocl-opencl-icd" in named
    name = gd.list_devices()[0].name
    assert name in named
    # The CLI: exit 2, at most three lines, nothing written; `devices` flags the device.
    assert found["codes"] == [2, 2]
    for error in found["errors"]:
        assert 1 <= len(error.strip().splitlines()) <= 3, error
        assert error.startswith("gpu-deconv: error: OpenCL device") and "Traceback" not in error
    assert not found["written"]
    assert "UNUSABLE: unknown target CPU 'generic'" in found["listing"]
    assert "backend='auto' uses: numpy" in found["listing"]
    # The demo runs its NumPy rows and says in one line why OpenCL's were skipped.
    assert found["demo_backends"] == ["numpy"]
    assert any(
        "the opencl rows were skipped" in message and "\n" not in message
        for message in found["demo_warnings"]
    )


ASSIGN = """
import json
from dask.distributed import Client, LocalCluster
import gpu_deconv as gd
from gpu_deconv.dask import assign_devices

if __name__ == "__main__":  # the workers are spawned: they import this script
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with cluster, Client(cluster) as client:
        try:
            assign_devices(client)
            error = None
        except gd.BackendUnavailableError as exc:
            error = str(exc)
    print(json.dumps({"error": error}))
"""


def test_assign_devices_never_hands_out_a_device_that_failed_its_check(tmp_path):
    pytest.importorskip("distributed")
    require_backend("opencl")
    found = run_broken(tmp_path, ASSIGN, {"POCL_DEVICES": "pthread pthread"})
    assert found["error"] is not None
    assert "failed its check: unknown target CPU 'generic'" in found["error"]


# -- the choice between platforms, on stand-in devices ------------------------------------------


def _platform(name: str, pointer: int) -> SimpleNamespace:
    return SimpleNamespace(name=name, version="OpenCL 3.0", int_ptr=pointer)


def _device(cl, platform, name: str, pointer: int, kind: str = "CPU") -> SimpleNamespace:
    return SimpleNamespace(
        int_ptr=pointer,
        platform=platform,
        name=name,
        driver_version="3.0",
        type=getattr(cl.device_type, kind),
        global_mem_size=2**34,
        max_mem_alloc_size=2**32,
    )


@pytest.fixture
def two_platforms(monkeypatch):
    """PyPI's PoCL listed first and broken; the distribution's PoCL beside it, two devices."""
    cl = pytest.importorskip("pyopencl")
    pypi, system = _platform("PyPI PoCL", 1), _platform("Debian PoCL", 2)
    listed = [
        (pypi, _device(cl, pypi, "pthread-znver5", 11)),
        (pypi, _device(cl, pypi, "pthread-znver5", 12)),
        (system, _device(cl, system, "pthread-skylake-avx512-AMD EPYC", 21)),
        (system, _device(cl, system, "pthread-skylake-avx512-AMD EPYC", 22)),
    ]

    def probe(cl, device):
        if device.platform is pypi:
            raise RuntimeError(BUILD_LOG)

    monkeypatch.setattr(devices, "_all_devices", lambda: list(listed))
    monkeypatch.setattr(devices, "_run_probe", probe)
    monkeypatch.setattr(devices, "_CHECKED", {})
    monkeypatch.setattr(devices, "_process_device", None)
    monkeypatch.delenv("GPU_DECONV_DEVICE", raising=False)
    return listed


def test_working_devices_come_first_and_a_cpu_counts_once(two_platforms):
    listed = gd.list_devices()
    # The order does not depend on the checks ("#k" is the same device in every process).
    assert [(d.platform, d.usable) for d in listed] == [
        ("PyPI PoCL", False),
        ("PyPI PoCL", False),
        ("Debian PoCL", True),
        ("Debian PoCL", True),
    ]
    assert [d.is_default for d in listed] == [False, False, True, False]
    assert listed[0].problem == "unknown target CPU 'generic'"
    # dask hands out the distribution's two devices, not the broken twins.
    assert devices.distinct_selectors() == ["#2", "#3"]
    assert devices.pick_device().platform.name == "Debian PoCL"
    assert devices.pick_device("cpu").platform.name == "Debian PoCL"
    # A substring that matches both platforms takes the first device that works.
    assert devices.pick_device("pthread").platform.name == "Debian PoCL"


def test_naming_a_device_that_failed_its_check_is_refused(two_platforms):
    for selector in ("znver5", "#0", "pthread#1"):
        with pytest.raises(gd.BackendUnavailableError) as caught:
            devices.pick_device(selector)
        message = str(caught.value)
        assert len(message.splitlines()) <= 3
        assert message.startswith("OpenCL device 'pthread-znver5' (PyPI PoCL, OpenCL 3.0, driver")
        assert "unknown target CPU 'generic'" in message
    with pytest.raises(gd.BackendUnavailableError, match="none matches"):
        devices.pick_device("gpu")
    with pytest.raises(gd.BackendUnavailableError, match="must be followed by an index"):
        devices.pick_device("pthread#")


def test_a_device_is_checked_once_per_process(two_platforms, monkeypatch):
    calls = []
    monkeypatch.setattr(devices, "_run_probe", lambda cl, device: calls.append(device.name))
    for _ in range(3):
        gd.list_devices()
        devices.pick_device()
    # One check per device and process (identical devices each get theirs: one of two GPUs
    # can be held by another process).
    assert sorted(calls) == 2 * ["pthread-skylake-avx512-AMD EPYC"] + 2 * ["pthread-znver5"]


def test_the_real_probe_passes_on_this_machines_devices():
    require_backend("opencl")
    assert all(d.usable and d.problem is None for d in gd.list_devices())
    assert sum(d.is_default for d in gd.list_devices()) == 1


def test_a_build_log_is_cut_to_the_compilers_complaint():
    assert devices.first_error_line(RuntimeError(BUILD_LOG)) == "unknown target CPU 'generic'"
    assert devices.first_error_line(RuntimeError("out of resources\nmore")) == "out of resources"


def test_threads_sets_the_numpy_backends_fft_workers():
    assert gd.get_backend("numpy", threads=1).workers == 1
    assert gd.get_backend("numpy").workers == (os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    image = rng.random((20, 24)) + 1
    psf = gd.psf.gaussian_psf((5, 5), 1.0)
    one = gd.richardson_lucy(image, psf, 4, backend="numpy", method="fft", threads=1)
    every = gd.richardson_lucy(image, psf, 4, backend="numpy", method="fft")
    np.testing.assert_allclose(one, every, rtol=1e-12)
    for bad, error in ((0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="threads"):
            gd.richardson_lucy(image, psf, 1, backend="numpy", threads=bad)
