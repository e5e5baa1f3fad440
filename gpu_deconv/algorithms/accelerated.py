"""Accelerated Richardson-Lucy: scaled heavy ball (SHB) and Biggs-Andrews, one loop.

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
"""

from __future__ import annotations

from .._validation import ACCELERATIONS
from ..backends._base import BlurPlan
from ._base import WORK, BackProjection, Model

__all__ = ["ACCELERATIONS", "AcceleratedRichardsonLucy", "BiggsAndrews", "ScaledHeavyBall"]
# Above the smallest float32 normal (1.2e-38) with room, below any real signal of data scaled
# to a maximum in [1, 2) (the driver's scaling).
FLOOR = 1e-30
TINY = 1e-300  # keeps Biggs' ratio finite when a change vanishes


class AcceleratedRichardsonLucy:
    """Richardson-Lucy with momentum; ``kind`` is ``"shb"`` or ``"biggs"`` (see the module)."""

    name = "accelerated_richardson_lucy"
    kind = "shb"
    reductions = True

    @classmethod
    def buffers(cls, plan: BlurPlan) -> dict[str, str]:
        """Return the previous estimate, the extrapolated point, ratio and correction buffers.

        Biggs adds the last two changes ``G``.
        """
        buffers = {"previous": WORK, "point": WORK, **BackProjection.buffers(plan)}
        if cls.kind == "biggs":
            buffers.update(change=WORK, earlier_change=WORK)
        return buffers

    def __init__(self, model: Model):
        be, plan = model.backend, model.operator.plan
        self._model = model
        self.estimate = model.estimate
        self._previous = be.copy(model.estimate)
        self._point = be.empty(plan.work_shape, model.dtype)
        self._back_project = BackProjection(model)
        if self.kind == "biggs":
            self._changes = [be.empty(plan.work_shape, model.dtype) for _ in range(2)]
        self._since_restart = 0
        self._steps = 0

    def _momentum(self) -> float:
        if self.kind == "shb":
            r = self._since_restart
            return max(0.0, (r - 1) / (r + 2))
        if self._steps < 2:  # Biggs needs two changes
            return 0.0
        be = self._model.backend
        last, earlier = self._changes
        ratio = be.dot(last, earlier) / (be.dot(earlier, earlier) + TINY)
        return min(max(ratio, 0.0), 1.0)

    def step(self) -> None:
        """One iteration: extrapolate, RL step at the extrapolated point, restart test."""
        m = self._model
        be = m.backend
        alpha = self._momentum()
        be.extrapolate(self.estimate, self._previous, alpha, FLOOR, out=self._point)
        weights = m.update_weights(self._point)
        self._back_project.update(self._point, weights, out=self.estimate, floor=FLOOR)
        self._steps += 1
        if self.kind == "biggs":
            # The new change replaces the older one: G_k into the buffer of G_{k-2}.
            self._changes.reverse()
            be.subtract(self.estimate, self._point, out=self._changes[0])
            return
        self._since_restart += 1
        if alpha > 0 and be.step_agreement(self.estimate, self._previous, self._point) < 0:
            self._since_restart = 0


class ScaledHeavyBall(AcceleratedRichardsonLucy):
    """Scaled heavy ball (SHB) with gradient restart."""

    name = "shb"
    kind = "shb"


class BiggsAndrews(AcceleratedRichardsonLucy):
    """Biggs-Andrews acceleration."""

    name = "biggs"
    kind = "biggs"
