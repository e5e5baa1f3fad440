"""Tiled Richardson-Lucy: the plan, agreement with the whole-image run, and memory caps."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest
from conftest import BOUNDARIES, blob_image, rel_rms, require_backend
from hypothesis import given, settings
from hypothesis import strategies as st

import gpu_deconv as gd
from gpu_deconv._model import memory_need
from gpu_deconv.algorithms import RichardsonLucy
from gpu_deconv.backends import get_backend
from gpu_deconv.backends._base import BlurSpec
from gpu_deconv.psf import gaussian_psf
from gpu_deconv.tiling import default_overlap, plan_tiles


def plan_memory(backend, psf, shape, boundary, method, dtype, mask=False, algorithm=RichardsonLucy):
    """The memory richardson_lucy plans for one piece (PSF normalised as it does)."""
    spec = BlurSpec(psf / psf.sum(), shape, boundary, method, np.dtype(dtype))
    return memory_need(backend, spec, algorithm, weighted=mask)


# Tiled against whole-image results (issue 7): relative RMS and max |diff| / max, both <= 1e-3.
# The default overlap gives 3e-4 or better up to 100 iterations (docs/guide/big-data.md).
SEAM_RTOL = 1e-3


def assert_seamless(tiled, whole):
    worst = np.abs(tiled - whole).max() / np.abs(whole).max()
    assert rel_rms(tiled, whole) <= SEAM_RTOL, rel_rms(tiled, whole)
    assert worst <= SEAM_RTOL, worst


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    ndim=st.integers(1, 3),
    boundary=st.sampled_from(BOUNDARIES),
)
def test_plan_covers_every_voxel_once_with_overlap_inside(data, ndim, boundary):
    shape = tuple(data.draw(st.lists(st.integers(1, 40), min_size=ndim, max_size=ndim)))
    tile = tuple(data.draw(st.lists(st.integers(1, 45), min_size=ndim, max_size=ndim)))
    overlap = tuple(data.draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))
    plan = plan_tiles(shape, tile, overlap, boundary)
    count = np.zeros(shape, int)
    extended = boundary in ("wrap", "constant")
    for t in plan.tiles:
        count[t.core] += 1
        assert tuple(hi - lo for lo, hi in t.window) == plan.window_shape
        for axis, (core, (lo, hi), n) in enumerate(zip(t.core, t.window, shape)):
            assert core.stop - core.start <= max(plan.core_shape[axis], 1)
            # Real data (or the volume border, where the mode is exact) around every core.
            before_ok = core.start - lo >= overlap[axis] or (not extended and lo == 0)
            after_ok = hi - core.stop >= overlap[axis] or (not extended and hi == n)
            if plan.core_shape[axis] < n or extended:
                assert before_ok and after_ok, (axis, core, (lo, hi))
            if not extended:
                assert 0 <= lo and hi <= n
    assert (count == 1).all()


def test_plan_rejects_bad_lengths():
    with pytest.raises(ValueError, match="tile_shape must hold 2 integers"):
        plan_tiles((10, 10), (5,), 2)
    with pytest.raises(ValueError, match="tile_shape values must be >= 1"):
        plan_tiles((10, 10), (0, 5), 2)
    with pytest.raises(ValueError, match="overlap values must be >= 0"):
        plan_tiles((10, 10), 5, -1)
    with pytest.raises(ValueError, match="tile_shape must hold 2 integers"):
        plan_tiles((10, 10), (4.5, 5), 2)


CASES_2D = [((50, 61), (16, 25)), ((50, 61), (17, 61)), ((50, 61), (50, 20))]
CASES_3D = [((20, 40, 35), (8, 16, 20)), ((20, 40, 35), (20, 13, 35))]


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("shape, tile", CASES_2D + CASES_3D)
def test_tiled_matches_whole_numpy(shape, tile, boundary):
    image = blob_image(shape, seed=3)
    psf = gaussian_psf((7,) * len(shape), 1.2)
    whole = gd.richardson_lucy(image, psf, 20, backend="numpy", boundary=boundary, tile_shape=None)
    tiled = gd.richardson_lucy(image, psf, 20, backend="numpy", boundary=boundary, tile_shape=tile)
    assert_seamless(tiled, whole)


@pytest.mark.opencl
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_tiled_matches_whole_opencl(boundary):
    require_backend("opencl")
    image = blob_image((20, 40, 35), seed=4).astype(np.float32)
    psf = gaussian_psf((7, 7, 7), (1.5, 1.2, 1.2))
    kwargs = dict(backend="opencl", boundary=boundary, method="fft")
    whole = gd.richardson_lucy(image, psf, 20, tile_shape=None, **kwargs)
    tiled = gd.richardson_lucy(image, psf, 20, tile_shape=(10, 16, 20), **kwargs)
    assert_seamless(tiled, whole)


@pytest.mark.parametrize("tile", [(25, 30), (25, 70)], ids=["blocks", "rows"])
@pytest.mark.parametrize("boundary", ["constant", "wrap", "nearest", "reflect"])
@pytest.mark.parametrize("init", ["mean", 0.3, "array"])
def test_tiled_starting_estimates(boundary, init, tile):
    image = blob_image((60, 70), seed=5)
    psf = gaussian_psf((9, 9), 1.5)
    if init == "array":
        init = np.random.default_rng(0).uniform(0.1, 1.0, image.shape)
    kwargs = dict(backend="numpy", boundary=boundary, init=init)
    whole = gd.richardson_lucy(image, psf, 15, tile_shape=None, **kwargs)
    tiled = gd.richardson_lucy(image, psf, 15, tile_shape=tile, **kwargs)
    assert_seamless(tiled, whole)


def test_tiled_snapshots_and_progress(capsys):
    image = blob_image((60, 70), seed=6)
    psf = gaussian_psf((9, 9), 1.5)
    whole = gd.richardson_lucy(image, psf, 12, backend="numpy", snapshots=[0, 5, 12])
    tiled = gd.richardson_lucy(
        image, psf, 12, backend="numpy", snapshots=[0, 5, 12], tile_shape=(30, 30), progress=True
    )
    assert sorted(tiled) == [0, 5, 12]
    np.testing.assert_array_equal(tiled[0], image)
    for k in (5, 12):
        assert_seamless(tiled[k], whole[k])
    err = capsys.readouterr().err
    assert "6 tiles" in err and "72/72" in err


def test_one_tile_is_the_whole_run():
    image = blob_image((40, 50), seed=7)
    psf = gaussian_psf((9, 9), 1.5)
    whole = gd.richardson_lucy(image, psf, 10, backend="numpy", tile_shape=None)
    for tile_shape in ((40, 50), (64, 64), "auto"):
        same = gd.richardson_lucy(image, psf, 10, backend="numpy", tile_shape=tile_shape)
        np.testing.assert_array_equal(same, whole)


def traced_peak(run):
    """Peak bytes Python allocators (NumPy's included) held while ``run()`` ran."""
    tracemalloc.start()
    try:
        result = run()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "method, boundary",
    [
        ("fft", "nearest"),
        ("fft", "reflect"),
        ("separable", "wrap"),
        ("spatial", "mirror"),
        ("fft", "wrap"),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_memory_model_bounds_the_real_peak(method, boundary, dtype):
    image = blob_image((24, 40, 36), seed=8).astype(dtype)
    psf = gaussian_psf((7, 9, 9), (1.5, 2.0, 2.0))
    backend = get_backend("numpy")
    need = plan_memory(backend, psf, image.shape, boundary, method, dtype)
    _, peak = traced_peak(
        lambda: gd.richardson_lucy(
            image, psf, 3, backend="numpy", method=method, boundary=boundary, tile_shape=None
        )
    )
    # The model is an upper bound, and a tight one (so that tiles are not made too small).
    assert peak <= need.total <= 1.25 * peak, (peak / image.nbytes, need.total / image.nbytes)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_memory_model_bounds_the_padded_dct_peak(dtype):
    from dataclasses import replace

    from gpu_deconv.backends.numpy_backend import NumpyBackend

    backend = NumpyBackend()
    backend.cost_model = replace(backend.cost_model, dct_factor=0.1)  # prefer the DCT
    image = blob_image((24, 40, 36), seed=8).astype(dtype)
    psf = gaussian_psf((7, 9, 9), (1.5, 2.0, 2.0))
    need = plan_memory(backend, psf, image.shape, "nearest", "fft", dtype)
    assert backend.plan_blur(BlurSpec(psf, image.shape, "nearest", "fft", dtype)).transform == (
        "dct2-padded"
    )
    _, peak = traced_peak(
        lambda: gd.richardson_lucy(
            image, psf, 3, backend=backend, method="fft", boundary="nearest", tile_shape=None
        )
    )
    assert peak <= need.total <= 1.25 * peak, (peak / image.nbytes, need.total / image.nbytes)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(acceleration="shb"),
        dict(acceleration="biggs"),
        dict(mask=True, init="mean"),
        dict(mask=True, init="observed"),
        dict(boundary="estimate", mask=True),
        dict(boundary="estimate", acceleration="shb"),
    ],
)
def test_numpy_memory_model_bounds_weighted_and_accelerated_peaks(kwargs):
    from gpu_deconv.algorithms import ALGORITHMS

    image = blob_image((24, 40, 36), seed=8).astype(np.float32)
    psf = gaussian_psf((7, 9, 9), (1.5, 2.0, 2.0))
    kwargs = dict(kwargs)
    boundary = kwargs.setdefault("boundary", "reflect")
    if kwargs.get("mask"):
        kwargs["mask"] = np.random.default_rng(0).random(image.shape) > 0.1
    algorithm = ALGORITHMS[kwargs.get("acceleration") or "richardson_lucy"]
    spec = BlurSpec(psf / psf.sum(), image.shape, boundary, "fft", np.float32)
    weighted = boundary == "estimate" or kwargs.get("mask") is not None
    need = memory_need(get_backend("numpy"), spec, algorithm, weighted)
    _, peak = traced_peak(
        lambda: gd.richardson_lucy(
            image, psf, 4, backend="numpy", method="fft", tile_shape=None, **kwargs
        )
    )
    assert peak <= need.total <= 1.25 * peak, (peak / image.nbytes, need.total / image.nbytes)


