"""MDMM -- sparsity as a constraint, solved with the Modified Differential Method of Multipliers.

Reference: J. C. Platt, A. H. Barr, "Constrained Differential Optimization", NeurIPS 1988.

Each layer constrains a sparsity metric ``g(W)`` of its weight: ``g(W) = target_value``
(Equality), ``<=`` (LessThanOrEqual) or ``>=`` (GreaterThanOrEqual). With the infeasibility ``h``
(``|g - c|``, ``max(g - c, 0)`` or ``max(c - g, 0)``) the loss gains
``scale * (lambda * h + damping * h**2 / 2)``; the multiplier ``lambda`` climbs by gradient ascent
-- explicitly, ``lambda += constraint_lr * scale * h`` after every training step
(``use_grad: false``), or through the optimizer with a reversed gradient (``use_grad: true``).

Metrics (``metric_type``), with ``s`` = ``target_sparsity``:

* ``UnstructuredSparsity``: ``(s**2 - L0**2) * L1`` where ``L0`` is the fraction of weights with
  ``|w| <= epsilon`` (``l0_mode: coarse``) or its smooth estimate ``mean exp(-100 w**2)``
  (``smooth``), and ``L1 = sum |w|`` (``scale_mode: sum``) or its mean (``mean``). With the default
  ``target_value = 0`` the constraint holds when the near-zero fraction reaches ``s``: until then
  it is an L1 pull towards zero whose strength the multiplier adapts.
* ``StructuredSparsity``: the same on groups of ``rf`` consecutive weights of each output row
  (group L2 norms instead of magnitudes) -- it has a gradient, unlike the reference's indicator.

``threshold_decay`` adds ``threshold_decay * sum(u**2)`` over the magnitudes (or group norms)
``u <= epsilon``: an L2 decay of the pruned weights.

The mask is ``|w| > epsilon`` (per weight, or per group for the structured metric) in training,
and the same mask is frozen when fine-tuning starts; the constraint is then switched off.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pquant.errors import check_range
from pquant.pruning.base import PruningConfig, PruningMethod, Stage


class ConstraintType(Enum):
    Equality = "Equality"
    LessThanOrEqual = "LessThanOrEqual"
    GreaterThanOrEqual = "GreaterThanOrEqual"


class MetricType(Enum):
    UnstructuredSparsity = "UnstructuredSparsity"
    StructuredSparsity = "StructuredSparsity"


class L0Mode(Enum):
    coarse = "coarse"
    smooth = "smooth"


class ScaleMode(Enum):
    mean = "mean"
    sum = "sum"


SMOOTH_SHARPNESS = 100.0


@dataclass
class MDMMConfig(PruningConfig):
    """MDMM settings (reference names and defaults, plus ``constraint_lr``)."""

    THRESHOLD_DECAY: ClassVar[str] = (
        "L2 decay of the pruned scores, threshold_decay * sum(u**2) over the magnitudes (group "
        "norms) u <= epsilon: keeps pruned weights at zero instead of hovering at the threshold")

    _target_: str = "pquant.pruning.mdmm.MDMM"
    pruning_method: str = "mdmm"
    constraint_type: ConstraintType = ConstraintType.Equality
    target_value: float = 0.0  #: right-hand side of the constraint on the metric
    metric_type: MetricType = MetricType.UnstructuredSparsity
    target_sparsity: float = 0.9
    rf: int = 1  #: group size of the structured metric
    epsilon: float = 1.0e-03  #: magnitude (or group norm) below which a weight counts as zero
    scale: float = 10.0  #: weight of the penalty
    damping: float = 1.0  #: quadratic damping of the MDMM penalty
    use_grad: bool = False  #: multiplier trained by the optimizer (reversed gradient)
    l0_mode: L0Mode = L0Mode.coarse
    scale_mode: ScaleMode = ScaleMode.mean
    constraint_lr: float = 1.0e-03  #: multiplier step (use_grad: false)

    def validate(self, path: str = "pruning") -> None:
        super().validate(path)
        check_range(f"{path}.target_sparsity", self.target_sparsity, lo=0, hi=1, hi_open=True)
        check_range(f"{path}.rf", self.rf, lo=1)
        check_range(f"{path}.epsilon", self.epsilon, lo=0, lo_open=True)
        check_range(f"{path}.scale", self.scale, lo=0)
        check_range(f"{path}.damping", self.damping, lo=0)
        check_range(f"{path}.constraint_lr", self.constraint_lr, lo=0)


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class MDMM(PruningMethod):
    """Per-layer MDMM constraint. Buffer or parameter ``multiplier``; buffer ``mask``."""

    def __init__(self, config: MDMMConfig, weight_shape, layer_type: str) -> None:
        super().__init__(config, weight_shape, layer_type)
        if config.use_grad:
            self.multiplier = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("multiplier", torch.zeros(()))
        self.register_buffer("mask", torch.ones(self.weight_shape))
        # (weight,) of the last training forward; a tuple so a Parameter is not registered
        self._last_weight: tuple[torch.Tensor] | None = None

    # ------------------------------------------------------------------ metric
    def _units(self, weight: torch.Tensor) -> torch.Tensor:
        """Magnitudes: per weight, or per group of ``rf`` consecutive weights of a row."""
        if self.config.metric_type is MetricType.UnstructuredSparsity:
            return weight.abs().reshape(-1)
        rows = weight.reshape(weight.shape[0], -1)
        pad = (-rows.shape[1]) % self.config.rf
        rows = F.pad(rows, (0, pad))
        groups = rows.reshape(rows.shape[0], -1, self.config.rf)
        return groups.square().sum(-1).add(1e-12).sqrt().reshape(-1)

    def metric(self, weight: torch.Tensor) -> torch.Tensor:
        units = self._units(weight)
        if self.config.l0_mode is L0Mode.coarse:
            l0 = (units.detach() <= self.config.epsilon).to(units.dtype).mean()
        else:
            l0 = torch.exp(-SMOOTH_SHARPNESS * units.square()).mean()
        l1 = units.sum() if self.config.scale_mode is ScaleMode.sum else units.mean()
        return (self.config.target_sparsity ** 2 - l0.square()) * l1

    def infeasibility(self, value: torch.Tensor) -> torch.Tensor:
        c = self.config.target_value
        kind = self.config.constraint_type
        if kind is ConstraintType.Equality:
            return (value - c).abs()
        if kind is ConstraintType.LessThanOrEqual:
            return torch.relu(value - c)
        return torch.relu(c - value)

    # ------------------------------------------------------------------ masks
    def _hard(self, weight: torch.Tensor) -> torch.Tensor:
        w = weight.detach()
        if self.config.metric_type is MetricType.UnstructuredSparsity:
            return (w.abs() > self.config.epsilon).to(w.dtype)
        rows = w.reshape(w.shape[0], -1)
        keep = (self._units(w) > self.config.epsilon).to(w.dtype)
        keep = keep.reshape(rows.shape[0], -1, 1).expand(-1, -1, self.config.rf)
        return keep.reshape(rows.shape[0], -1)[:, :rows.shape[1]].reshape(w.shape)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        stage = self.stage
        if stage is Stage.PRETRAINING:
            return weight
        if stage is Stage.TRAINING:
            self._last_weight = (weight,)
            return weight * self._hard(weight)
        return weight * self.mask

    def hard_mask(self, weight: torch.Tensor) -> torch.Tensor:
        if self.stage is Stage.TRAINING:
            return self._hard(weight)
        return self.mask.to(weight.dtype)

    # ------------------------------------------------------------------ constraint
    def extra_loss(self) -> torch.Tensor | None:
        """The MDMM penalty for the forward just run (then the explicit multiplier step), plus
        the ``threshold_decay`` term."""
        if self._last_weight is None:
            return None
        decay = None
        if self.config.threshold_decay != 0:
            units = self._units(self._last_weight[0])
            pruned = (units.detach() <= self.config.epsilon).to(units.dtype)
            decay = self.config.threshold_decay * (units.square() * pruned).sum()
        if self.config.scale == 0:
            self._last_weight = None
            return decay
        (weight,) = self._last_weight
        h = self.infeasibility(self.metric(weight))
        lam = (_ReverseGrad.apply(self.multiplier) if self.config.use_grad
               else self.multiplier.clone())  # the step below must not touch the graph's copy
        penalty = self.config.scale * (lam * h + self.config.damping * h.square() / 2)
        if not self.config.use_grad:
            with torch.no_grad():
                self.multiplier.add_(self.config.constraint_lr * self.config.scale * h.detach())
        self._last_weight = None
        return penalty if decay is None else penalty + decay

    def on_finetuning_start(self, weight: torch.Tensor) -> None:
        if self.stage is Stage.TRAINING:
            with torch.no_grad():
                self.mask.copy_(self._hard(weight))
        super().on_finetuning_start(weight)

    def target_sparsity(self) -> float | None:
        if self.config.target_value == 0 and \
                self.config.metric_type is MetricType.UnstructuredSparsity:
            return float(self.config.target_sparsity)
        return None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, multiplier={float(self.multiplier.detach()):.3g}"
