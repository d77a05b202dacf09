"""PDP -- Parameter-free Differentiable Pruning.

Paper: M. Cho, S. Adya, D. Naik, "PDP: Parameter-free Differentiable Pruning is All You Need",
NeurIPS 2023.

Each forward of the TRAINING stage computes a soft mask from the current weights: with the
target fraction ``r`` of the layer to prune, the threshold ``t`` is the midpoint between the
largest pruned and the smallest kept score (score = ``w**2``, or the squared L2 norm of an output
unit when ``structured_pruning``) and ``m = sigmoid((score - t) / temperature)``. The target grows
linearly, ``r = min(1, epsilon * (e + 1)) * sparsity`` at epoch ``e`` of each round, so the full
sparsity is reached after ``ceil(1 / epsilon)`` epochs. The stored mask follows the soft mask at
every epoch end and is hardened (``m >= 0.5``) when fine-tuning starts; from then on it is frozen.

``threshold_decay`` adds ``threshold_decay * sum(score * (1 - m))`` to the loss (``m`` held
constant): an L2 decay of the weights the mask is removing.

The threshold is an exact order statistic (numpy's vectorised sort on CPU, ``kthvalue`` on other
devices), computed once per forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from pquant import kernels
from pquant.errors import check_range
from pquant.pruning.base import EpochInfo, PruningConfig, PruningMethod, Stage
from pquant.pruning.select import midpoint_threshold
from pquant.pruning.thresholds import budget_warnings, global_magnitude_budget

#: Bound on the mask logits (see :meth:`PDP.soft_mask`).
LOGIT_CLIP = 30.0


@dataclass
class PDPConfig(PruningConfig):
    """PDP settings (reference names and defaults)."""

    THRESHOLD_DECAY: ClassVar[str] = (
        "L2 decay of the scores being pruned, threshold_decay * sum(score * (1 - m)) with the "
        "soft mask m held constant: drives the weights (units) below the threshold to zero")

    _target_: str = "pquant.pruning.pdp.PDP"
    pruning_method: str = "pdp"
    epsilon: float = 0.015  #: fraction of the target added per epoch (ramp length 1/epsilon)
    sparsity: float = 0.8  #: fraction of weights (or units) to remove in every pruned layer
    temperature: float = 1.0e-5  #: softness of the mask
    structured_pruning: bool = False  #: prune whole output units / filters
    #: one magnitude threshold over all pruned layers at the end of pretraining: layers with many
    #: small weights get more sparsity (the reference's behaviour); false: ``sparsity`` per layer
    global_budget: bool = False

    def validate(self, path: str = "pruning") -> None:
        super().validate(path)
        check_range(f"{path}.sparsity", self.sparsity, lo=0, hi=1, hi_open=True)
        check_range(f"{path}.epsilon", self.epsilon, lo=0, hi=1, lo_open=True)
        check_range(f"{path}.temperature", self.temperature, lo=0, lo_open=True)

    def epochs_to_target(self) -> int:
        return math.ceil(1.0 / self.epsilon - 1e-9)

    def schedule_warnings(self, training, batches_per_epoch: int | None = None) -> list[str]:
        if not self.enable_pruning or self.sparsity == 0:
            return []
        needed = self.epochs_to_target()
        if training.epochs >= needed:
            return []
        reached = min(1.0, self.epsilon * training.epochs) * self.sparsity
        return [
            f"PDP ramps the sparsity by pruning.epsilon={self.epsilon:g} of the target per "
            f"epoch, so it needs {needed} epochs per round to reach pruning.sparsity="
            f"{self.sparsity:g}, but training.epochs={training.epochs}: it would stop at "
            f"{reached:.3f}. Raise training.epochs to at least {needed} or pruning.epsilon to at "
            f"least {1.0 / max(training.epochs, 1):.4g}."
        ]


class PDP(PruningMethod):
    """Per-layer PDP mask. Buffers: ``mask`` (weight shape, or ``(O, 1, ...)`` if structured),
    ``ratio`` (the fraction currently targeted) and ``target`` (the layer's final fraction)."""

    def __init__(self, config: PDPConfig, weight_shape, layer_type: str) -> None:
        super().__init__(config, weight_shape, layer_type)
        shape = self.weight_shape
        if config.structured_pruning:
            shape = (shape[0],) + (1,) * (len(shape) - 1)
        self.register_buffer("mask", torch.ones(shape))
        self.register_buffer("ratio", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("target", torch.tensor(float(config.sparsity), dtype=torch.float64))
        self._ratio = 0.0
        self._target = float(config.sparsity)
        self.register_load_state_dict_post_hook(_refresh_ratio)
        self.masks_bias = config.structured_pruning
        # (weight,) of the last training forward, for the threshold_decay term
        self._last_weight: tuple[torch.Tensor] | None = None

    def prune_bias(self, bias: torch.Tensor) -> torch.Tensor:
        """Structured: a removed unit's bias goes too (the reference keeps emitting it)."""
        if self.stage is Stage.PRETRAINING:
            return bias
        # the stored mask (refreshed at every epoch end, binary once fine-tuning starts)
        return bias * (self.mask.flatten(1)[:, 0] >= 0.5).to(bias.dtype)

    # ------------------------------------------------------------------ scores and masks
    def _scores(self, weight: torch.Tensor) -> torch.Tensor:
        """Squared magnitude per weight, or squared L2 norm per output unit (mask-shaped)."""
        sq = weight.square()
        if self.config.structured_pruning:
            return sq.flatten(1).sum(1).view(self.mask.shape)
        return sq

    def _threshold(self, scores: torch.Tensor) -> float | torch.Tensor | None:
        """Midpoint between the largest pruned and the smallest kept score (None: prune nothing)."""
        n_prune = self._n_prune(scores.numel())
        if n_prune <= 0:
            return None
        return midpoint_threshold(scores, n_prune)

    def _n_prune(self, n: int) -> int:
        """How many of ``n`` scores fall below the threshold at the current ratio."""
        return min(int(round(self._ratio * n)), n - 1)

    def soft_mask(self, weight: torch.Tensor) -> torch.Tensor:
        """Soft mask for the current target ``ratio`` (differentiable w.r.t. ``weight``).

        The logit ``(score - t) / temperature`` is clipped to +-30: beyond that the sigmoid is
        within 1e-13 of 0 or 1, while unclipped logits of order 1e4 would produce float32
        denormals, which are two orders of magnitude slower on CPUs.
        """
        scores = self._scores(weight)
        threshold = self._threshold(scores)
        if threshold is None:
            return torch.ones_like(self.mask)
        logits = torch.sub(scores, threshold).mul_(1.0 / self.config.temperature)
        return torch.sigmoid(F.hardtanh(logits, -LOGIT_CLIP, LOGIT_CLIP))

    def _remember(self, weight: torch.Tensor) -> None:
        if self.config.threshold_decay != 0 and torch.is_grad_enabled():
            self._last_weight = (weight,)

    def extra_loss(self) -> torch.Tensor | None:
        """``threshold_decay * sum(score * (1 - m))`` for the last training forward."""
        if self._last_weight is None:
            return None
        (weight,) = self._last_weight
        self._last_weight = None
        with torch.no_grad():
            dropping = 1.0 - self.soft_mask(weight.detach())
        return self.config.threshold_decay * (self._scores(weight) * dropping).sum()

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        stage = self._stage_cache
        if stage is Stage.TRAINING:
            self._remember(weight)
            if self.config.structured_pruning or not torch.is_grad_enabled():
                return weight * self.soft_mask(weight)
            ext = (kernels.get() if weight.dtype is torch.float32 and weight.device.type == "cpu"
                   else None)
            if ext is not None:
                n_prune = self._n_prune(weight.numel())  # the same, computed in one C++ call
                if n_prune <= 0:
                    return weight
                return ext.pdp_masked_weight(weight, n_prune, 1.0 / self.config.temperature,
                                             LOGIT_CLIP)
            scores = weight.detach().square()
            threshold = self._threshold(scores)
            if threshold is None:
                return weight
            return _SoftMaskedWeight.apply(weight, scores, threshold,
                                           1.0 / self.config.temperature)
        if stage is Stage.PRETRAINING:
            return weight
        return weight * self.mask

    def fused_weight(self, weight: torch.Tensor) -> tuple:
        stage = self._stage_cache
        if stage is Stage.TRAINING:
            if self.config.structured_pruning or not torch.is_grad_enabled():
                return self.forward(weight), None, None
            self._remember(weight)
            n_prune = self._n_prune(weight.numel())
            if n_prune <= 0:
                return weight, None, None
            return weight, None, (n_prune, 1.0 / self.config.temperature, LOGIT_CLIP)
        return weight, (None if stage is Stage.PRETRAINING else self._buffers["mask"]), None

    def hard_mask(self, weight: torch.Tensor) -> torch.Tensor:
        if self.stage is Stage.TRAINING:
            mask = self.soft_mask(weight.detach())
        else:
            mask = self.mask
        return (mask >= 0.5).to(weight.dtype).expand_as(weight)

    # ------------------------------------------------------------------ hooks
    def _set_ratio(self, value: float) -> None:
        self._ratio = float(value)
        self.ratio.fill_(self._ratio)

    def on_epoch_start(self, info: EpochInfo) -> None:
        if info.stage is Stage.TRAINING:
            self._set_ratio(min(1.0, self.config.epsilon * (info.epoch + 1)) * self._target)

    def on_epoch_end(self, info: EpochInfo, weight: torch.Tensor) -> None:
        if info.stage is Stage.TRAINING:
            with torch.no_grad():
                self.mask.copy_(self.soft_mask(weight.detach()))

    def on_finetuning_start(self, weight: torch.Tensor) -> None:
        with torch.no_grad():
            if self.stage is Stage.TRAINING:
                self.mask.copy_(self.soft_mask(weight.detach()))
            self.mask.copy_((self.mask >= 0.5).to(self.mask.dtype))
        super().on_finetuning_start(weight)

    def target_sparsity(self) -> float:
        return float(self._target)

    @classmethod
    def plan_budget(cls, layers) -> list[str]:
        """``global_budget``: per-layer targets from one magnitude threshold over the layers."""
        budgeted = [(m, w) for m, w in layers if m.config.global_budget
                    and not m.config.structured_pruning]
        if not budgeted:
            return []
        sparsity = budgeted[0][0].config.sparsity
        ratios = global_magnitude_budget([w for _, w in budgeted], sparsity)
        for (method, _), ratio in zip(budgeted, ratios):
            method._set_target(ratio)
        return budget_warnings([m.layer_name for m, _ in budgeted], ratios, sparsity,
                               "pruning.global_budget")

    def _set_target(self, value: float) -> None:
        self._target = float(value)
        self.target.fill_(self._target)

    def extra_repr(self) -> str:
        kind = "structured" if self.config.structured_pruning else "unstructured"
        return f"{super().extra_repr()}, {kind}, ratio={self._ratio:.3f}"


class _SoftMaskedWeight(torch.autograd.Function):
    """``w * sigmoid((w**2 - t) / tau)`` with its analytic gradient (unstructured PDP).

    ``d/dw = m + (2 / tau) * w**2 * m * (1 - m)`` -- four ops in backward instead of the eight
    autograd nodes of the composed expression. ``t`` is treated as a constant, as in the paper.
    """

    @staticmethod
    def forward(ctx, weight, scores, threshold, inv_tau):
        logits = torch.sub(scores, threshold).mul_(inv_tau).clamp_(-LOGIT_CLIP, LOGIT_CLIP)
        mask = logits.sigmoid_()
        ctx.save_for_backward(scores, mask)
        ctx.inv_tau = inv_tau
        return weight * mask

    @staticmethod
    def backward(ctx, grad):
        scores, mask = ctx.saved_tensors
        # (separate products and sums: addcmul may fuse a multiply-add depending on the CPU, and
        # the fused kernel computes exactly these float32 operations)
        slope = torch.sub(mask, mask * mask).mul_(scores)
        return grad * slope.mul_(2.0 * ctx.inv_tau).add_(mask), None, None, None


def _refresh_ratio(module, _incompatible_keys) -> None:
    module._ratio = float(module.ratio)
    module._target = float(module.target)
