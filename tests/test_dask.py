"""The dask front end: every scheduler agrees with the in-memory run; zarr streams through."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import dask
import dask.array as da
import numpy as np
import pytest
from conftest import BOUNDARIES, blob_image, rel_rms, require_backend
from test_tiling import assert_seamless

import gpu_deconv as gd
import gpu_deconv.dask as gdd
from gpu_deconv.backends._opencl_devices import distinct_selectors
from gpu_deconv.io import open_lazy, read_tiff, write_tiff
from gpu_deconv.psf import gaussian_psf

PSF_3D = gaussian_psf((7, 9, 9), (1.2, 1.5, 1.5))


@pytest.fixture(scope="module")
def volume():
    return blob_image((24, 50, 45), seed=12)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_dask_matches_in_memory(volume, boundary, scheduler):
    whole = gd.richardson_lucy(volume, PSF_3D, 15, backend="numpy", boundary=boundary)
    lazy = gdd.richardson_lucy(
        da.from_array(volume, chunks=(12, 20, 30)), PSF_3D, 15, backend="numpy", boundary=boundary
    )
    assert lazy.shape == volume.shape and lazy.numblocks[0] == 2  # dask merges chunks < depth
    with dask.config.set(scheduler=scheduler):
        result = lazy.compute()
    assert result.dtype == np.float64
    assert_seamless(result, whole)


def test_dask_mean_start_is_the_clipped_mean(volume):
    shifted = volume - 0.06  # a background of 0.05: some negatives, clipped with a warning
    with pytest.warns(UserWarning, match="negative"):
        whole = gd.richardson_lucy(shifted, PSF_3D, 5, backend="numpy", init="mean")
    chunked = da.from_array(shifted, chunks=(12, 25, 45))
    lazy = gdd.richardson_lucy(chunked, PSF_3D, 5, backend="numpy", init="mean")
    with pytest.warns(UserWarning, match="negative"):  # each chunk clips its negatives
        lazy = lazy.compute(scheduler="sync")
    assert_seamless(lazy, whole)


@pytest.mark.parametrize("init", ["mean", 0.2])
def test_dask_constant_starts_keep_zero_padding(volume, init):
    kwargs = dict(backend="numpy", boundary="constant", init=init)
    whole = gd.richardson_lucy(volume, PSF_3D, 10, **kwargs)
    lazy = gdd.richardson_lucy(volume, PSF_3D, 10, chunks=(12, 25, 45), **kwargs)
    assert_seamless(lazy.compute(scheduler="sync"), whole)


@pytest.mark.opencl
def test_dask_on_opencl_threads(volume):
    require_backend("opencl")
    image = volume.astype(np.float32)
    whole = gd.richardson_lucy(image, PSF_3D, 10, backend="opencl", method="fft")
    lazy = gdd.richardson_lucy(
        image, PSF_3D, 10, backend="opencl", method="fft", chunks=(24, 25, 45)
    )
    result = lazy.compute(scheduler="threads")
    assert result.dtype == np.float32
    assert_seamless(result, whole)


def _worker_devices() -> dict:
    """On a worker: the device its default OpenCL backend runs on, and every backend it built."""
    from gpu_deconv.backends import _OPENCL_INSTANCES
    from gpu_deconv.backends._opencl_devices import device_index

    backend = gd.get_backend("opencl")
    image = np.ones((6, 8), np.float32)
    ran = float(gd.richardson_lucy(image, np.ones((3, 3)), 2, backend=backend).sum())
    used = sorted({device_index(b.device) for b in _OPENCL_INSTANCES.values()})
    return {"device": device_index(backend.device), "used": used, "sum": ran}


@pytest.mark.opencl
def test_distributed_opencl_workers_lazy_tiff_and_cli(volume, tmp_path, monkeypatch):
    """Two worker processes, each on its own OpenCL device, reading a TIFF chunk by chunk.

    The workers see two PoCL devices of the same name (as a host with two identical GPUs);
    each reports the device it computed on, also after its nanny restarted it.
    """
    distributed = pytest.importorskip("distributed")
    require_backend("opencl")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    monkeypatch.setenv("POCL_DEVICES", "pthread pthread")  # read by the worker processes only
    image = volume.astype(np.float32)
    tiff = tmp_path / "volume.tif"
    write_tiff(tiff, image, voxel_size=(0.5, 0.1, 0.1))
    write_tiff(tmp_path / "psf.tif", PSF_3D.astype(np.float32))
    whole = gd.richardson_lucy(image, PSF_3D, 10, backend="opencl", method="fft")
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        with pytest.raises(gd.BackendUnavailableError, match="no OpenCL device matches"):
            gdd.assign_devices(client, devices=["no-such-device"])
        assigned = gdd.assign_devices(client)
        assert len(assigned) == 2
        assert set(assigned.values()) <= {d.name for d in gd.list_devices()}
        count = len(next(iter(client.run(distinct_selectors).values())))
        expected = [0, 1] if count >= 2 else [0, 0]  # a one-GPU host: both share it
        first, second = sorted(client.scheduler_info()["workers"])
        reports = [client.submit(_worker_devices, workers=[w], pure=False) for w in (first, second)]
        assert [r.result()["device"] for r in reports] == expected
        lazy = gdd.richardson_lucy(
            open_lazy(tiff, chunks=(12, 50, 45)), PSF_3D, 10, backend="opencl", method="fft"
        )
        assert_seamless(client.compute(lazy).result(), whole)
        # Every backend a worker built, the chunks' included, is on that worker's device.
        used = client.run(lambda: _worker_devices()["used"])
        assert [used[first], used[second]] == [[k] for k in expected]
        # The nanny restarts the second worker: a new process, same name, same device.
        name = client.scheduler_info()["workers"][second]["name"]
        client.restart_workers([second])
        restarted = next(
            a for a, w in client.scheduler_info()["workers"].items() if w["name"] == name
        )
        assert restarted != second
        again = client.submit(_worker_devices, workers=[restarted], pure=False).result()
        assert again["device"] == expected[1] and again["used"] == [expected[1]]
        # The CLI on the same cluster: TIFF in, TIFF out, voxel size kept.
        out = tmp_path / "out.tif"
        done = subprocess.run(
            [sys.executable, "-m", "gpu_deconv.cli", "run", str(tiff), "--psf",
             str(tmp_path / "psf.tif"), "-n", "10", "-o", str(out), "--backend", "opencl",
             "--method", "fft", "--scheduler", cluster.scheduler_address, "-q"],
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    written = read_tiff(out)
    assert written.voxel_size == pytest.approx((0.5, 0.1, 0.1))
    assert_seamless(written.data, whole)


def test_zarr_in_zarr_out(tmp_path, volume):
    zarr = pytest.importorskip("zarr")
    source = tmp_path / "in.zarr"
    da.from_array(volume.astype(np.float32), chunks=(12, 25, 45)).to_zarr(str(source))
    lazy = gdd.richardson_lucy(da.from_zarr(str(source)), PSF_3D, 10, backend="numpy")
    lazy.to_zarr(str(tmp_path / "out.zarr"))
    written = zarr.open(str(tmp_path / "out.zarr"), mode="r")
    assert written.chunks == (12, 25, 45)
    whole = gd.richardson_lucy(volume.astype(np.float32), PSF_3D, 10, backend="numpy")
    assert_seamless(np.asarray(written), whole)


STREAM = """
import json, sys, numpy as np, dask.array as da
import gpu_deconv.dask as gdd
from gpu_deconv.psf import gaussian_psf

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

