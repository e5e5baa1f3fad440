"""The napari plugin: a deconvolution dock widget, a model-PSF widget and sample data.

Registered through ``gpu_deconv/napari.yaml`` (npe2, entry point ``napari.manifest``); install
with ``pip install 'gpu_deconv[napari]'``. :mod:`._functions` holds what the widgets do, free of
Qt (tested without a viewer); :mod:`._widget` the widgets themselves.
"""
