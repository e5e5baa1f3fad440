"""Plain Richardson-Lucy, with edge and mask weights when the model has them."""

from __future__ import annotations

from ..backends._base import BlurPlan
from ._base import BackProjection, Model


class RichardsonLucy:
    r"""Richardson-Lucy: :math:`f \leftarrow f \cdot H^T(g / H f)`, times the weights if any.

    With weights :math:`w^{-1} = 1 / H^T m` (Bertero-Boccacci edges, masks) the step is
    :math:`f \leftarrow f / w \cdot H^T(m g / H f)`; the observed buffer already holds
    :math:`m g`. With a background the ratio is :math:`g / (H f + b)`; with total variation
    the weights are the model's one-step-late factor (:meth:`Model.update_weights`).
    """

    name = "richardson_lucy"
    reductions = False

    @staticmethod
    def buffers(plan: BlurPlan) -> dict[str, str]:
        """Return the back-projection's buffers: all plain RL needs beyond the model."""
        return BackProjection.buffers(plan)

    def __init__(self, model: Model):
        self._model = model
        self.estimate = model.estimate
        self._back_project = BackProjection(model)

    def step(self) -> None:
        """One iteration: blur, ratio, back-project, update."""
        weights = self._model.update_weights(self.estimate)
        self._back_project.update(self.estimate, weights, out=self.estimate)
