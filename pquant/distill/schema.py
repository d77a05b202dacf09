"""The ``distillation`` config section (group options ``none`` and ``kd``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional

from pquant.config.registry import register_schema
from pquant.errors import ConfigError, check_range


class DistillLoss(str, Enum):
    """``kl_ce``: alpha * T^2 * KL + (1 - alpha) * task loss; ``kl``: T^2 * KL; ``mse``: on logits."""

    kl_ce = "kl_ce"
    kl = "kl"
    mse = "mse"


@register_schema("distillation", "default")
@dataclass
class DistillationConfig:
    """Knowledge distillation from a frozen teacher (Hinton et al., "Distilling the Knowledge in
    a Neural Network", 2015).

    The teacher is either a previous pquant run (``teacher``: its run directory, or its MLflow run
    id in the tracking store of this run) or any module (``teacher_model``: a ``_target_`` node
    with all its arguments) with an optional state dict (``teacher_checkpoint``).
    """

    enabled: bool = False
    teacher: Optional[str] = None  #: run directory (config.yaml + model.pt) or MLflow run id
    teacher_model: Optional[Any] = None  #: or: a ``_target_`` node building the teacher
    teacher_checkpoint: Optional[str] = None  #: state dict (or pquant checkpoint) for it
    loss: DistillLoss = DistillLoss.kl_ce
    temperature: float = 4.0  #: softens both distributions (KL losses)
    alpha: float = 0.9  #: weight of the distillation term in ``kl_ce``

    def validate(self, path: str = "distillation") -> None:
        if not self.enabled:
            for name in ("teacher", "teacher_model", "teacher_checkpoint"):
                if getattr(self, name) is not None:
                    raise ConfigError(
                        f"{path}.{name} is set but distillation is off; select "
                        f"distillation=kd to distil (allowed with distillation=none: null), got "
                        f"{name}={getattr(self, name)!r}")
            return
        check_range(f"{path}.temperature", self.temperature, lo=0, lo_open=True)
        check_range(f"{path}.alpha", self.alpha, lo=0, hi=1)
        if (self.teacher is None) == (self.teacher_model is None):
            raise ConfigError(
                f"{path}: give exactly one teacher: {path}.teacher=<run dir or MLflow run id> "
                f"or {path}.teacher_model={{_target_: ...}}, got teacher={self.teacher!r} and "
                f"teacher_model={'set' if self.teacher_model is not None else None}")
        if self.teacher_checkpoint is not None and self.teacher_model is None:
            raise ConfigError(
                f"{path}.teacher_checkpoint goes with {path}.teacher_model (a run named by "
                f"{path}.teacher brings its own model.pt), got teacher_checkpoint="
                f"{self.teacher_checkpoint!r}")
        if self.teacher_model is not None and (not isinstance(self.teacher_model, dict)
                                               or "_target_" not in self.teacher_model):
            raise ConfigError(f"{path}.teacher_model must be a config node with a _target_, got "
                              f"{self.teacher_model!r}")