source, target = sys.argv[1:]
psf = gaussian_psf((5, 7, 7), 1.0)
# Imports, thread pools and the allocator's arenas come up with a first small run.
gdd.richardson_lucy(da.ones((40, 40, 40), chunks=20), psf, 3, backend="numpy").compute()
image = da.from_zarr(source)
baseline = rss("VmRSS")
result = gdd.richardson_lucy(image, psf, 3, backend="numpy")
result.to_zarr(target, compute=True)
print(json.dumps({"baseline": baseline, "peak": rss("VmHWM"), "bytes": image.nbytes}))
"""


def stream(tmp_path, shape):
    """Deconvolve a zarr volume of ``shape`` into another in a fresh process: its memory report."""
    rng = da.random.default_rng(0)
    image = rng.random(shape, chunks=(16, 64, 128), dtype=np.float32) + np.float32(0.1)
    source, target = tmp_path / f"in{shape[0]}.zarr", tmp_path / f"out{shape[0]}.zarr"
    image.to_zarr(str(source))
    script = tmp_path / "stream.py"
    script.write_text(textwrap.dedent(STREAM))
    done = subprocess.run(
        [sys.executable, str(script), str(source), str(target)],
        capture_output=True,
        text=True,
        env={**os.environ, "DASK_NUM_WORKERS": "2"},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    return report["peak"] - report["baseline"], image, da.from_zarr(str(target))


def test_zarr_streams_through_bounded_memory(tmp_path):
    """Memory follows the chunks in flight, not the volume: 4x the planes, the same peak."""
    pytest.importorskip("zarr")
    small, _, _ = stream(tmp_path, (128, 128, 256))  # 16 MiB
    large, image, out = stream(tmp_path, (512, 128, 256))  # 64 MiB
    assert large - small < 24 * 2**20, (small / 2**20, large / 2**20)  # volumes differ by 48
    corner = gd.richardson_lucy(
        np.asarray(image[:, :64, :64]), gaussian_psf((5, 7, 7), 1.0), 3, backend="numpy"
    )
    # Away from the crop's own cut edges, the streamed result matches the in-memory one.
    assert rel_rms(np.asarray(out[:, :40, :40]), corner[:, :40, :40]) < 1e-5


def test_dask_argument_errors(volume):
    with pytest.raises(ValueError, match="unknown boundary"):
        gdd.richardson_lucy(volume, PSF_3D, 2, boundary="periodic")
    with pytest.raises(ValueError, match="overlap must hold 3 integers"):
        gdd.richardson_lucy(volume, PSF_3D, 2, overlap=(1, 2))
    with pytest.raises(TypeError, match="init must be 'observed', 'mean' or a positive number"):
        gdd.richardson_lucy(volume, PSF_3D, 2, init=np.ones_like(volume))
    with pytest.raises(ValueError, match="psf must have the same number of dimensions"):
        gdd.richardson_lucy(volume, PSF_3D[0], 2)
    with pytest.raises(TypeError, match="backend must be a name"):
        gdd.richardson_lucy(volume, PSF_3D, 2, backend=gd.get_backend("numpy"))
    lazy = gdd.richardson_lucy(da.from_array(np.full((8, 8, 8), np.nan)), PSF_3D, 2)
    with pytest.raises(ValueError, match="NaN"):
        lazy.compute(scheduler="sync")


# ---- interruptions (issue 23, item 5) ---------------------------------------------------------


def test_interrupted_compute_stops_its_chunks(backend):
    """Ctrl-C in the waiting thread: the chunks stop at their next iteration, no thread is left."""
    import signal
    import threading
    import time

    image = da.from_array(blob_image((16, 48, 48), seed=3).astype(np.float32), chunks=(16, 24, 24))
    endless = gdd.richardson_lucy(image, PSF_3D, 100_000, backend=backend)  # would take hours
    before = set(threading.enumerate())
    main = threading.main_thread().ident
    ctrl_c = threading.Timer(1.0, signal.pthread_kill, (main, signal.SIGINT))
    ctrl_c.start()
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            gdd.compute_stoppable(endless)
    finally:
        ctrl_c.cancel()
    assert time.monotonic() - start < 6
    assert set(threading.enumerate()) - before == set()  # every chunk's thread has ended
    again = gdd.richardson_lucy(image, PSF_3D, 2, backend=backend)
    np.testing.assert_allclose(
        gdd.compute_stoppable(again), again.compute(scheduler="sync"), rtol=1e-6
    )
    with pytest.raises(ValueError, match="scheduler must be"):
        gdd.compute_stoppable(again, "tcp://nowhere:8786")


def test_cancelled_chunk_on_a_distributed_worker_stops():
    """client.cancel: the worker's running chunk stops at its next iteration, not hours later."""
    distributed = pytest.importorskip("distributed")
    import time

    image = da.from_array(blob_image((16, 48, 48), seed=3).astype(np.float32), chunks=(16, 48, 48))
    endless = gdd.richardson_lucy(image, PSF_3D, 100_000, backend="numpy")
    with (
        distributed.LocalCluster(
            n_workers=1, processes=False, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        worker = next(iter(cluster.workers.values()))
        future = client.compute(endless)
        deadline = time.monotonic() + 60
        while not worker.state.executing_count:  # the chunk is iterating
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client.cancel(future, force=True)
        cancelled = time.monotonic()
        while worker.state.executing_count or worker.state.long_running:
            assert time.monotonic() - cancelled < 5, "the cancelled chunk runs on"
            time.sleep(0.05)


def test_signals_stop_a_dask_run_within_seconds(backend, tmp_path):
    """Ctrl-C (twice) and SIGTERM end a zarr-to-zarr CLI run on dask's threads in seconds.

    Exit codes 130 and 143, one line each, no output or temporary left; the second Ctrl-C,
    sent while the first is being handled, changes nothing.
    """
    import signal
    import time

    zarr = pytest.importorskip("zarr")
    source = zarr.open_array(
        str(tmp_path / "in.zarr"), mode="w", shape=(16, 96, 96), chunks=(16, 48, 48), dtype="f4"
    )
    source[:] = blob_image((16, 96, 96), seed=4).astype(np.float32) + 1
    write_tiff(tmp_path / "psf.tif", PSF_3D.astype(np.float32))
    before = {p.name for p in tmp_path.iterdir()}
    runs = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        output = tmp_path / f"{sig.name}.zarr"
        command = [sys.executable, "-m", "gpu_deconv.cli", "run", str(tmp_path / "in.zarr"),
                   "--psf", str(tmp_path / "psf.tif"), "-n", "100000",  # hours: only a signal
                   "-q", "--backend", backend, "-o", str(output)]  # fmt: skip
        runs[sig] = output, subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    for output, process in runs.values():  # each writes its output's hidden temporary
        while not [n for n in os.listdir(tmp_path) if output.name in n]:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)
    time.sleep(1.5)  # the chunks are iterating
    expected = {
        signal.SIGINT: (130, "gpu-deconv: interrupted (Ctrl-C); unfinished outputs removed"),
        signal.SIGTERM: (143, "gpu-deconv: terminated (SIGTERM); unfinished outputs removed"),
    }
    for sig, (_, process) in runs.items():
        assert process.poll() is None
        sent = time.monotonic()
        process.send_signal(sig)
        if sig == signal.SIGINT:
            time.sleep(0.05)
            process.send_signal(sig)  # impatient: a second Ctrl-C
        try:
            _, err = process.communicate(timeout=30)
        finally:
            process.kill()
        code, line = expected[sig]
        assert (process.returncode, err.strip().splitlines()) == (code, [line])
        assert time.monotonic() - sent < 5
    assert {p.name for p in tmp_path.iterdir()} == before  # no output, no temporary
