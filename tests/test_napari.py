"""The napari plugin: widget functions without a viewer, and the widgets in a real viewer.

The viewer tests run under Xvfb (pytest-xvfb starts it; ``make`` installs it). Without
napari they are skipped, except under ``make test`` (GPU_DECONV_REQUIRE_NAPARI=1), where a
missing napari fails.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import gpu_deconv as gd
from gpu_deconv.psf import gaussian_psf, widefield_psf

if os.environ.get("GPU_DECONV_REQUIRE_NAPARI"):
    import napari  # noqa: F401  (fails loudly where make test expects it)
else:
    pytest.importorskip("napari")

from gpu_deconv.napari_plugin._functions import (  # noqa: E402
    OPTIONS,
    deconvolve,
    layer_spacing,
    model_psf,
    nucleus_sample,
    run_options,
)

WIDGET = "Deconvolve (Richardson-Lucy)"


def test_manifest_is_registered_and_valid():
    import npe2

    manager = npe2.PluginManager.instance()
    manager.discover()
    manifest = manager.get_manifest("gpu_deconv")
    assert {w.display_name for w in manifest.contributions.widgets} == {
        WIDGET,
        "PSF from the optics",
    }
    assert [s.key for s in manifest.contributions.sample_data] == ["nucleus"]
    for command in manifest.contributions.commands:
        assert command.exec is not None  # every python_name resolves


def test_option_table_maps_to_keywords():
    assert run_options({}) == {
        "iterations": 20,
        "boundary": "reflect",
        "margin": "full",
        "method": "auto",
        "acceleration": None,
        "init": None,
        "background": 0.0,
        "read_noise": 0.0,
        "regularization": None,
        "backend": "auto",
        "device": None,
        "threads": None,
        "tile_shape": None,
    }
    chosen = run_options(
        {"acceleration": "shb", "init": "mean", "tile_shape": "auto", "device": "pthread"}
    )
    assert (chosen["acceleration"], chosen["init"], chosen["tile_shape"], chosen["device"]) == (
        "shb",
        "mean",
        "auto",
        "pthread",
    )
    noise = run_options({"background": "4.5", "read_noise": "1.2", "regularization": "2e-3"})
    assert (noise["background"], noise["read_noise"], noise["regularization"]) == (4.5, 1.2, 2e-3)
    with pytest.raises(ValueError, match="background must be a number, got 'dark'"):
        run_options({"background": "dark"})
    names = [o.name for o in OPTIONS]
    assert len(names) == len(set(names))
    assert layer_spacing((2.0, 0.3, 0.1, 0.1), "TZYX") == (0.3, 0.1, 0.1)


def test_deconvolve_function_equals_the_api(backend):
    blurred, psf = (data for data, _ in nucleus_sample())
    values = {"iterations": 12, "boundary": "estimate", "acceleration": "shb", "backend": backend}
    result, metadata = deconvolve(blurred, psf, values, scale=(0.26, 0.26))
    expected = gd.richardson_lucy(
        blurred, psf, 12, boundary="estimate", acceleration="shb", backend=backend, tile_shape=None
    )
    np.testing.assert_array_equal(result, expected)
    assert metadata["gpu_deconv"]["spacing"] == (0.26, 0.26)
    assert metadata["gpu_deconv"]["axes"] == "YX" and metadata["gpu_deconv"]["iterations"] == 12
    # Provenance: the version, the date and the backend actually used (never "auto").
    assert metadata["gpu_deconv"]["version"] == gd.__version__
    assert metadata["gpu_deconv"]["backend"] in ("numpy", "opencl")
    stack = np.stack([blurred, blurred * 2])  # a 2-time-point series, TYX
    series, _ = deconvolve(stack, psf, {"iterations": 3, "backend": backend}, axes="TYX")
    np.testing.assert_allclose(series[1], 2 * series[0], rtol=1e-5)


def test_model_psf_function():
    h = model_psf(
        "widefield", (9, 33, 33), (0.3, 0.1, 0.1), wavelength=0.52, na=1.2, refractive_index=1.333
    )
    np.testing.assert_array_equal(
        h, widefield_psf((9, 33, 33), spacing=(0.3, 0.1, 0.1), wavelength=0.52, na=1.2)
    )
    with pytest.raises(ValueError, match="kind must be"):
        model_psf("sted", (9, 9), (0.1, 0.1), wavelength=0.5, na=1.0, refractive_index=1.33)


@pytest.fixture()
def viewer_with_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("gpu_deconv", "nucleus")
    _, widget = viewer.window.add_plugin_dock_widget("gpu_deconv", WIDGET)
    widget.image.value = viewer.layers["nucleus (blurred)"]
    widget.psf.value = viewer.layers["tutorial PSF"]
    widget.fields["backend"].value = "numpy"
    return viewer, widget


def test_widget_runs_in_a_worker_and_adds_the_result(viewer_with_sample, qtbot):
    viewer, widget = viewer_with_sample
    widget.fields["iterations"].value = 25
    widget.fields["boundary"].value = "nearest"
    with qtbot.waitSignal(widget._signals.advanced, timeout=60_000):
        widget.run_button.changed.emit(True)
        assert widget.worker is not None  # start() returned: the viewer's thread is free
    qtbot.waitUntil(lambda: len(viewer.layers) == 3, timeout=60_000)
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=10_000)
    result = viewer.layers["nucleus (blurred) deconvolved"]
    source = viewer.layers["nucleus (blurred)"]
    expected = gd.richardson_lucy(
        source.data,
        viewer.layers["tutorial PSF"].data,
        25,
        boundary="nearest",
        backend="numpy",
        tile_shape=None,
    )
    np.testing.assert_array_equal(result.data, expected)
    np.testing.assert_array_equal(result.scale, source.scale)
    assert result.metadata["gpu_deconv"]["spacing"] == (0.26, 0.26)
    assert result.metadata["gpu_deconv"]["boundary"] == "nearest"
    assert widget.progress.value == widget.progress.max == 25
    assert widget.status.value == "done: 25 iterations"


def test_cancel_stops_the_run_and_adds_nothing(viewer_with_sample, qtbot):
    viewer, widget = viewer_with_sample
    big = np.random.default_rng(0).random((20, 256, 256)).astype(np.float32) + 0.1
    viewer.add_image(big, name="big", scale=(0.5, 0.1, 0.1))
    viewer.add_image(gaussian_psf((9, 15, 15), 2.0).astype(np.float32), name="psf3d")
    widget.image.value, widget.psf.value = viewer.layers["big"], viewer.layers["psf3d"]
    widget.fields["iterations"].value = 100_000  # would take hours
    with qtbot.waitSignal(widget._signals.advanced, timeout=60_000):
        widget.run_button.changed.emit(True)
    widget.cancel_button.changed.emit(True)
    qtbot.waitUntil(lambda: widget.status.value == "cancelled", timeout=60_000)
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=10_000)
    assert widget.progress.value < 100
    assert "big deconvolved" not in [layer.name for layer in viewer.layers]


def test_psf_widget_makes_a_layer_at_the_image_scale(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((10, 64, 64), np.float32), name="stack", scale=(0.3, 0.1, 0.1))
    _, widget = viewer.window.add_plugin_dock_widget("gpu_deconv", "PSF from the optics")
    widget.image.value = viewer.layers["stack"]
    widget.psf_shape.value = "9,33,33"
    widget.make_button.changed.emit(True)
    layer = viewer.layers[-1]
    np.testing.assert_array_equal(layer.scale, (0.3, 0.1, 0.1))
    expected = widefield_psf(
        (9, 33, 33), spacing=(0.3, 0.1, 0.1), wavelength=0.52, na=1.2, refractive_index=1.333
    )
    np.testing.assert_allclose(layer.data, expected, rtol=1e-6)
    widget.na.value = 1.5  # beyond water's index: a clear message, no layer
    widget.make_button.changed.emit(True)
    assert "must exceed na" in widget.status.value and len(viewer.layers) == 2


# ---- colours (issue 23, item 7) ---------------------------------------------------------------

SPLIT = "split it into one layer per colour (right-click the layer: Split RGB)"


def test_rgb_data_is_refused_as_the_cli_refuses_it():
    rgb = np.random.default_rng(2).random((24, 24, 3)).astype(np.float32) + 0.1
    psf = gaussian_psf((3, 7, 7), 1.0)  # 3D: the colours, read as 3 planes, fitted it
    with pytest.raises(ValueError) as refused:  # was: deconvolved across the colours
        deconvolve(rgb, psf, {"iterations": 2, "backend": "numpy"}, rgb=True)
    assert str(refused.value) == (
        "the image is RGB/RGBA (axes 'YXS'): deconvolving across colours is meaningless; " + SPLIT
    )
    with pytest.raises(ValueError, match=r"RGB/RGBA \(axes 'ZYXS'\)"):
        deconvolve(np.stack([rgb] * 4), psf, {"iterations": 2}, axes="ZYX", rgb=True)
    result, _ = deconvolve(rgb, psf, {"iterations": 2, "backend": "numpy"})  # not an RGB layer
    assert result.shape == rgb.shape


def test_widget_refuses_an_rgb_layer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    rgb = (np.random.default_rng(2).random((24, 24, 3)) * 200).astype(np.uint8)
    viewer.add_image(rgb, name="photo", rgb=True)
    viewer.add_image(gaussian_psf((3, 7, 7), 1.0).astype(np.float32), name="psf3d")
    _, widget = viewer.window.add_plugin_dock_widget("gpu_deconv", WIDGET)
    widget.image.value, widget.psf.value = viewer.layers["photo"], viewer.layers["psf3d"]
    widget.fields["backend"].value = "numpy"
    widget.run_button.changed.emit(True)
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=30_000)
    assert widget.status.value == (
        "error: the image is RGB/RGBA (axes 'YXS'): deconvolving across colours is "
        "meaningless; " + SPLIT
    )
    assert [layer.name for layer in viewer.layers] == ["photo", "psf3d"]
