"""The napari dock widgets: deconvolution (in a worker thread, with progress and Cancel) and PSFs.

The deconvolution runs in a napari worker thread, so the viewer never waits; every iteration
(every volume with tiles) reports to the progress bar through a queued Qt signal and checks
the Cancel flag, which stops the run by raising :class:`Cancelled` inside the worker.
"""

from __future__ import annotations

import threading
from typing import Any

import napari
import numpy as np
from magicgui import widgets
from qtpy.QtCore import QObject, Signal

from ._functions import DEFAULT_AXES, OPTIONS, deconvolve, layer_spacing, model_psf


class Cancelled(Exception):
    """Raised in the worker thread when the user presses Cancel."""


class _Progress(QObject):
    """Carries progress from the worker thread to the widget (a queued connection)."""

    advanced = Signal(int, int)


def _option_widget(option) -> Any:
    label = option.name.replace("_shape", "s").replace("_", " ")
    common = dict(name=option.name, label=label, tooltip=option.tooltip)
    if option.choices is not None:
        choices = option.choices() if callable(option.choices) else option.choices
        return widgets.ComboBox(value=option.default, choices=tuple(choices), **common)
    if isinstance(option.default, int):
        low, high = option.limits or (0, 2**31 - 1)
        return widgets.SpinBox(value=option.default, min=low, max=high, **common)
    return widgets.LineEdit(value=option.default, **common)


def _layer_picker(viewer: napari.Viewer, name: str) -> widgets.ComboBox:
    def images(_widget) -> list:
        return [layer for layer in viewer.layers if isinstance(layer, napari.layers.Image)]

    picker = widgets.ComboBox(name=name, label=name, choices=images)
    viewer.layers.events.inserted.connect(picker.reset_choices)
    viewer.layers.events.removed.connect(picker.reset_choices)
    return picker


class DeconvolveWidget(widgets.Container):
    """Dock widget: image and PSF layers, the options of :data:`OPTIONS`, Run and Cancel.

    The result is added as a new layer with the input's scale and translation, the run's
    parameters (with ``spacing``, from the layer's scale) in its ``metadata["gpu_deconv"]``.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (given by napari when the widget is docked from the Plugins menu).
    """

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = _layer_picker(napari_viewer, "image")
        self.psf = _layer_picker(napari_viewer, "psf")
        self.axes = widgets.LineEdit(
            name="axes", label="axes", tooltip="the image's axes (empty: by dimension)"
        )
        self.fields = {o.name: _option_widget(o) for o in OPTIONS}
        self.run_button = widgets.PushButton(name="run", text="Run")
        self.cancel_button = widgets.PushButton(name="cancel", text="Cancel", enabled=False)
        self.progress = widgets.ProgressBar(name="progress", label="progress", value=0, max=1)
        self.status = widgets.Label(name="status", value="")
        self.extend(
            [
                self.image,
                self.psf,
                self.axes,
                *self.fields.values(),
                widgets.Container(
                    widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False
                ),
                self.progress,
                self.status,
            ]
        )
        self._cancel = threading.Event()
        self._signals = _Progress()
        self._signals.advanced.connect(self._advance)
        self.worker: Any = None
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)

    def option_values(self) -> dict[str, Any]:
        """Return the option values by name."""
        return {name: widget.value for name, widget in self.fields.items()}

    def start(self) -> None:
        """Start the deconvolution of the chosen layers in a worker thread."""
        from napari.qt.threading import create_worker

        image, psf = self.image.value, self.psf.value
        if image is None or psf is None:
            self.status.value = "choose an image and a PSF layer"
            return
        axes = self.axes.value.strip() or DEFAULT_AXES.get(image.data.ndim, "")
        values, scale = self.option_values(), tuple(image.scale)
        self._cancel.clear()

        def report(done: int, total: int) -> None:
            self._signals.advanced.emit(done, total)
            if self._cancel.is_set():
                raise Cancelled

        self.worker = create_worker(
            deconvolve,
            np.asarray(image.data),
            np.asarray(psf.data),
            values,
            scale=scale,
            axes=axes,
            callback=report,
            rgb=bool(getattr(image, "rgb", False)),  # refused: colours would be mixed
            _start_thread=False,
            _ignore_errors=True,  # reported in the status line (Cancel is one of them)
        )
        self.worker.returned.connect(lambda out: self._add_result(image, out))
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(self._finished)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.progress.value, self.status.value = 0, "running"
        self.worker.start()

    def cancel(self) -> None:
        """Stop the running deconvolution at its next iteration (next volume with tiles)."""
        self._cancel.set()
        self.status.value = "cancelling"

    def _advance(self, done: int, total: int) -> None:
        self.progress.max = total
        self.progress.value = done

    def _add_result(self, image, out) -> None:
        result, metadata = out
        self.viewer.add_image(
            result,
            name=f"{image.name} deconvolved",
            scale=image.scale,
            translate=image.translate,
            metadata=metadata,
        )
        self.status.value = f"done: {metadata['gpu_deconv']['iterations']} iterations"

    def _failed(self, error: BaseException) -> None:
        self.status.value = "cancelled" if isinstance(error, Cancelled) else f"error: {error}"

    def _finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False


