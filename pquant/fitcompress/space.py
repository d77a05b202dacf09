"""The search space: the weight layers, how a layer is quantized to a width, and the workspace
in which the model computes with a node's parameters.

A layer's weight at a node is ``Q_b(W0 * M)`` (``training.pruning_first``, the default) or
``Q_b(W0) * M``: ``W0`` the pretrained weight, ``M`` the node's mask, ``Q_b`` the format the layer
would get at width ``b``. The format rule is the one of pquant's range-split quantizers: integer
bits ``i = e`` with ``2**(e-1) <= max|w| < 2**e`` (capped at ``b - k``), fractional bits
``f = b - k - i``, per tensor -- or per output channel / per weight when the run's weight
granularity says so. Values are computed with :func:`pquant.quant.fixed_point.quantize` and the
layer's own rounding and overflow modes (eval behaviour), so the search sees exactly the weights
the layer computes once the result is applied.

At the root every layer keeps the format it was configured with (its ``start_bits``); such a
layer is quantized by its own quantizer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from pquant.nn.base import FLOAT_BITS
from pquant.nn.registry import is_weight_layer
from pquant.quant.adaptive import RangeSplitQuantizer
from pquant.quant.fixed_point import quantize
from pquant.quant.granularity import Granularity
from pquant.quant.modes import OverflowMode


@dataclass
class LayerSpace:
    """One weight layer as the search sees it.

    Attributes:
        name: dotted module name.
        layer: the PQ layer (PQDense, PQConv1d, PQConv2d).
        master: the pretrained weight ``W0`` (detached copy).
        quantizer: the layer's configured weight quantizer (None: float weights).
        k: keep-negatives of the weight format.
        start_bits: configured width (32 for float weights); per-element for learned formats.
        ladder: widths the layer can move to, decreasing.
        prunable: whether the layer has a pruning method (``disable_pruning_for_layers``).
        group: ``"tensor"``, ``"channel"`` or ``"weight"``: what one format covers.
    """

    name: str
    layer: nn.Module
    master: torch.Tensor
    quantizer: nn.Module | None
    k: int
    start_bits: torch.Tensor
    ladder: tuple[int, ...]
    prunable: bool
    group: str
    pruning_first: bool

    @property
    def numel(self) -> int:
        return self.master.numel()

    def start_width(self) -> float:
        """Configured width, averaged over elements for per-element formats."""
        return float(self.start_bits.float().mean())

    # ------------------------------------------------------------------ formats
    def _modes(self) -> tuple:
        q = self.quantizer
        overflow = q.overflow_mode
        if self.group != "tensor" and overflow not in (OverflowMode.SAT, OverflowMode.SAT_SYM):
            overflow = OverflowMode.SAT  # range-split quantizers always saturate
        return q.round_mode, overflow

    def split(self, x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer and fractional bits for ``x`` at width ``bits`` (broadcastable to ``x``)."""
        a = x.detach().abs()
        if self.group == "tensor":
            a = a.amax()
        elif self.group == "channel" and a.dim() > 1:
            a = a.amax(dim=tuple(range(1, a.dim())), keepdim=True)
        _, exponent = torch.frexp(a)
        i = exponent.clamp(max=bits - self.k).to(x.dtype)
        return i, (bits - self.k) - i

    def weight(self, bits: int | None, mask: torch.Tensor | None) -> torch.Tensor:
        """The layer's effective weight at width ``bits`` (None: as configured) and ``mask``."""
        w = self.master
        if mask is not None and self.pruning_first:
            w = w * mask
        with torch.no_grad():
            if bits is None:
                if self.quantizer is not None:
                    w = self.quantizer(w)
            else:
                i, f = self.split(w, bits)
                w = quantize(w, self.k, i, f, *self._modes(), training=False)
        if mask is not None and not self.pruning_first:
            w = w * mask
        return w

    def bits(self, bits: int | None) -> torch.Tensor | float:
        """Width per element (scalar or tensor) at ladder width ``bits`` (None: configured)."""
        return self.start_bits if bits is None else float(bits)

    def format(self, bits: int, mask: torch.Tensor | None) -> tuple[int, int, int]:
        """``(k, i, f)`` of the per-tensor format at width ``bits`` for the masked weight."""
        w = self.master if mask is None or not self.pruning_first else self.master * mask
        a = w.detach().abs().amax()
        _, exponent = torch.frexp(a)
        i = min(int(exponent), bits - self.k)
        return self.k, i, bits - self.k - i


def _group(quantizer) -> str:
    if isinstance(quantizer, RangeSplitQuantizer):
        return "channel" if quantizer.granularity is Granularity.per_channel else "weight"
    return "tensor"


def layer_spaces(model: nn.Module, schedule, optimize_quantization: bool,
                 pruning_first: bool) -> list[LayerSpace]:
    """Every PQ weight layer of ``model`` (dense, conv1d, conv2d, ...) with its pretrained
    weight."""
    spaces = []
    for name, layer in model.named_modules():
        if not is_weight_layer(layer, pq=True) or layer.finalized:
            continue
        q = layer.weight_quantizer
        with torch.no_grad():
            if q is None:
                start = torch.tensor(FLOAT_BITS)
                k = 1
            else:
                start = q.bits().detach().to(layer.weight.device).float()
                k = int(round(float(q.k.float().mean())))
        width = float(start.mean())
        ladder: tuple[int, ...] = ()
        if optimize_quantization and q is not None:
            ladder = tuple(int(b) for b in schedule if b < width)
        spaces.append(LayerSpace(
            name=name, layer=layer, master=layer.weight.detach().clone(), quantizer=q, k=k,
            start_bits=start, ladder=ladder, prunable=layer.pruning is not None,
            group=_group(q), pruning_first=pruning_first,
        ))
    return spaces


@contextlib.contextmanager
def workspace(spaces: list[LayerSpace]):
    """The model computes with weights loaded by ``load`` (its weight quantizers are detached,
    pruning methods are still in pretraining, i.e. the identity). Restores everything on exit."""
    for s in spaces:
        s.layer.weight_quantizer = None

    def load(thetas: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for s, theta in zip(spaces, thetas):
                s.layer.weight.copy_(theta)

    try:
        yield load
    finally:
        with torch.no_grad():
            for s in spaces:
                s.layer.weight.copy_(s.master)
                s.layer.weight_quantizer = s.quantizer
