"""What every quantizer module offers the layers, the loop, the metrics and the exporters."""

from __future__ import annotations

import torch
from torch import nn

from pquant.quant.modes import OverflowMode, RoundMode


class Quantizer(nn.Module):
    """Base class of the quantizer modules.

    Subclasses implement ``forward`` and ``bits``. The defaults below describe a quantizer with a
    constant, non-learnable format.

    Attributes:
        round_mode: rounding of the codes.
        overflow_mode: behaviour outside the representable range.
        learnable: True if the bit-widths are trained (HGQ).
    """

    #: bumped whenever any quantizer's format or enabled flag changes; skips granted by graph
    #: analysis record the value they were granted under and lapse when it moves on.
    format_epoch = 0
    #: bumped whenever a quantizer switches between training and eval behaviour
    mode_epoch = 0
    supports_bypass = False
    learnable = False
    round_mode: RoundMode
    overflow_mode: OverflowMode

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True

    def __getstate__(self) -> dict:
        """Copies and pickles leave the derived caches behind (they may hold fused-kernel
        objects, which belong to one process); they are rebuilt on the next forward."""
        state = dict(super().__getstate__())
        state.pop("_spec", None)
        if "_cache" in state:
            state["_cache"] = {}
        return state

    def train(self, mode: bool = True):
        if bool(mode) != self.training:
            Quantizer.mode_epoch += 1
        return super().train(mode)

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        if bool(value) != self._enabled:
            Quantizer.format_epoch += 1
        self._enabled = bool(value)

    @property
    def bypass(self) -> bool:
        return False

    @bypass.setter
    def bypass(self, value: bool) -> None:
        if value:
            raise ValueError(f"{type(self).__name__} formats are not constant: cannot be skipped")

    @property
    def spec(self):
        """A :class:`~pquant.quant.spec.QuantSpec` when the format is per-tensor and constant."""
        return None

    def fused_spec(self, like: torch.Tensor):
        """The fused CPU kernels' description of this quantizer for tensors like ``like``, or None
        when they cannot run it (see :mod:`pquant.kernels`; only constant formats can)."""
        return None

    def forward_relu(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(self(x))`` (quantizers that can fuse the two override this)."""
        return torch.relu(self.forward(x))

    def bits(self) -> torch.Tensor:
        """Width in bits per format element (broadcastable to the quantized tensor), detached."""
        raise NotImplementedError  # pragma: no cover - abstract

    def bits_for_loss(self, memo: dict | None = None) -> torch.Tensor:
        """Width per element, differentiable w.r.t. learnable bit-widths (HGQ's EBOPs loss).

        ``memo`` (one dict per training step) lets the EBOPs and width terms share the work.
        """
        return self.bits()

    def regularizer(self, memo: dict | None = None) -> torch.Tensor | None:
        """Mean width over the format elements, for HGQ's ``hgq_gamma`` term (None if fixed)."""
        return None

    def on_epoch_end(self) -> None:
        """Called by the training loop after every epoch (HGQ clamps its bit-widths here)."""

    def frozen(self):
        """A constant-format quantizer with the current behaviour in eval (for finalisation)."""
        raise NotImplementedError  # pragma: no cover - abstract
