"""Knowing when to stop: the data term on the backend each iteration, and three stopping rules.

A :class:`Monitor` blurs the true iterate ``f_k`` (never an extrapolated point) and reduces, on
the backend and in float64, the Poisson discrepancy ``D_k = (2/N) KL(g | H f_k + b)`` and its
expected value for Poisson data of the current means (:mod:`gpu_deconv._noise`), in photons
per observed voxel; only a few numbers per iteration leave the device. The rules:

* ``"discrepancy"`` (Bertero et al. 2010): stop at the first ``k`` with ``D_k <= T_k``, where
  ``T_k = mean E[2 KL](H f_k + b)`` corrects the classical target 1 for dark voxels. Needs the
  image in photons (``g`` Poisson counts).
* ``"relative"`` (deconwolf's): stop at the first ``k`` where the objective ``KL / N`` changed
  by at most ``tolerance`` (0.02) of itself since ``k - 1``.
* ``"holdout"``: split the integer photon counts by binomial thinning into two halves that are
  independent Poisson images, run on one while the other's log-likelihood is tracked, swap,
  and scale the mean best count to the full data by :data:`HOLDOUT_TRANSFER` (measured,
  ``benchmarks/quality.py``). The driver runs it (:func:`gpu_deconv._rl.deconvolve`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _noise
from ._device_io import kept_voxels

STOP_RULES = ("discrepancy", "relative", "holdout")
DEFAULT_STOP = "discrepancy"
RELATIVE_TOLERANCE = 0.02  # deconwolf's default
DEFAULT_MAX_ITERATIONS = 250  # deconwolf's
HOLDOUT_SEED = 0  # the split is reproducible: the same image gives the same count
# Full-data best count (MSE against the truth) over the halves' mean best count: median 1.00 over
# benchmarks/quality.py's cases and seeds with a model that fits (estimated edges, background:
# 0.86-1.20, 1.00-1.04 in 3D); with invented edges and no background they overshoot (0.38-1.5).
HOLDOUT_TRANSFER = 1.0
# A hold-out run ends this long after its best so far: past the maximum, the log-likelihood
# only falls (noise amplification), so a later, higher maximum is not expected.
HOLDOUT_PATIENCE = (1.5, 10)  # stop at k >= 1.5 * best + 10
# A start whose discrepancy is below this fraction of its target fits better than Poisson
# noise allows (under_dispersed).
UNDER_DISPERSED = 0.75


class StoppingWarning(UserWarning):
    """``iterations="auto"`` ran ``max_iterations`` without its rule being met."""


@dataclass
class Info:
    """What a run did, returned with ``return_info=True``.

    Attributes
    ----------
    iterations : int
        Iterations run (the count to fix for other fields of view).
    stop : str or None
        The stopping rule, or None for a fixed count.
    history : list of dict
        One record per iteration count ``k = 0 .. iterations``: ``"iteration"``,
        ``"objective"`` (``KL(g | H f_k + b)`` per observed voxel, in photons),
        ``"discrepancy"`` (``2 KL / N``) and ``"target"`` (its expected value for Poisson data).
        Tiled runs record their central tile.
    tv_guarded : int
        Voxel updates whose total-variation denominator the guard raised (0 without TV).
    holdout_iterations : tuple of int
        ``stop="holdout"``: the best count of each half.
    rule_met : bool
        Whether the rule stopped the run (False: it ran ``max_iterations``, with a
        :class:`StoppingWarning`); True for fixed counts.
    backend, method, device : str
        What the run actually used (never ``"auto"``): the backend's name, the blur's method
        and the device's name (empty on NumPy).
    """

    iterations: int
    stop: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    tv_guarded: int = 0
    holdout_iterations: tuple[int, ...] = ()
    rule_met: bool = True
    backend: str = ""
    method: str = ""
    device: str = ""


def check_stop(
    iterations: Any, stop: Any, max_iterations: Any, tolerance: Any
) -> tuple[int | None, str | None, int, float]:
    """Return ``(iterations or None for "auto", rule or None, max_iterations, tolerance)``.

    Raises
    ------
    TypeError, ValueError
        If a value has the wrong type or range, a rule is given with a fixed count, or
        ``max_iterations`` without ``iterations="auto"``.
    """
    if isinstance(iterations, str):
        if iterations != "auto":
            raise ValueError(f"iterations must be an int >= 0 or 'auto', got {iterations!r}")
        rule = DEFAULT_STOP if stop is None else stop
        if rule not in STOP_RULES:
            raise ValueError(f"stop must be one of {STOP_RULES}, got {rule!r}")
        limit = DEFAULT_MAX_ITERATIONS if max_iterations is None else max_iterations
        if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1:
            raise ValueError(f"max_iterations must be an int >= 1, got {max_iterations!r}")
        return None, rule, int(limit), _tolerance(tolerance, rule)
    if stop is not None:
        raise ValueError(f"stop={stop!r} needs iterations='auto'")
    if max_iterations is not None:
        raise ValueError("max_iterations needs iterations='auto'")
    if tolerance is not None:
        raise ValueError("tolerance needs iterations='auto' with stop='relative'")
    return iterations, None, 0, RELATIVE_TOLERANCE


def _tolerance(tolerance: Any, rule: str) -> float:
    if tolerance is None:
        return RELATIVE_TOLERANCE
    if rule != "relative":
        raise ValueError(f"tolerance applies to stop='relative' only, not {rule!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real):
        raise TypeError(f"tolerance must be a number, got {type(tolerance).__name__}")
    if not 0 < float(tolerance) < 1:
        raise ValueError(f"tolerance must lie in (0, 1), got {tolerance}")
    return float(tolerance)


def under_dispersed(record: dict[str, float]) -> bool:
    """Whether the start's discrepancy is far below its target (not Poisson counts, likely).

    Measured from the observed start: photon data 0.89-2.1 of the target, the same data as
    raw camera counts (offset 100, gain 2.1) 0.50-0.57.
    """
    return record["discrepancy"] < UNDER_DISPERSED * record["target"]


def check_counts(image: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``image`` holds integer photon counts (hold-out splitting)."""
    if not np.array_equal(image, np.round(image)):
        raise ValueError(
            "stop='holdout' splits integer photon counts; this image is not integer-valued "
            "(convert ADU to photons with offset and gain, or use stop='discrepancy')"
        )


