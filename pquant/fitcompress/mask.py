"""The pruning method a layer gets when FITCompress chose its mask: a frozen binary mask."""

from __future__ import annotations

import torch

from pquant.pruning.base import PruningConfig, PruningMethod, Stage


class SearchedMask(PruningMethod):
    """Frozen mask chosen by the FITCompress search; replaces the configured method's masks.

    The layer trains under it from the end of pretraining on (no mask learning, no pruning loss).

    Args:
        config: the run's pruning config (kept for reference).
        mask: bool or 0/1 tensor of the weight's shape.
        layer_type: ``"linear"`` or ``"conv"``.
    """

    def __init__(self, config: PruningConfig, mask: torch.Tensor, layer_type: str) -> None:
        super().__init__(config, mask.shape, layer_type)
        self.register_buffer("mask", mask.detach().to(torch.float32).clone())
        self._target = 1.0 - float(self.mask.mean())
        self.set_stage(Stage.FINETUNING)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask

    def fused_weight(self, weight: torch.Tensor) -> tuple:
        return weight, self._buffers["mask"], None

    def hard_mask(self, weight: torch.Tensor) -> torch.Tensor:
        return self.mask.to(weight.dtype)

    def on_pretraining_end(self) -> None:
        """Stays frozen (the mask was chosen at the end of pretraining)."""

    def on_finetuning_start(self, weight: torch.Tensor) -> None:
        """Already frozen."""

    def target_sparsity(self) -> float:
        return self._target

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, FITCompress mask, sparsity={self._target:.4f}"
