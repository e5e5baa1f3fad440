"""What every algorithm is written against: the model on the backend and the Algorithm protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

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
        The ratio is set to 0 where the blurred estimate is ``<= eps``.
    dtype : numpy.dtype
        Compute dtype of every array.
    """

    backend: Backend
    operator: BlurOperator
    observed: Any
    estimate: Any
    weights: Any
    eps: float
    dtype: np.dtype


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
