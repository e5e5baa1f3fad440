"""Accelerated Richardson-Lucy: scaled heavy ball (SHB) and Biggs-Andrews.

Both extrapolate the estimate along its last change, ``p_k = f_k + a_k (f_k - f_{k-1})``, and
take the Richardson-Lucy step at ``p_k``: ``f_{k+1} = p_k * H^T(g / H p_k)`` (times the edge or
mask weights when the model has them). They differ in the momentum ``a_k``:

* ``"shb"`` (Wang & Miller 2014, deconwolf's default): ``a_k = (r - 1) / (r + 2)``, ``r`` the
  iterations since the last restart, so the first two steps after a restart are plain RL.
* ``"biggs"`` (Biggs & Andrews 1997, pycudadecon): ``a_k = <G_{k-1}, G_{k-2}> / <G_{k-2},
  G_{k-2}>`` clamped to ``[0, 1]``, with ``G_k = f_{k+1} - p_k`` the change the RL step made.

Restart (SHB): when the RL step goes against the momentum that made ``p_k``,
``<f_{k+1} - f_k, p_k - f_k> < 0``, ``r`` is reset, so momentum builds up again from plain RL
(O'Donoghue & Candes's gradient restart). Biggs restarts by itself (``a_k`` clamped at 0 when
successive changes disagree). Both clamp the extrapolated point and the estimate at a tiny
positive floor where they are positive (voxels at 0 stay 0, as in plain RL), accumulate their
reductions in float64 on the backend, and the estimate is always the true iterate ``f_k``,
never the extrapolated point.

SHB runs its update, restart test and next extrapolation as one pass over the estimate
(``Backend.momentum_update``): it needs no copy of ``f_{k-1}``, since ``p_k - f_k`` is what the
test reads and the new estimate is written over the old one only after the pass has read it.
Biggs runs its update, its change ``G_k`` and the sums of its next momentum as one pass
(``Backend.change_update``; ``<G_{k-1}, G_{k-1}>`` is the previous pass's second sum).
"""

from __future__ import annotations

from .._validation import ACCELERATIONS
from ..backends._base import BlurPlan
from ._base import WORK, BackProjection, Model

__all__ = ["ACCELERATIONS", "BiggsAndrews", "ScaledHeavyBall"]
# Above the smallest float32 normal (1.2e-38) with room, below any real signal of data scaled
# to a maximum in [1, 2) (the driver's scaling).
FLOOR = 1e-30
TINY = 1e-300  # keeps Biggs' ratio finite when a change vanishes


def shb_momentum(since_restart: int) -> float:
    """SHB's momentum after ``since_restart`` steps: ``max(0, (r - 1) / (r + 2))``."""
    return max(0.0, (since_restart - 1) / (since_restart + 2))


class ScaledHeavyBall:
    """Scaled heavy ball (SHB) with gradient restart (see the module)."""

    name = "shb"
    reductions = True

    @staticmethod
    def buffers(plan: BlurPlan) -> dict[str, str]:
        """Return the extrapolated point and the back-projection's buffers."""
        return {"point": WORK, **BackProjection.buffers(plan)}

    def __init__(self, model: Model):
        be, plan = model.backend, model.operator.plan
        self._model = model
        self.estimate = model.estimate
        self._point = be.empty(plan.work_shape, model.dtype)
        self._back_project = BackProjection(model)
        self._since_restart = 0
        self._extrapolated = False  # whether the point buffer holds this step's p_k

    def step(self) -> None:
        """One iteration: RL step at p_k, restart test and p_{k+1}, in one pass."""
        point = self._point if self._extrapolated else self.estimate
        weights = self._model.update_weights(point)
        # p_{k+1} is made with the momentum of no restart; a restart discards it (a = 0).
        alpha = shb_momentum(self._since_restart + 1)
        agreement = self._back_project.momentum_update(
            point, weights, self.estimate, alpha, self._point, FLOOR
        )
        self._since_restart += 1
        if self._extrapolated and agreement < 0:
            self._since_restart = 0
        self._extrapolated = shb_momentum(self._since_restart) > 0


class BiggsAndrews:
    """Biggs-Andrews acceleration (see the module)."""

    name = "biggs"
    reductions = True

    @staticmethod
    def buffers(plan: BlurPlan) -> dict[str, str]:
        """Return the previous estimate, the point, the last two changes and the BP's buffers."""
        return {
            "previous": WORK,
            "point": WORK,
            "change": WORK,
            "earlier_change": WORK,
            **BackProjection.buffers(plan),
        }

    def __init__(self, model: Model):
        be, plan = model.backend, model.operator.plan
        self._model = model
        self.estimate = model.estimate
        self._previous = be.copy(model.estimate)
        self._point = be.empty(plan.work_shape, model.dtype)
        self._back_project = BackProjection(model)
        # Zeros, not garbage: the first step's sum with the "earlier" change is unused.
        self._changes = [be.full(plan.work_shape, 0.0, model.dtype) for _ in range(2)]
        self._steps = 0
        self._momentum = 0.0
        self._last_size = 0.0  # <G_{k-1}, G_{k-1}>

    def step(self) -> None:
        """One iteration: extrapolate, then the RL step at the point with its change and sums."""
        m = self._model
        m.backend.extrapolate(self.estimate, self._previous, self._momentum, FLOOR, self._point)
        weights = m.update_weights(self._point)
        # The new change G_k goes into the buffer of G_{k-2}.
        self._changes.reverse()
        change, earlier = self._changes
        agreement, size = self._back_project.change_update(
            self._point, weights, self.estimate, change, earlier, FLOOR
        )
        self._steps += 1
        if self._steps >= 2:  # needs two changes
            ratio = agreement / (self._last_size + TINY)
            self._momentum = min(max(ratio, 0.0), 1.0)
        self._last_size = size