class PsfWidget(widgets.Container):
    """Dock widget: a widefield or confocal PSF from the optics, sampled at an image's scale.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer.
    """

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = _layer_picker(napari_viewer, "image")
        self.kind = widgets.ComboBox(
            name="kind", value="widefield", choices=("widefield", "confocal")
        )
        self.psf_shape = widgets.LineEdit(
            name="shape", value="", tooltip="e.g. 33,65,65 (empty: 25 per axis)"
        )
        self.wavelength = widgets.FloatSpinBox(
            name="wavelength", label="emission (um)", value=0.52, min=0.2, max=2.0, step=0.01
        )
        self.excitation = widgets.FloatSpinBox(
            name="excitation", label="excitation (um)", value=0.488, min=0.2, max=2.0, step=0.01
        )
        self.na = widgets.FloatSpinBox(
            name="na", label="NA", value=1.2, min=0.05, max=1.7, step=0.05
        )
        self.refractive_index = widgets.FloatSpinBox(
            name="refractive_index",
            label="refractive index",
            value=1.333,
            min=1.0,
            max=2.0,
            step=0.001,
        )
        self.pinhole = widgets.FloatSpinBox(
            name="pinhole", label="pinhole (AU)", value=1.0, min=0.05, max=20.0, step=0.1
        )
        self.make_button = widgets.PushButton(name="make", text="Make PSF")
        self.status = widgets.Label(name="status", value="")
        self.extend(
            [
                self.image,
                self.kind,
                self.psf_shape,
                self.wavelength,
                self.excitation,
                self.na,
                self.refractive_index,
                self.pinhole,
                self.make_button,
                self.status,
            ]
        )
        self.make_button.changed.connect(self.make)

    def make(self) -> None:
        """Add the PSF layer, sampled at the chosen image's scale (spatial axes)."""
        image = self.image.value
        if image is None:
            self.status.value = "choose an image layer (its scale is the PSF's voxel size)"
            return
        axes = DEFAULT_AXES.get(image.data.ndim, "")
        spacing = layer_spacing(image.scale, axes)
        shape = (
            tuple(int(n) for n in self.psf_shape.value.split(","))
            if self.psf_shape.value.strip()
            else (25,) * len(spacing)
        )
        try:
            psf = model_psf(
                self.kind.value,
                shape,
                spacing,
                wavelength=self.wavelength.value,
                na=self.na.value,
                refractive_index=self.refractive_index.value,
                excitation_wavelength=self.excitation.value,
                pinhole=self.pinhole.value,
            )
        except ValueError as exc:
            self.status.value = f"error: {exc}"
            return
        name = f"{self.kind.value} PSF NA {self.na.value:g} {self.wavelength.value:g} um"
        self.viewer.add_image(psf.astype(np.float32), name=name, scale=spacing)
        self.status.value = f"made {name}, {psf.shape}"
