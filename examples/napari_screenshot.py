"""Take the README's screenshot of the napari widget (run under Xvfb: xvfb-run -a python ...).

Opens the sample, docks the deconvolution widget, deconvolves 40 iterations in its worker
thread and saves the whole window to docs/images/napari_widget.png.
"""

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images/napari_widget.png")

viewer = napari.Viewer()
viewer.window.resize(1300, 820)
viewer.open_sample("gpu_deconv", "nucleus")
_, widget = viewer.window.add_plugin_dock_widget("gpu_deconv", "Deconvolve (Richardson-Lucy)")
widget.image.value = viewer.layers["nucleus (blurred)"]
widget.psf.value = viewer.layers["tutorial PSF"]
widget.fields["iterations"].value = 40
widget.fields["backend"].value = "numpy"
widget.run_button.changed.emit(True)
start = time.time()
while (widget.worker.is_running or len(viewer.layers) < 3) and time.time() - start < 120:
    QApplication.processEvents()
    time.sleep(0.01)
viewer.layers["tutorial PSF"].visible = False
viewer.grid.enabled = True
for _ in range(50):
    QApplication.processEvents()
    time.sleep(0.01)
viewer.screenshot(str(OUT), canvas_only=False, flash=False)
print(f"wrote {OUT}: {widget.status.value}")
