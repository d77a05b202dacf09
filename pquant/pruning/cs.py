"""CS -- Continuous Sparsification.

Paper: P. Savarese, H. Silva, M. Maire, "Winning the Lottery with Continuous Sparsification",
NeurIPS 2020.

Every weight has a learnable mask logit ``s`` (initialised to ``threshold_init``); the training
forward uses ``w * sigmoid(beta * s)``. The temperature ``beta`` anneals from 1 to ``final_temp``
over the epochs of each training round -- only in the TRAINING stage (the reference anneals in
pretraining too). ``threshold_decay`` weighs the L1 norm of the soft mask, pushing logits down.
Between rounds the paper's reset applies: ``s <- min(beta * s, s0)``, ``beta <- 1``. Fine-tuning
uses the hard mask ``s > 0``. As ``beta`` grows the soft mask approaches that hard mask, so
the training and fine-tuning forwards agree in scale (the reference scales kept weights by
``1 / sigmoid(s0)`` -- 2x -- in training only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from pquant.errors import check_range
from pquant.pruning.base import EpochInfo, PruningConfig, PruningMethod, RoundInfo, Stage


@dataclass
class CSConfig(PruningConfig):
    """Continuous Sparsification settings (reference names and defaults)."""

    THRESHOLD_DECAY: ClassVar[str] = (
        "L1 of the soft mask, threshold_decay * sum(sigmoid(beta * s)): pushes the mask logits "
        "down, towards sparsity (the paper's penalty)")

    _target_: str = "pquant.pruning.cs.ContinuousSparsification"
    pruning_method: str = "cs"
    final_temp: float = 200.0  #: temperature reached at the last epoch of every round
    threshold_init: float = 0.0  #: initial mask logit s0

    def validate(self, path: str = "pruning") -> None:
        super().validate(path)
        check_range(f"{path}.final_temp", self.final_temp, lo=1)


class ContinuousSparsification(PruningMethod):
    """Per-layer CS mask. Parameter ``s`` (weight-shaped logits); buffers ``beta``, ``mask``."""

    def __init__(self, config: CSConfig, weight_shape, layer_type: str) -> None:
        super().__init__(config, weight_shape, layer_type)
        self.s = nn.Parameter(torch.full(self.weight_shape, float(config.threshold_init)))
        self.register_buffer("beta", torch.tensor(1.0))
        self.register_buffer("mask", torch.ones(self.weight_shape))

    def soft_mask(self) -> torch.Tensor:
        return torch.sigmoid(self.beta * self.s)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        stage = self.stage
        if stage is Stage.TRAINING:
            return weight * self.soft_mask()
        if stage is Stage.PRETRAINING:
            return weight
        return weight * self.mask

    def hard_mask(self, weight: torch.Tensor) -> torch.Tensor:
        if self.stage is Stage.TRAINING:
            return (self.s.detach() > 0).to(weight.dtype)
        return self.mask.to(weight.dtype)

    def extra_loss(self) -> torch.Tensor | None:
        if self.config.threshold_decay == 0:
            return None
        return self.config.threshold_decay * self.soft_mask().sum()

    def on_epoch_end(self, info: EpochInfo, weight: torch.Tensor) -> None:
        # anneal only while masks are learned, and stop at final_temp (last epoch of the round)
        if info.stage is Stage.TRAINING and info.epoch < info.num_epochs - 1:
            factor = self.config.final_temp ** (1.0 / (info.num_epochs - 1))
            self.beta.mul_(factor)

    def on_round_end(self, info: RoundInfo, weight: torch.Tensor) -> None:
        if info.is_last:
            return
        with torch.no_grad():  # the paper's reset between rounds
            self.s.copy_(torch.minimum(self.beta * self.s, torch.full_like(
                self.s, float(self.config.threshold_init))))
            self.beta.fill_(1.0)

    def on_finetuning_start(self, weight: torch.Tensor) -> None:
        with torch.no_grad():
            self.mask.copy_((self.s > 0).to(self.mask.dtype))
        super().on_finetuning_start(weight)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta={float(self.beta):.3g}"
