"""Total-variation regularisation in Dey et al.'s one-step-late form (Microsc. Res. Tech. 2006).

Each Richardson-Lucy update is divided by ``1 - lambda * div(grad f / |grad f|_s)``, evaluated
at the point the step is taken from. With edge or mask weights ``w = H^T m`` it is divided by
``w (1 - lambda div(...))``, not by the gradient's ``w - lambda div(...)``: the regulariser
then weighs against each voxel's data alike, which keeps the one-step-late iteration stable
in a margin where ``w`` is small (there the unweighted form oscillated, amplifying rounding
differences a thousandfold every two iterations). Four choices differ from the peers'
(clij2-fft, imagej-ops):

* the gradient uses the real voxel spacing, relative to the finest axis, so ``lambda`` keeps
  its meaning in pixels of the finest axis while a z step three times coarser weighs a third;
* its norm is smoothed, ``|grad f|_s = sqrt(|grad f|^2 + s^2)`` with ``s`` a thousandth of the
  image's maximum (at least ``2 ndim lambda`` times its mean, which keeps the step stable in
  flat regions, :func:`total_variation`), so flat regions get a zero, not an arbitrary unit,
  direction;
* the denominator is kept at or above half its unregularised value (:data:`GUARD`), so a large
  ``lambda`` cannot make it zero or negative; how many voxels the guard caught is reported;
* differences to voxels outside the estimate (a margin's far corners) are 0: TV acts on the
  estimated voxels only.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

GUARD = 0.5  # 1 - lambda div stays >= GUARD: one step at most doubles a voxel's update
SMOOTHING = 1e-3  # the gradient norm's smoothing, relative to the image's maximum


@dataclass(frozen=True)
class TotalVariation:
    """The regulariser of one run.

    Attributes
    ----------
    strength : float
        ``lambda``.
    spacing : tuple of 3 float
        Voxel spacing per (z, y, x) axis over the finest axis' (leading axes of 1D/2D images: 1).
    smoothing : float
        The norm's ``s``, in the scaled image's units.
    periodic : bool
        Differences wrap around (``boundary="wrap"``: the scene is periodic).
    """

    strength: float
    spacing: tuple[float, float, float]
    smoothing: float
    periodic: bool = False


def check_regularization(regularization: Any) -> float:
    """Return the TV strength ``lambda`` as a float >= 0 (0 or None: no regularisation)."""
    if regularization is None:
        return 0.0
    if isinstance(regularization, bool) or not isinstance(regularization, numbers.Real):
        raise TypeError(
            f"regularization must be a number (TV strength), got {type(regularization).__name__}"
        )
    value = float(regularization)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"regularization must be a finite number >= 0, got {regularization}")
    return value


def check_spacing(spacing: Any, ndim: int) -> tuple[float, ...]:
    """Return the voxel spacing as ``ndim`` positive floats (None: 1 per axis)."""
    if spacing is None:
        return (1.0,) * ndim
    values = (spacing,) * ndim if isinstance(spacing, numbers.Real) else spacing
    try:
        steps = tuple(float(s) for s in values)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"spacing must be a number or {ndim} numbers, got {spacing!r}") from exc
    if len(steps) != ndim:
        raise ValueError(f"spacing must hold {ndim} values (one per axis), got {len(steps)}")
    if not all(math.isfinite(s) and s > 0 for s in steps):
        raise ValueError(f"spacing values must be positive and finite, got {steps}")
    return steps


def total_variation(
    strength: float, spacing: tuple[float, ...], peak: float, mean: float
) -> TotalVariation:
    """Return the regulariser for a scaled image of maximum ``peak`` and mean ``mean``.

    The smoothing is :data:`SMOOTHING` times the peak, or ``2 ndim lambda`` times the mean
    where that is larger: where the gradient is below the smoothing, the one-step-late step
    acts as an explicit diffusion of step ``lambda f / s`` (f the local intensity), stable for
    ``s >= 2 ndim lambda f``.
    """
    finest = min(spacing)
    z, y, x = (1.0,) * (3 - len(spacing)) + tuple(s / finest for s in spacing)
    # An image without light (peak 0) takes the smoothing of a peak of 1: its result is 0.
    smoothing = max(SMOOTHING * peak, 2 * len(spacing) * strength * mean) or SMOOTHING
    return TotalVariation(strength, (z, y, x), smoothing)
