"""What the napari widgets do, without Qt: the option table, deconvolution, model PSFs, samples.

Each algorithm option of the deconvolution widget is one row of :data:`OPTIONS`: its keyword
of :func:`gpu_deconv.richardson_lucy`, default, choices and the conversion from the widget's
value. The widget is built from the table, and :func:`run_options` turns its values back into
keywords, so a new option of the API is one line here.
"""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.ndimage as ndi

from .._validation import ACCELERATIONS, BOUNDARIES, ESTIMATED_BOUNDARIES, METHODS
from ..backends import available_backends, get_backend
from ..psf import confocal_psf, gaussian_psf, widefield_psf
from ..samples import nucleus
from ..stack import check_axes, check_colours, deconvolve_stack

DEFAULT_AXES = {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TCZYX"}
# What napari offers instead of deconvolving across an RGB layer's colours.
SPLIT_RGB = "split it into one layer per colour (right-click the layer: Split RGB)"


def _none_if(word: str) -> Callable[[Any], Any]:
    return lambda value: None if value in (word, "") else value


def _number(text: Any, name: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {text!r}") from exc


@dataclass(frozen=True)
class Option:
    """One option of the deconvolution widget.

    Attributes
    ----------
    name : str
        Keyword of :func:`gpu_deconv.richardson_lucy` (and of the result's metadata).
    default : object
        The widget's initial value.
    choices : tuple or callable, optional
        A drop-down's values (a callable is asked when the widget is built).
    tooltip : str
        Shown on the widget.
    convert : callable, optional
        From the widget's value to the keyword's; by default the value itself.
    limits : tuple of int, optional
        ``(minimum, maximum)`` of an integer field.
    """

    name: str
    default: Any
    choices: tuple | Callable[[], Sequence[str]] | None = None
    tooltip: str = ""
    convert: Callable[[Any], Any] | None = None
    limits: tuple[int, int] | None = None


OPTIONS: tuple[Option, ...] = (
    Option("iterations", 20, tooltip="Richardson-Lucy iterations", limits=(0, 100_000)),
    Option(
        "boundary",
        "reflect",
        BOUNDARIES + ESTIMATED_BOUNDARIES,
        "how the image continues beyond its edges; 'estimate' estimates it",
    ),
    Option("margin", "full", ("full", "half"), "boundary='estimate' only: voxels estimated"),
    Option("method", "auto", METHODS, "how the blur is computed"),
    Option("acceleration", "none", ("none", *ACCELERATIONS), "momentum", convert=_none_if("none")),
    Option(
        "init",
        "default",
        ("default", "observed", "mean"),
        "start of the iteration",
        convert=_none_if("default"),
    ),
    Option(
        "background",
        "0",
        tooltip="background level in the image's units: modelled (H f + b), never subtracted",
        convert=lambda text: _number(text, "background"),
    ),
    Option(
        "read_noise",
        "0",
        tooltip="camera read noise, standard deviation in photons",
        convert=lambda text: _number(text, "read noise"),
    ),
    Option(
        "regularization",
        "0",
        tooltip="total-variation strength, e.g. 2e-3 (0: none); uses the layer's scale",
        convert=lambda text: _number(text, "regularization") or None,
    ),
    Option("backend", "auto", lambda: tuple(available_backends()), "where it runs"),
    Option(
        "device",
        "",
        tooltip="OpenCL device: gpu, cpu or a name (empty: the default)",
        convert=_none_if(""),
    ),
    Option(
        "threads",
        0,
        tooltip="threads of the NumPy backend's FFTs (0: all cores)",
        convert=lambda value: value or None,
        limits=(0, 1024),
    ),
    Option(
        "tile_shape",
        "none",
        ("none", "auto"),
        "tiles: 'auto' tiles what does not fit memory (progress and Cancel then per volume)",
        convert=_none_if("none"),
    ),
)


def run_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """Return the keywords of a run from the widget's values (defaults where absent)."""
    keywords = {}
    for option in OPTIONS:
        value = values.get(option.name, option.default)
        keywords[option.name] = option.convert(value) if option.convert else value
    return keywords


def layer_spacing(scale: Sequence[float], axes: str) -> tuple[float, ...]:
    """Return the voxel size per spatial axis (Z, Y, X or Y, X) from a layer's ``scale``."""
    return tuple(float(s) for s, a in zip(scale, axes) if a in "ZYX")


def deconvolve(
    data: Any,
    psf: np.ndarray,
    values: Mapping[str, Any],
    *,
    scale: Sequence[float] | None = None,
    axes: str | None = None,
    callback: Callable[[int, int], Any] | None = None,
    rgb: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Deconvolve a layer's data; return the result and its metadata.

    Parameters
    ----------
    data : array_like
        The image layer's data: one volume, or channels/time points along ``axes``.
    psf : ndarray
        The PSF, with the volume's spatial axes.
    values : mapping
        The widget's values by option name (see :data:`OPTIONS`).
    scale : sequence of float, optional
        The layer's scale (voxel size per axis); its spatial part is the run's ``spacing``.
    axes : str, optional
        The data's axes; by default ``YX``, ``ZYX``, ``TZYX``, ``TCZYX`` by dimension.
    callback : callable, optional
        ``callback(done, total)`` in iterations over the whole stack (see
        :func:`gpu_deconv.stack.deconvolve_stack`); an exception raised there stops the run.
    rgb : bool, optional
        Whether the layer is RGB/RGBA (napari's ``layer.rgb``: its last axis holds colours),
        by default False. Refused, by the rule of :func:`gpu_deconv.stack.check_colours`.

    Returns
    -------
    ndarray
        The result, of the data's shape.
    dict
        ``{"gpu_deconv": parameters}``: the keywords of the run (``backend`` and ``device``
        as actually used), the axes and ``spacing``, the package version and the date.

    Raises
    ------
    ValueError, TypeError
        If ``rgb``; and as :func:`gpu_deconv.stack.deconvolve_stack`.
    """
    if rgb:  # napari shows the colours as one image: the layer's own axes end in them
        spatial = DEFAULT_AXES.get(np.ndim(data) - 1, "")
        check_colours(spatial + "S", remedy=SPLIT_RGB)
    data = np.asarray(data)
    axes = check_axes(axes or DEFAULT_AXES.get(data.ndim, ""), data.ndim)
    options = run_options(values)
    iterations = options.pop("iterations")
    spacing = layer_spacing(scale, axes) if scale is not None else None
    options["spacing"] = spacing
    result = deconvolve_stack(
        data, np.asarray(psf), iterations, axes=axes, callback=callback, **options
    )
    parameters = {
        **_made(),
        "iterations": iterations,
        **options,
        **_ran_on(options),
        "axes": axes,
        "spacing": spacing,
    }
    return result, {"gpu_deconv": parameters}


def _made() -> dict[str, Any]:
    """Return the package and the date of a result (its provenance)."""
    from .. import __version__

    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"software": "gpu_deconv", "version": __version__, "date": now}


def _ran_on(options: Mapping[str, Any]) -> dict[str, Any]:
    """Return the backend and device the run actually used (never ``"auto"``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the run itself warned already
        used = get_backend(options.get("backend", "auto"), device=options.get("device"))
    return {"backend": used.name, "device": used.device_name or None}


def model_psf(
    kind: str, shape: Sequence[int], spacing: Sequence[float], **optics: Any
) -> np.ndarray:
    """Return a widefield or confocal PSF (see :mod:`gpu_deconv.psf`) for the PSF widget.

    ``optics`` are the models' keywords; a widefield PSF ignores ``excitation_wavelength``
    and ``pinhole`` (the widget always has them).

    Raises
    ------
    ValueError
        If ``kind`` is neither ``"widefield"`` nor ``"confocal"``, and as the models.
    """
    if kind == "widefield":
        detection = {
            k: v for k, v in optics.items() if k not in ("excitation_wavelength", "pinhole")
        }
        return widefield_psf(shape, spacing=spacing, **detection)
    if kind == "confocal":
        return confocal_psf(shape, spacing=spacing, **optics)
    raise ValueError(f"kind must be 'widefield' or 'confocal', got {kind!r}")


def nucleus_sample() -> list[tuple[np.ndarray, dict[str, Any]]]:
    """Return the tutorial's nucleus blurred by its PSF, and the PSF, as napari layer data.

    The bundled 70x70 nucleus (cells3d, 0.26 um pixels) blurred with the tutorial's 25x25
    Gaussian PSF (sigma 2), ``reflect`` boundaries.
    """
    psf = gaussian_psf((25, 25), sigma=2)
    blurred = ndi.convolve(nucleus().astype(np.float32), psf.astype(np.float32), mode="reflect")
    scale = (0.26, 0.26)
    return [
        (blurred, {"name": "nucleus (blurred)", "scale": scale}),
        (psf.astype(np.float32), {"name": "tutorial PSF", "scale": scale}),
    ]
