"""Shared machinery of PQ layers that own a weight (and optional bias).

Forward of such a layer: ``q_out(op(q_in(x), W_eff, b_eff))`` with
``W_eff = q_w(prune(W))`` (``pruning_first``) or ``prune(q_w(W))`` and ``b_eff = q_b(b)``.
The layer keeps the torch layer's own ``weight``/``bias`` parameters -- one set, no shadow copies.

When no autograd graph is needed (eval under ``torch.no_grad``), the effective weight and bias are
cached and reused until the weight, the mask state or a quantizer format changes (tracked through
tensor version counters), so repeated inference does no redundant pruning or quantization work.
After :meth:`finalize` the effective tensors are baked into ``weight``/``bias`` and the pruning
method and parameter quantizers are dropped.
"""

from __future__ import annotations

from itertools import chain

import torch
from torch import nn

from pquant import kernels
from pquant.nn.base import FLOAT_BITS, PQModule
from pquant.pruning.base import PruningMethod
from pquant.quant.base import Quantizer


class CompressedWeightMixin(PQModule):
    """Mixin for PQ layers with ``weight`` and ``bias`` (combine with the torch layer class)."""

    weight: nn.Parameter | None
    bias: nn.Parameter | None

    def _init_compression(
        self,
        input_quantizer: Quantizer | None = None,
        weight_quantizer: Quantizer | None = None,
        bias_quantizer: Quantizer | None = None,
        output_quantizer: Quantizer | None = None,
        pruning: PruningMethod | None = None,
        pruning_first: bool = True,
    ) -> None:
        self._init_io(input_quantizer, output_quantizer)
        self.register_module("weight_quantizer", weight_quantizer)
        self.register_module("bias_quantizer", bias_quantizer)
        self.register_module("pruning", pruning)
        self.pruning_first = pruning_first
        self._eff_key = None
        self._eff_cache: tuple[torch.Tensor | None, torch.Tensor | None] | None = None
        self._last_weight: torch.Tensor | None = None

    # ------------------------------------------------------------------ forward
    def _op(self, x: torch.Tensor, weight, bias) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``q_out(op(q_in(x), W_eff, b_eff))``; ``_op`` is the torch layer's computation."""
        q_in, q_out = self.input_quantizer, self.output_quantizer
        xq = x if q_in is None else q_in.forward(x)
        weight, bias = self.effective_params()
        y = self._op(xq, weight, bias)
        if q_out is not None:
            y = q_out.forward(y)
        self.__dict__["_shapes"] = (x.shape, y.shape)  # (plain attribute; skips Module.__setattr__)
        return y

    # ------------------------------------------------------------------ effective tensors
    # Sub-modules are called through ``.forward`` on the hot path: it skips nn.Module.__call__'s
    # hook bookkeeping (hooks on these internal modules are not supported).
    def _compute_weight(self) -> torch.Tensor | None:
        w = self.weight
        if w is None:
            return None
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
        if b is None:
            return None
        prune = self.pruning
        if prune is not None and prune.masks_bias:
            b = prune.prune_bias(b)
        quant = self.bias_quantizer
        if quant is not None:
            b = quant.forward(b)
        return b

    def _state_key(self) -> tuple:
        tensors = [t for t in (self.weight, self.bias) if t is not None]
        mods = [
            m for m in (self.pruning, self.weight_quantizer, self.bias_quantizer) if m is not None
        ]
        extra = chain.from_iterable(chain(m.parameters(), m.buffers()) for m in mods)
        key = [self.training, self.pruning_first]
        key += [(id(m), getattr(m, "enabled", True)) for m in mods]
        for t in chain(tensors, extra):
            key.append(t.data_ptr())
            key.append(t._version)
        return tuple(key)

    def _needs_graph(self) -> bool:
        if not torch.is_grad_enabled():
            return False
        if self.weight is not None and self.weight.requires_grad:
            return True
        if self.bias is not None and self.bias.requires_grad:
            return True
        return any(p.requires_grad for p in self._aux_parameters())

    def effective_params(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The weight and bias actually used by the forward (pruned and quantized)."""
        if self.finalized:
            return self.weight, self.bias
        if kernels.tracing():  # torch.compile/export: no cache written from traced tensors
            return self._compute_weight(), self._compute_bias()
        if self._needs_graph():
            weight = self._compute_weight()
            self.__dict__["_last_weight"] = None if weight is None else weight.detach()
            return weight, self._compute_bias()
        key = self._state_key()
        if key != self._eff_key or self._eff_cache is None:
            with torch.no_grad():
                self._eff_cache = (self._compute_weight(), self._compute_bias())
            self._eff_key = key
            weight = self._eff_cache[0]
            self._last_weight = None if weight is None else weight.detach()
        return self._eff_cache

    def _aux_parameters(self):
        for m in (self.pruning, self.weight_quantizer, self.bias_quantizer):
            if m is not None:
                yield from m.parameters()

    def effective_weight(self) -> torch.Tensor | None:
        return self.effective_params()[0]

    def hard_mask(self) -> torch.Tensor:
        """Binary mask of kept weights (ones when the layer is not pruned)."""
        if self.pruning is None:
            return torch.ones_like(self.weight)
        with torch.no_grad():
            return self.pruning.hard_mask(self.weight)

    # ------------------------------------------------------------------ bits
    def weight_bits(self, for_loss: bool = False) -> torch.Tensor:
        if self.finalized:
            return self.final_weight_bits
        bits = self._bits_of(self.weight_quantizer, for_loss)
        return bits if bits is not None else torch.tensor(FLOAT_BITS)

    def bias_bits(self, for_loss: bool = False) -> torch.Tensor | None:
        if self.bias is None:
            return None
        if self.finalized:
            return self.final_bias_bits
        bits = self._bits_of(self.bias_quantizer, for_loss)
        return bits if bits is not None else torch.tensor(FLOAT_BITS)

    def kept_weights(self) -> torch.Tensor:
        """1 where the effective weight of the last forward is non-zero (0: costs nothing)."""
        w = self._last_weight
        if w is None:
            with torch.no_grad():
                w = self.effective_weight()
        return (w != 0).to(w.dtype)

    # ------------------------------------------------------------------ finalisation
    def finalize(self) -> None:
        """Bake the effective weight and bias (eval behaviour), drop pruning and parameter
        quantizers, freeze the I/O quantizers. Outputs in eval stay bit-for-bit the same."""
        if self.finalized:
            return
        was_training = self.training
        self.eval()
        with torch.no_grad():
            weight, bias = self.effective_params()
            weight_bits = self.weight_bits().detach().clone()
            bias_bits = None if bias is None else self.bias_bits().detach().clone()
            weight, bias = (None if t is None else t.detach().clone() for t in (weight, bias))
        self.train(was_training)
        if weight is not None:
            self.weight.data = weight
        if bias is not None:
            self.bias.data = bias
        self.register_buffer("final_weight_bits", weight_bits)
        if bias_bits is not None:
            self.register_buffer("final_bias_bits", bias_bits)
        self.weight_quantizer = None
        self.bias_quantizer = None
        self.pruning = None
        self._eff_cache = None
        super().finalize()
