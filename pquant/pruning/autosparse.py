"""AutoSparse -- learnable soft threshold with gradient annealing.

Paper: A. Kundu, N. K. Mellempudi, D. T. Vooturi, B. Kaul, P. Dubey, "AutoSparse: Towards
Automated Sparse Training of Deep Neural Networks", arXiv 2304.06941 (2023).

The weight viewed as ``(out, rest)`` is soft-thresholded: ``w' = sign(w) * relu(|w| - sigmoid(t))``
with a learnable ``t`` (per layer / output unit / weight, initialised to ``threshold_init``).
Pruned weights (``|w| <= sigmoid(t)``) still receive ``alpha`` times their gradient ("gradient
annealing"); ``alpha`` decays over each training round as ``alpha0 * max(cos, sigmoid)`` and is 0
from ``alpha_reset_epoch`` on. The threshold learns during the first ``autotune_epochs`` epochs of
each round and is then frozen; meanwhile ``threshold_decay * sum(sigmoid(t)**2)`` decays the cut.
``backward_sparsity`` gives pruned weights no gradient at all.
Fine-tuning keeps the same soft-thresholded weights, with the mask and threshold frozen (the
reference switches to unshrunk ``w * mask``, a jump of ``sigmoid(t)`` in every kept weight).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from pquant.errors import check_range
from pquant.pruning.base import EpochInfo, PruningConfig, PruningMethod, Stage
from pquant.pruning.thresholds import ThresholdType


@dataclass
class AutoSparseConfig(PruningConfig):
    """AutoSparse settings (reference names and defaults)."""

    THRESHOLD_DECAY: ClassVar[str] = (
        "L2 decay of the learned cut, threshold_decay * sum(sigmoid(t)**2), while the threshold "
        "learns (the first autotune_epochs of a round): keeps the cut from growing")

    _target_: str = "pquant.pruning.autosparse.AutoSparse"
    pruning_method: str = "autosparse"
    alpha: float = 0.5  #: initial gradient fraction for pruned weights
    alpha_reset_epoch: int = 90  #: from this epoch of a round on, alpha is 0
    autotune_epochs: int = 10  #: epochs per round during which the threshold learns
    backward_sparsity: bool = False  #: pruned weights get no gradient at all
    threshold_init: float = -5.0  #: initial threshold logit (sigmoid(-5) = 0.0067)
    threshold_type: ThresholdType = ThresholdType.channelwise

    def validate(self, path: str = "pruning") -> None:
        super().validate(path)
        check_range(f"{path}.alpha", self.alpha, lo=0, hi=1)
        check_range(f"{path}.alpha_reset_epoch", self.alpha_reset_epoch, lo=0)
        check_range(f"{path}.autotune_epochs", self.autotune_epochs, lo=0)


class _AnnealedRelu(torch.autograd.Function):
    """``relu(u)`` forward; gradient 1 where ``u > 0`` and ``alpha`` elsewhere."""

    @staticmethod
    def forward(ctx, u, alpha: float):
        ctx.save_for_backward(u)
        ctx.alpha = alpha
        return torch.relu(u)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        kept = (u > 0).to(grad.dtype)
        if ctx.alpha == 0:
            return grad * kept, None
        return grad * (kept * (1.0 - ctx.alpha) + ctx.alpha), None


def alpha_schedule(alpha0: float, epoch: int, num_epochs: int, reset_epoch: int) -> float:
    """AutoSparse's annealing: ``alpha0 * max(cosine decay, sigmoid decay)``, 0 after reset."""
    if epoch >= reset_epoch:
        return 0.0
    progress = epoch / max(num_epochs, 1)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    sigmoid = 1.0 - 1.0 / (1.0 + math.exp(6.0 - 12.0 * progress))
    return alpha0 * max(cosine, sigmoid)


class AutoSparse(PruningMethod):
    """Per-layer AutoSparse. Parameter ``threshold``; buffers ``alpha``, ``mask``, ``tuning``."""

    def __init__(self, config: AutoSparseConfig, weight_shape, layer_type: str) -> None:
        super().__init__(config, weight_shape, layer_type)
        shape = config.threshold_type.shape(self.weight_shape)
        self.threshold = nn.Parameter(torch.full(shape, float(config.threshold_init)))
        self.register_buffer("mask", torch.ones(self.weight_shape))
        self.register_buffer("alpha", torch.tensor(float(config.alpha), dtype=torch.float64))
        self.register_buffer("tuning", torch.tensor(config.autotune_epochs > 0))
        self._alpha = float(config.alpha)
        self._tuning = config.autotune_epochs > 0
        self.register_load_state_dict_post_hook(_refresh)

    def _cut(self) -> torch.Tensor:
        cut = torch.sigmoid(self.threshold)
        return cut if (self._tuning and self.stage is Stage.TRAINING) else cut.detach()

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        stage = self.stage
        if stage is Stage.PRETRAINING:
            return weight
        rows = weight.reshape(weight.shape[0], -1)
        alpha = 0.0 if (self.config.backward_sparsity or stage is Stage.FINETUNING) \
            else self._alpha
        shrunk = torch.sign(rows) * _AnnealedRelu.apply(rows.abs() - self._cut(), alpha)
        out = shrunk.view_as(weight)
        return out if stage is Stage.TRAINING else out * self.mask

    def hard_mask(self, weight: torch.Tensor) -> torch.Tensor:
        if self.stage is Stage.TRAINING:
            rows = weight.detach().reshape(weight.shape[0], -1)
            cut = torch.sigmoid(self.threshold.detach())
            return (rows.abs() > cut).to(weight.dtype).view_as(weight)
        return self.mask.to(weight.dtype)

    def extra_loss(self) -> torch.Tensor | None:
        """``threshold_decay * sum(sigmoid(t)**2)`` while the threshold learns, else None."""
        if self.config.threshold_decay == 0 or not self._tuning or self.stage is not \
                Stage.TRAINING:
            return None
        return self.config.threshold_decay * torch.sigmoid(self.threshold).square().sum()

    def on_epoch_start(self, info: EpochInfo) -> None:
        if info.stage is Stage.TRAINING:
            self._set_tuning(info.epoch < self.config.autotune_epochs)

    def on_epoch_end(self, info: EpochInfo, weight: torch.Tensor) -> None:
        if info.stage is Stage.TRAINING:  # anneal only while masks are learned
            self._alpha = alpha_schedule(self.config.alpha, info.epoch + 1, info.num_epochs,
                                         self.config.alpha_reset_epoch)
            self.alpha.fill_(self._alpha)

    def on_round_end(self, info, weight) -> None:
        self._alpha = float(self.config.alpha)  # a new round anneals again
        self.alpha.fill_(self._alpha)

    def on_finetuning_start(self, weight: torch.Tensor) -> None:
        if self.stage is Stage.TRAINING:
            with torch.no_grad():
                self.mask.copy_(self.hard_mask(weight))
        self._set_tuning(False)
        super().on_finetuning_start(weight)

    def _set_tuning(self, value: bool) -> None:
        self._tuning = bool(value)
        self.tuning.fill_(self._tuning)


def _refresh(module, _incompatible_keys) -> None:
    module._alpha = float(module.alpha)
    module._tuning = bool(module.tuning)