def test_max_memory_caps_the_working_memory_of_tiles():
    image = blob_image((64, 128, 128), seed=9).astype(np.float32)  # 4 MiB
    psf = gaussian_psf((7, 7, 7), 1.0)
    cap = 3 * 2**20
    whole = gd.richardson_lucy(image, psf, 8, backend="numpy", tile_shape=None)
    tiled, peak = traced_peak(
        lambda: gd.richardson_lucy(image, psf, 8, backend="numpy", max_memory=cap)
    )
    # The volume is bigger than the cap; the validated copy of the input and the returned
    # result are the only image-sized arrays outside it.
    working = peak - 2 * image.nbytes
    assert image.nbytes > cap and working <= cap, (working / 2**20, cap / 2**20)
    assert_seamless(tiled, whole)


@pytest.mark.opencl
def test_opencl_auto_tiles_what_exceeds_max_memory():
    require_backend("opencl")
    backend = get_backend("opencl")
    image = blob_image((32, 64, 64), seed=10).astype(np.float32)
    psf = gaussian_psf((7, 7, 7), 1.2)
    cap = image.nbytes * 2
    whole_need = plan_memory(backend, psf, image.shape, "reflect", "fft", np.float32)
    assert whole_need.total > cap
    kwargs = dict(backend="opencl", method="fft")
    tiled = gd.richardson_lucy(image, psf, 10, max_memory=cap, **kwargs)
    whole = gd.richardson_lucy(image, psf, 10, tile_shape=None, **kwargs)
    assert_seamless(tiled, whole)
    with pytest.raises(MemoryError, match="max_memory"):
        gd.richardson_lucy(image, psf, 10, tile_shape=None, max_memory=cap, **kwargs)


