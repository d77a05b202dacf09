"""Shared machinery of PQ layers that own a weight (and optional bias).

Forward of such a layer: ``q_out(op(q_in(x), W_eff, b_eff))`` with
``W_eff = q_w(prune(W))`` (``pruning_first``) or ``prune(q_w(W))`` and ``b_eff = q_b(b)``.
The layer keeps the torch layer's own ``weight``/``bias`` parameters -- one set, no shadow copies.

When no autograd graph is needed (eval under ``torch.no_grad``), the effective weight and bias are
cached and reused until the weight, the mask state or a quantizer format changes (tracked through
tensor version counters), so repeated inference does no redundant pruning or quantization work.
"""

from __future__ import annotations

from itertools import chain

import torch
from torch import nn

from pquant.pruning.base import PruningMethod


class CompressedWeightMixin:
    """Mixin for PQ layers with ``weight`` and ``bias`` (combine with the torch layer class)."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _init_compression(
        self,
        input_quantizer: nn.Module | None = None,
        weight_quantizer: nn.Module | None = None,
        bias_quantizer: nn.Module | None = None,
        output_quantizer: nn.Module | None = None,
        pruning: PruningMethod | None = None,
        pruning_first: bool = True,
    ) -> None:
        self.register_module("input_quantizer", input_quantizer)
        self.register_module("weight_quantizer", weight_quantizer)
        self.register_module("bias_quantizer", bias_quantizer)
        self.register_module("output_quantizer", output_quantizer)
        self.register_module("pruning", pruning)
        self.pruning_first = pruning_first
        self._eff_key = None
        self._eff_cache: tuple[torch.Tensor, torch.Tensor | None] | None = None

    # ------------------------------------------------------------------ effective tensors
    # Sub-modules are called through ``.forward`` on the hot path: it skips nn.Module.__call__'s
    # hook bookkeeping (hooks on these internal modules are not supported).
    def _compute_weight(self) -> torch.Tensor:
        w = self.weight
        prune, quant = self.pruning, self.weight_quantizer
        if self.pruning_first:
            if prune is not None:
                w = prune.forward(w)
            if quant is not None:
                w = quant.forward(w)
        else:
            if quant is not None:
                w = quant.forward(w)
            if prune is not None:
                w = prune.forward(w)
        return w

    def _compute_bias(self) -> torch.Tensor | None:
        b = self.bias
        quant = self.bias_quantizer
        if b is not None and quant is not None:
            b = quant.forward(b)
        return b

    def _state_key(self) -> tuple:
        tensors = [self.weight] if self.bias is None else [self.weight, self.bias]
        mods = [
            m for m in (self.pruning, self.weight_quantizer, self.bias_quantizer) if m is not None
        ]
        extra = chain.from_iterable(chain(m.parameters(), m.buffers()) for m in mods)
        key = [self.training, self.pruning_first]
        key += [getattr(m, "enabled", True) for m in mods]
        for t in chain(tensors, extra):
            key.append(t.data_ptr())
            key.append(t._version)
        return tuple(key)

    def effective_params(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight and bias actually used by the forward (pruned and quantized)."""
        needs_graph = torch.is_grad_enabled() and (
            self.weight.requires_grad or any(p.requires_grad for p in self._aux_parameters())
        )
        if needs_graph:
            return self._compute_weight(), self._compute_bias()
        key = self._state_key()
        if key != self._eff_key or self._eff_cache is None:
            with torch.no_grad():
                self._eff_cache = (self._compute_weight(), self._compute_bias())
            self._eff_key = key
        return self._eff_cache

    def _aux_parameters(self):
        for m in (self.pruning, self.weight_quantizer, self.bias_quantizer):
            if m is not None:
                yield from m.parameters()

    def effective_weight(self) -> torch.Tensor:
        return self.effective_params()[0]

    def effective_bias(self) -> torch.Tensor | None:
        return self.effective_params()[1]

    def hard_mask(self) -> torch.Tensor:
        """Binary mask of kept weights (ones when the layer is not pruned)."""
        if self.pruning is None:
            return torch.ones_like(self.weight)
        with torch.no_grad():
            return self.pruning.hard_mask(self.weight)

