"""DST -- Dynamic Sparse Training.

Paper: J. Liu, Z. Xu, R. Shi, R. C. C. Cheung, H. K.-H. So, "Dynamic Sparse Training: Find
Efficient Sparse Network From Scratch With Trainable Masked Layers", ICLR 2020.

Trainable thresholds ``t`` (per layer, per output unit or per weight; initialised to
``threshold_init``) give the mask ``m = step(|w| - t)`` on the weight viewed as ``(out, rest)``.
The step's derivative is replaced by the paper's long-tailed estimate (2 - 4|u| near 0, 0.4 up to
|u| = 1, 0 beyond), so both the weights and the thresholds learn. ``alpha * sum exp(-t)`` pushes
thresholds up. If a layer would lose ``max_pruning_pct`` or more of its weights, its thresholds
are reset to 0 (the paper's collapse guard) -- decided on the device, without a host sync.
``threshold_decay`` adds an L2 decay ``threshold_decay * sum(t**2)`` of the thresholds.
Fine-tuning freezes the mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from pquant.errors import check_range
from pquant.pruning.base import PruningConfig, PruningMethod, Stage
from pquant.pruning.thresholds import ThresholdType


@dataclass
class DSTConfig(PruningConfig):
    """DST settings (reference names and defaults)."""

    THRESHOLD_DECAY: ClassVar[str] = (
        "L2 decay of the trainable thresholds, threshold_decay * sum(t**2): pulls them back "
        "towards 0 against alpha's push, bounding how much the layer prunes")

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


def _surrogate_slope(u: torch.Tensor) -> torch.Tensor:
    """DST's long-tailed derivative of step(u), in float ops only."""
    a = u.abs()
    slope = torch.mul(a, -4.0).add_(2.0).clamp_(min=0.4)
    return slope.mul_(torch.heaviside(1.0 - a, _ONE.to(a.dtype)))


_ONE = torch.ones(())


class _MaskedRows(torch.autograd.Function):
    """``w * step(|w| - t)`` on ``(out, rest)`` rows, with the collapse guard, in one node.

    Backward: ``dL/dw = g m + g |w| s(u)`` (direct path plus the surrogate through ``|w|``) and
    ``dL/dt = -sum g w s(u) sign(w)``, with ``s`` the long-tailed derivative; when the guard
    fires the mask is ``w != 0`` and carries no threshold gradient.
    """

    @staticmethod
    def forward(ctx, rows, threshold, max_pct: float):
        a = rows.abs()
        u = a - threshold
        m = torch.heaviside(u, torch.zeros((), dtype=u.dtype))
        keep = (m.mean() > 1.0 - max_pct).to(m.dtype)  # 0-dim, stays on the device
        m = torch.lerp(torch.heaviside(a, torch.zeros((), dtype=a.dtype)), m, keep)
        ctx.save_for_backward(rows, u, m, keep)
        ctx.t_shape = threshold.shape
        ctx.mark_non_differentiable(keep)
        return rows * m, keep

    @staticmethod
    def backward(ctx, grad, _grad_keep):
        rows, u, m, keep = ctx.saved_tensors
        through = grad * rows * _surrogate_slope(u) * keep  # dL/du, chain to |w| and t
        grad_rows = torch.addcmul(grad * m, through, torch.sign(rows))
        grad_t = None
        if ctx.needs_input_grad[1]:
            dims = [d for d, n in enumerate(ctx.t_shape) if n == 1 and through.shape[d] != 1]
            grad_t = -(through.sum(dim=dims, keepdim=True) if dims else through)
        return grad_rows, grad_t, None


class DynamicSparseTraining(PruningMethod):
    """Per-layer DST mask. Parameter ``threshold``; buffer ``mask`` (frozen at fine-tuning)."""

    def __init__(self, config: DSTConfig, weight_shape, layer_type: str) -> None:
        super().__init__(config, weight_shape, layer_type)
        shape = config.threshold_type.shape(self.weight_shape)
        self.threshold = nn.Parameter(torch.full(shape, float(config.threshold_init)))
        self.register_buffer("mask", torch.ones(self.weight_shape))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        stage = self.stage
        if stage is Stage.TRAINING:
            rows = weight.reshape(weight.shape[0], -1)
            out, keep = _MaskedRows.apply(rows, self.threshold, self.config.max_pruning_pct)
            with torch.no_grad():  # collapse guard: thresholds back to 0, on the device
                self.threshold.mul_(keep)
            return out.view_as(weight)
        if stage is Stage.PRETRAINING:
            return weight
        return weight * self.mask

    def hard_mask(self, weight: torch.Tensor) -> torch.Tensor:
        if self.stage is Stage.TRAINING:
            rows = weight.detach().reshape(weight.shape[0], -1)
            return (rows.abs() > self.threshold.detach()).to(weight.dtype).view_as(weight)
        return self.mask.to(weight.dtype)

    def extra_loss(self) -> torch.Tensor | None:
        """``alpha * sum(exp(-t)) + threshold_decay * sum(t**2)`` (None when both are 0)."""
        terms = []
        if self.config.alpha != 0:
            terms.append(self.config.alpha * torch.exp(-self.threshold).sum())
        if self.config.threshold_decay != 0:
            terms.append(self.config.threshold_decay * self.threshold.square().sum())
        return sum(terms[1:], terms[0]) if terms else None

    def on_finetuning_start(self, weight: torch.Tensor) -> None:
        if self.stage is Stage.TRAINING:
            with torch.no_grad():
                self.mask.copy_(self.hard_mask(weight))
        super().on_finetuning_start(weight)
