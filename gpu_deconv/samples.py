"""Sample images that ship with the package (no download at run time)."""

from __future__ import annotations

import importlib.resources

import numpy as np
import tifffile


def nucleus() -> np.ndarray:
    """Return the tutorial's 70x70 nucleus, ``cells3d()[30, 1, 120:190, 80:150]``.

    Returns
    -------
    ndarray
        uint16 array of shape (70, 70) (CC0 data, see ``gpu_deconv/data/README.md``).

    Examples
    --------
    >>> from gpu_deconv.samples import nucleus
    >>> nucleus().shape
    (70, 70)
    """
    with (
        importlib.resources.files("gpu_deconv")
        .joinpath("data", "nucleus_70x70.tif")
        .open("rb") as handle
    ):
        return tifffile.imread(handle)