@pytest.mark.opencl
def test_opencl_backend_is_safe_across_threads():
    require_backend("opencl")
    images = [blob_image((30, 40), seed=s).astype(np.float32) for s in range(4)]
    psf = gaussian_psf((7, 7), 1.2)
    expected = [gd.richardson_lucy(im, psf, 10, backend="opencl") for im in images]
    results = [None] * len(images)

    def work(i):
        results[i] = gd.richardson_lucy(images[i], psf, 10, backend="opencl")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_tiling_argument_errors():
    image = blob_image((30, 30), seed=11)
    psf = gaussian_psf((5, 5), 1.0)
    run = lambda **kw: gd.richardson_lucy(image, psf, 2, backend="numpy", **kw)  # noqa: E731
    with pytest.raises(ValueError, match="tile_shape must be None, 'auto' or lengths"):
        run(tile_shape="big")
    with pytest.raises(ValueError, match="tile_shape must hold 2 integers"):
        run(tile_shape=(10, 10, 10))
    with pytest.raises(ValueError, match="overlap values must be >= 0"):
        run(tile_shape=(10, 10), overlap=-2)
    with pytest.raises(ValueError, match="max_memory must be positive"):
        run(max_memory=0)
    with pytest.raises(TypeError, match="max_memory must be an int"):
        run(max_memory=1.5e9)
    with pytest.raises(ValueError, match="callback cannot follow tiled runs"):
        run(tile_shape=(10, 10), callback=lambda k: None)
    with pytest.raises(MemoryError, match="not even a tile"):
        run(max_memory=1000)


def test_default_overlap_is_ten_psf_widths():
    psf = gaussian_psf((31, 21, 1), (3.0, 1.5, 1.0))
    assert default_overlap(psf) == (30, 15, 0)


def test_off_centre_psf_gets_its_offset_as_extra_overlap():
    psf = np.zeros((25, 25))
    psf[13:24, 7:18] = gaussian_psf((11, 11), 1.0)  # centroid 6 rows below the origin (12)
    assert default_overlap(psf) == (16, 10)
    image = blob_image((120, 120), seed=13)
    whole = gd.richardson_lucy(image, psf, 20, backend="numpy", tile_shape=None)
    tiled = gd.richardson_lucy(image, psf, 20, backend="numpy", tile_shape=(40, 40))
    assert_seamless(tiled, whole)


def test_host_memory_is_bytes_between_zero_and_physical_memory():
    import os

    from gpu_deconv.backends._host_memory import available_host_memory

    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    available = available_host_memory()
    assert available is not None and 0 < available <= physical
    limits = get_backend("numpy").memory_limits()
    assert limits.total == limits.largest <= 0.8 * physical
