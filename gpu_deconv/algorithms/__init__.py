"""Deconvolution algorithms, each written once against the Backend primitives.

An algorithm declares the buffers it needs beyond the model's (:class:`Model`), sets itself up
on a model, and advances the estimate one step at a time; the driver
(:func:`gpu_deconv._rl.deconvolve`) does everything around it: validation, memory planning,
tiling, dask, snapshots, callback and progress.
"""

from ._base import OBSERVED, WORK, Algorithm, Model
from .accelerated import ACCELERATIONS, BiggsAndrews, ScaledHeavyBall
from .richardson_lucy import RichardsonLucy

ALGORITHMS: dict[str, type[Algorithm]] = {
    "richardson_lucy": RichardsonLucy,
    "shb": ScaledHeavyBall,
    "biggs": BiggsAndrews,
}

__all__ = [
    "ACCELERATIONS",
    "ALGORITHMS",
    "OBSERVED",
    "WORK",
    "Algorithm",
    "BiggsAndrews",
    "Model",
    "RichardsonLucy",
    "ScaledHeavyBall",
]
