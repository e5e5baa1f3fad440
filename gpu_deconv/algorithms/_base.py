"""What every algorithm is written against: the model on the backend and the Algorithm protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .._regularization import GUARD, TotalVariation
from ..backends._base import Backend, BlurOperator, BlurPlan

# Buffer domains: the observed image's shape, or the estimate's (larger with "estimate").
OBSERVED = "observed"
WORK = "work"


@dataclass
class Model:
    """The deconvolution problem on the backend, prepared by the driver.

    Attributes
    ----------
    backend : Backend
        Where every array lives.
    operator : BlurOperator
        The blur ``H`` from the work domain to the observed image.
    observed : backend array
        The observed image ``g``, zero where the mask excludes a voxel.
    estimate : backend array
        The starting estimate on the work domain; algorithms update it in place.
    weights : backend array or None
        ``1 / H^T(mask / sum(psf))`` on the work domain, 0 where a voxel is not observable;
        ``None`` when the plain update is exact (same-shape boundary mode, no mask).
    eps : float
        The ratio is set to 0 where the data's model ``H f + b`` is ``<= eps``.
    noise : float
        The blur's round-off (float32 FFTs): where the model is ``<= noise`` the ratio is
        also 0 if it exceeds :data:`~gpu_deconv.backends._base.NOISE_RATIO_LIMIT`.
    dtype : numpy.dtype
        Compute dtype of every array.
    background : backend array or None
        The per-voxel part of the background ``b`` (observed domain), if any.
    offset : float
        The constant part of the model beyond ``H f``: a scalar background plus the read
        noise's variance (which the observed buffer also holds).
    regularizer : TotalVariation or None
        Total-variation regularisation (:mod:`gpu_deconv._regularization`), if any.
    """

    backend: Backend
    operator: BlurOperator
    observed: Any
    estimate: Any
    weights: Any
    eps: float
    dtype: np.dtype
    background: Any = None
    offset: float = 0.0
    regularizer: TotalVariation | None = None
    noise: float = 0.0
    _factor: Any = field(default=None, repr=False)

    def update_weights(self, point: Any) -> Any:
        """Return what the update from ``point`` is multiplied by: the weights or the TV factor.

        Without regularisation, the edge/mask weights (None: none). With it, the one-step-late
        factor ``weights / (1 - lambda div(...))`` at ``point``, in a buffer of its own.
        """
        tv = self.regularizer
        if tv is None:
            return self.weights
        if self._factor is None:
            self._factor = self.backend.empty(self.operator.plan.work_shape, self.dtype)
        self.backend.tv_factor(
            point,
            self.weights,
            tv.spacing,
            tv.strength,
            tv.smoothing,
            GUARD,
            out=self._factor,
            periodic=tv.periodic,
        )
        return self._factor


class Algorithm(Protocol):
    """One iterative deconvolution algorithm.

    Attributes
    ----------
    name : str
        Registry name.
    reductions : bool
        Whether a step runs reductions (their scratch is planned as the backend's
        ``reduction_scratch``).
    estimate : backend array
        The current estimate on the work domain (what snapshots and the result are cut from).
    """

    name: str
    reductions: bool
    estimate: Any

    @staticmethod
    def buffers(plan: BlurPlan) -> dict[str, str]:
        """Buffers the algorithm allocates beyond the model's: name to domain.

        The driver plans memory as the operator's (``plan.memory``), the model's (observed,
        estimate, weights) and these, so no backend knows any algorithm's buffer count.
        """
        ...

    def __init__(self, model: Model) -> None: ...

    def step(self) -> None:
        """Advance the estimate by one iteration."""
        ...


class BackProjection:
    """The Richardson-Lucy correction ``H^T(g / H x)`` with its two buffers, for any algorithm.

    ``buffers(plan)`` declares them: the blurred/ratio image and, unless the blur may write
    over its input, the correction.
    """

    @staticmethod
    def buffers(plan: BlurPlan) -> dict[str, str]:
        """Return the blurred/ratio buffer and, unless the blur works in place, the correction."""
        buffers = {"blurred": OBSERVED}
        if not plan.inplace:  # only same-shape operators are in place
            buffers["correction"] = WORK
        return buffers

    def __init__(self, model: Model):
        be, plan = model.backend, model.operator.plan
        self._model = model
        self._blurred = be.empty(plan.observed_shape, model.dtype)
        # An operator that may write over its input needs no separate correction buffer.
        self._correction = self._blurred if plan.inplace else be.empty(plan.work_shape, model.dtype)

    def _ratio(self, x: Any) -> Any:
        """Return the buffer holding the ratio ``g / (H x + b)``."""
        m = self._model
        model = dict(background=m.background, offset=m.offset, noise=m.noise)
        fused = getattr(m.operator, "convolve_ratio", None)  # one pass fewer where offered
        if fused is not None:
            fused(x, m.observed, m.eps, self._blurred, **model)
            return self._blurred
        m.operator.convolve(x, out=self._blurred)
        return m.backend.ratio(m.observed, self._blurred, m.eps, self._blurred, **model)

    def update(self, x: Any, weights: Any, out: Any, floor: float | None = None) -> Any:
        """Write the Richardson-Lucy step from ``x`` into ``out`` (which may be ``x``).

        ``out = x * H^T(g / H x)``, times ``weights`` unless None; with a ``floor``, the
        accelerated update (``backend.clamped_update``). ``weights`` must not depend on the
        correction. Operators that offer ``correlate_update`` fuse their crop into it.
        """
        m, be = self._model, self._model.backend
        ratio = self._ratio(x)
        fused = getattr(m.operator, "correlate_update", None)
        if fused is not None:
            return fused(ratio, x, weights, floor, out)
        correction = m.operator.correlate(ratio, out=self._correction)
        if floor is not None:
            return be.clamped_update(x, correction, weights, floor, out=out)
        if weights is None:
            return be.multiply(x, correction, out=out)
        return be.weighted_update(x, correction, weights, out=out)

    def momentum_update(
        self, x: Any, weights: Any, estimate: Any, alpha: float, point: Any, floor: float
    ) -> float:
        """SHB's step from ``x`` (the ``point`` buffer or ``estimate`` itself) into ``estimate``.

        See :meth:`Backend.momentum_update` for what is written and returned.
        """
        return self._fused("momentum_update", x, weights, floor, estimate, alpha, point)

    def change_update(
        self, x: Any, weights: Any, estimate: Any, change: Any, earlier: Any, floor: float
    ) -> tuple[float, float]:
        """Biggs' step from ``x`` into ``estimate``, its change into ``change``.

        See :meth:`Backend.change_update` for what is written and returned.
        """
        return self._fused("change_update", x, weights, floor, estimate, change, earlier)

    def _fused(self, name: str, x: Any, *args: Any) -> Any:
        """Run ``Backend.<name>`` on the correction from ``x`` (or the operator's fused one).

        An operator's ``correlate_<name>`` fuses its crop into the step.
        """
        m = self._model
        ratio = self._ratio(x)
        fused = getattr(m.operator, f"correlate_{name}", None)
        if fused is not None:
            return fused(ratio, x, *args)
        correction = m.operator.correlate(ratio, out=self._correction)
        return getattr(m.backend, name)(x, correction, *args)
