"""Several OpenCL devices in one process and across processes: contexts, selectors, fork.

PoCL shows one CPU device unless ``POCL_DEVICES`` says otherwise before the driver loads, so
the two-device tests run in a fresh interpreter with ``POCL_DEVICES="pthread pthread"``: two
devices of the same name, as on a host with two identical GPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import RL_RTOL, blob_image, make_psf, rel_rms, require_backend

import gpu_deconv as gd

pytestmark = pytest.mark.opencl
TWO_DEVICES = {"POCL_DEVICES": "pthread pthread"}


def run_python(tmp_path, code: str, env: dict[str, str] | None = None, timeout: int = 240):
    """Run ``code`` as a script in a fresh interpreter; a hang fails after ``timeout`` s."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    environment = {**os.environ, **(env or {})}
    environment.pop("GPU_DECONV_DEVICE", None)
    try:
        done = subprocess.run(
            [sys.executable, str(script), str(tmp_path)],
            capture_output=True,
            text=True,
            env=environment,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the script hung for {timeout} s: {exc.stderr!r}")
    assert done.returncode == 0, done.stderr
    return done.stdout


INTERLEAVED = """
import json, sys
import numpy as np
import gpu_deconv as gd
from gpu_deconv.backends._opencl_devices import device_index

out = sys.argv[1]
image, psf = np.load(out + "/image.npy"), np.load(out + "/psf.npy")
devices = gd.list_devices()
if len(devices) < 2 or devices[0].name != devices[1].name:  # POCL_DEVICES had no effect
    print(json.dumps({"skip": [d.name for d in devices]}))
    sys.exit()
a = gd.get_backend("opencl", device="#0")
b = gd.get_backend("opencl", device="#1")
named = gd.get_backend("opencl", device=devices[1].name[:6] + "#1")  # among identical names
# Interleaved at every iteration: while a runs, b blurs with its own buffers and plans.
blurred = []
def on_a(k):
    blurred.append(gd.convolve(image, psf, backend=b, method="fft"))
first = gd.richardson_lucy(image, psf, 12, backend=a, method="fft", callback=on_a)
second = gd.richardson_lucy(image, psf, 12, backend=b, method="fft")
third = gd.richardson_lucy(image, psf, 12, backend=a, method="spatial")
np.save(out + "/results.npy", np.stack([first, second, third, blurred[0], blurred[-1]]))
print(json.dumps({
    "names": [d.name for d in devices],
    "indices": [device_index(be.device) for be in (a, b, named)],
    "contexts": len({be.context.int_ptr for be in (a, b, named)}),
    "own_device": all(be.context.devices == [be.device] for be in (a, b, named)),
}))
"""


def test_two_backends_on_two_devices_interleaved_give_the_numpy_result(tmp_path):
    require_backend("opencl")
    image = blob_image((18, 30, 26), seed=5).astype(np.float32)
    psf = make_psf((5, 7, 5), "random")
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "psf.npy", psf)
    report = json.loads(run_python(tmp_path, INTERLEAVED, TWO_DEVICES))
    if "skip" in report:
        pytest.skip(f"PoCL is not the default OpenCL driver here: {report['skip']}")
    assert len(report["names"]) == 2 and report["names"][0] == report["names"][1]
    assert report["indices"] == [0, 1, 1] and report["contexts"] == 3 and report["own_device"]
    first, second, third, blurred_first, blurred_last = np.load(tmp_path / "results.npy")
    expected = gd.richardson_lucy(image.astype(np.float64), psf, 12, backend="numpy")
    for result in (first, second, third):
        assert rel_rms(result, expected) <= RL_RTOL[np.dtype(np.float32)]
    reference = gd.convolve(image.astype(np.float64), psf, backend="numpy")
    for result in (blurred_first, blurred_last):
        assert rel_rms(result, reference) <= 1e-6


FORKED = """
import multiprocessing, warnings
import numpy as np
import gpu_deconv as gd
from gpu_deconv.backends import _OPENCL_INSTANCES

IMAGE, PSF = np.ones((8, 8), np.float32), np.ones((3, 3))

def child(kind):
    backend = next(iter(_OPENCL_INSTANCES.values())) if kind == "inherited" else kind
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            gd.richardson_lucy(IMAGE, PSF, 2, backend=backend)
        except gd.BackendUnavailableError as exc:
            return f"{kind}: refused: {exc}"
    return f"{kind}: ran; warnings: {[str(w.message)[:40] for w in caught]}"

if __name__ == "__main__":
    gd.richardson_lucy(IMAGE, PSF, 2, backend="opencl")  # the parent uses OpenCL first
    with multiprocessing.get_context("fork").Pool(1) as pool:
        for kind in ("opencl", "inherited", "numpy", "auto"):
            print(pool.apply(child, (kind,)))
    print("parent:", gd.richardson_lucy(IMAGE, PSF, 2, backend="opencl").dtype)
"""


def test_fork_after_opencl_refuses_clearly_instead_of_hanging(tmp_path):
    require_backend("opencl")
    lines = run_python(tmp_path, FORKED, timeout=120).splitlines()
    refusal = "refused: OpenCL was initialised in process"
    assert lines[0].startswith(f"opencl: {refusal}") and "'spawn'" in lines[0]
    assert lines[1].startswith(f"inherited: {refusal}")
    assert lines[2] == "numpy: ran; warnings: []"
    assert lines[3].startswith("auto: ran; warnings: [\"backend='auto': OpenCL unavailable")
    assert lines[4] == "parent: float32"


PROBE = """
import warnings
import dask.array as da
import numpy as np
import gpu_deconv as gd
import gpu_deconv.dask as gdd
from gpu_deconv.backends import _OPENCL_INSTANCES, _probe_opencl

warnings.simplefilter("ignore")
image = da.from_array(np.ones((64, 64), np.float32), chunks=16)
gdd.richardson_lucy(image, np.ones((3, 3)), 2, overlap=2).compute(scheduler="sync")
info = _probe_opencl.cache_info()
calls = info.hits + info.misses  # one per chunk: 16
print(gd.get_backend("auto").name, len(_OPENCL_INSTANCES), info.misses, calls >= 16)
"""


@pytest.mark.parametrize(
    "env, expected",
    [
        # A CPU device: NumPy is chosen from the device list; no backend is built.
        ({}, "numpy 0 1 True"),
        # No device at all: found out once, not once per chunk.
        ({"POCL_DEVICES": "none"}, "numpy 0 1 True"),
    ],
)
def test_auto_probes_opencl_once_and_builds_no_backend_on_cpu(tmp_path, env, expected):
    pytest.importorskip("dask")
    require_backend("opencl")
    if gd.get_backend("opencl").auto_priority > 1:
        pytest.skip("a property of machines whose default device is a CPU")
    assert run_python(tmp_path, PROBE, env).strip() == expected