def split_counts(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split photon counts into two independent Poisson halves (binomial thinning, p = 1/2)."""
    rng = np.random.default_rng(HOLDOUT_SEED)
    first = rng.binomial(image.astype(np.int64), 0.5).astype(image.dtype)
    return first, image - first


class Monitor:
    """Evaluates the data term at the true iterate, on the backend, once per iteration.

    Parameters
    ----------
    model : Model
        The run's model (observed image, background, operator).
    mask : ndarray of bool or None
        Observed voxels (None: all of the observed domain).
    scale : float
        Backend units per photon (the driver's power-of-two scaling).
    gain : float
        What turns the model ``H' f + b' + offset`` into the data's units: one over the sum
        of the PSF the blur uses (the model's ``H`` has sum 1).
    validation : ndarray, optional
        The held-out half, in the model's units: records its log-likelihood as ``"holdout"``.
    """

    def __init__(
        self, model: Any, mask: np.ndarray | None, scale: float, gain: float, validation=None
    ):
        be, plan = model.backend, model.operator.plan
        self._model = model
        self._scale = scale
        self._gain = gain
        self._blurred = be.empty(plan.observed_shape, model.dtype)
        self._mask = None if mask is None else be.to_backend(mask.astype(model.dtype))
        self._voxels = math.prod(plan.observed_shape) if mask is None else kept_voxels(mask)
        self._table = be.to_backend(_noise.table())
        self._validation = None if validation is None else be.to_backend(validation)

    def record(self, k: int, estimate: Any) -> dict[str, float]:
        """Return the record of iterate ``k`` (see :class:`Info`)."""
        m = self._model
        m.operator.convolve(estimate, out=self._blurred)
        kl2, expected = m.backend.discrepancy_terms(
            m.observed,
            self._blurred,
            self._mask,
            m.background,
            m.offset,
            self._gain,
            self._scale,
            self._table,
        )
        per_voxel = self._scale * self._voxels
        record = {
            "iteration": k,
            "objective": kl2 / 2 / per_voxel,
            "discrepancy": kl2 / per_voxel,
            "target": expected / per_voxel,
        }
        if self._validation is not None:
            record["holdout"] = m.backend.holdout_terms(
                self._validation, self._blurred, self._mask, m.background, m.offset, self._gain
            )
        return record


class Rule:
    """Decides, from the history so far, whether the last iterate is the one to stop at."""

    def __init__(self, name: str, tolerance: float = RELATIVE_TOLERANCE):
        self.name = name
        self.tolerance = tolerance
        self.best = 0  # hold-out: the count of the highest log-likelihood so far

    def done(self, history: list[dict[str, float]]) -> bool:
        """Whether to stop at the last record's iterate."""
        last = history[-1]
        k = len(history) - 1
        if self.name == "discrepancy":
            return last["discrepancy"] <= last["target"]
        if self.name == "relative":
            if k == 0:
                return False
            before = history[-2]["objective"]
            return abs(before - last["objective"]) <= self.tolerance * last["objective"]
        if last["holdout"] > history[self.best]["holdout"]:
            self.best = k
        grow, extra = HOLDOUT_PATIENCE
        return k >= grow * self.best + extra
