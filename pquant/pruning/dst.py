"""DST -- Dynamic Sparse Training.

Paper: J. Liu, Z. Xu, R. Shi, R. C. C. Cheung, H. K.-H. So, "Dynamic Sparse Training: Find
Efficient Sparse Network From Scratch With Trainable Masked Layers", ICLR 2020.

Trainable thresholds ``t`` (per layer, per output unit or per weight; initialised to
``threshold_init``) give the mask ``m = step(|w| - t)`` on the weight viewed as ``(out, rest)``.
The step's derivative is replaced by the paper's long-tailed estimate (2 - 4|u| near 0, 0.4 up to
|u| = 1, 0 beyond), so both the weights and the thresholds learn. ``alpha * sum exp(-t)`` pushes
thresholds up. If a layer would lose ``max_pruning_pct`` or more of its weights, its thresholds
are reset to 0 (the paper's collapse guard) -- decided on the device, without a host sync.
Fine-tuning freezes the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pquant.config.checks import check_range
from pquant.pruning.base import PruningConfig, PruningMethod, Stage
from pquant.pruning.thresholds import ThresholdType


@dataclass
class DSTConfig(PruningConfig):
    """DST settings (reference names and defaults)."""

    _target_: str = "pquant.pruning.dst.DynamicSparseTraining"
    pruning_method: str = "dst"
    alpha: float = 5.0e-06  #: weight of the threshold regulariser sum(exp(-t))
    max_pruning_pct: float = 0.99  #: collapse guard: reset thresholds beyond this pruned fraction
    threshold_init: float = 0.0
    threshold_type: ThresholdType = ThresholdType.channelwise

    def validate(self, path: str = "pruning") -> None:
        super().validate(path)
        check_range(f"{path}.alpha", self.alpha, lo=0)
        check_range(f"{path}.max_pruning_pct", self.max_pruning_pct, lo=0, hi=1, lo_open=True)


class _LongTailedStep(torch.autograd.Function):
    """``u > 0`` forward; DST's long-tailed derivative estimate backward."""

    @staticmethod
    def forward(ctx, u):
        ctx.save_for_backward(u)
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        a = u.abs()
        slope = torch.where(a <= 0.4, 2.0 - 4.0 * a, torch.where(a <= 1.0, 0.4, 0.0))
        return grad * slope


def long_tailed_step(u: torch.Tensor) -> torch.Tensor:
    return _LongTailedStep.apply(u)


class DynamicSparseTraining(PruningMethod):
    """Per-layer DST mask. Parameter ``threshold``; buffer ``mask`` (frozen at fine-tuning)."""

    def __init__(self, config: DSTConfig, weight_shape, layer_type: str) -> None:
        super().__init__(config, weight_shape, layer_type)
        shape = config.threshold_type.shape(self.weight_shape)
        self.threshold = nn.Parameter(torch.full(shape, float(config.threshold_init)))
        self.register_buffer("mask", torch.ones(self.weight_shape))

    def _mask(self, weight: torch.Tensor) -> torch.Tensor:
        rows = weight.reshape(weight.shape[0], -1)
        m = long_tailed_step(rows.abs() - self.threshold)
        with torch.no_grad():  # collapse guard, on the device
            keep = (1.0 - m.mean()) < self.config.max_pruning_pct
            self.threshold.mul_(keep.to(self.threshold.dtype))
        fallback = (rows != 0).to(rows.dtype)
        return torch.where(keep, m, fallback).view_as(weight)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        stage = self.stage
        if stage is Stage.TRAINING:
            return weight * self._mask(weight)
        if stage is Stage.PRETRAINING:
            return weight
        return weight * self.mask

    def hard_mask(self, weight: torch.Tensor) -> torch.Tensor:
        if self.stage is Stage.TRAINING:
            rows = weight.detach().reshape(weight.shape[0], -1)
            return (rows.abs() > self.threshold.detach()).to(weight.dtype).view_as(weight)
        return self.mask.to(weight.dtype)

    def extra_loss(self) -> torch.Tensor | None:
        if self.config.alpha == 0:
            return None
        return self.config.alpha * torch.exp(-self.threshold).sum()

    def on_finetuning_start(self, weight: torch.Tensor) -> None:
        if self.stage is Stage.TRAINING:
            with torch.no_grad():
                self.mask.copy_(self.hard_mask(weight))
        super().on_finetuning_start(weight)
