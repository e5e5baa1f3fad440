"""Plain Richardson-Lucy, with edge and mask weights when the model has them."""

from __future__ import annotations

from ..backends._base import BlurPlan
from ._base import OBSERVED, WORK, Model


class RichardsonLucy:
    r"""Richardson-Lucy: :math:`f \leftarrow f \cdot H^T(g / H f)`, times the weights if any.

    With weights :math:`w^{-1} = 1 / H^T m` (Bertero-Boccacci edges, masks) the step is
    :math:`f \leftarrow f / w \cdot H^T(m g / H f)`; the observed buffer already holds
    :math:`m g`.
    """

    name = "richardson_lucy"
    reductions = False

    @staticmethod
    def buffers(plan: BlurPlan) -> dict[str, str]:
        """Return the blurred/ratio image and, unless the blur works in place, the correction."""
        buffers = {"blurred": OBSERVED}
        if not (plan.inplace and plan.same_domain):
            buffers["correction"] = WORK
        return buffers

    def __init__(self, model: Model):
        be, plan = model.backend, model.operator.plan
        self._model = model
        self.estimate = model.estimate
        self._blurred = be.empty(plan.observed_shape, model.dtype)
        if "correction" in self.buffers(plan):
            self._correction = be.empty(plan.work_shape, model.dtype)
        else:  # an operator that may write over its input needs no separate buffer
            self._correction = self._blurred

    def step(self) -> None:
        """One iteration: blur, ratio, back-project, update."""
        m = self._model
        be, operator = m.backend, m.operator
        operator.convolve(self.estimate, out=self._blurred)
        be.ratio(m.observed, self._blurred, m.eps, out=self._blurred)
        operator.correlate(self._blurred, out=self._correction)
        if m.weights is None:
            be.multiply(self.estimate, self._correction, out=self.estimate)
        else:
            be.weighted_update(self.estimate, self._correction, m.weights, out=self.estimate)
