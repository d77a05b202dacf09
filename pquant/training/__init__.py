"""Training: the public stage machinery (:class:`StageDriver`) and the loop built on it."""

from pquant.training.stages import StageDriver, Step

__all__ = ["StageDriver", "Step"]
