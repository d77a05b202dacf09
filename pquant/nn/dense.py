"""PQDense: a compressed ``nn.Linear``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pquant import kernels
from pquant.nn.ebops import linear_cost
from pquant.nn.weight_layer import CompressedWeightMixin
from pquant.quant.costs import StepCosts, report_ebops
from pquant.quant.modes import ROUND_INDEX, OverflowMode

_F32 = torch.float32


class PQDense(CompressedWeightMixin, nn.Linear):
    """``nn.Linear`` with input/weight/bias/output quantizers and a pruning method.

    Mirrors ``nn.Linear(in_features, out_features, bias=True, device=None, dtype=None)``; the
    compression parts are keyword-only and optional (all None = exactly ``nn.Linear``).

    Shapes: input ``(*, in_features)``, output ``(*, out_features)``; weight ``(out, in)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        input_quantizer: nn.Module | None = None,
        weight_quantizer: nn.Module | None = None,
        bias_quantizer: nn.Module | None = None,
        output_quantizer: nn.Module | None = None,
        pruning: nn.Module | None = None,
        pruning_first: bool = True,
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias, device, dtype)
        self._init_compression(
            input_quantizer, weight_quantizer, bias_quantizer, output_quantizer, pruning,
            pruning_first,
        )

    @classmethod
    def from_torch(cls, layer: nn.Linear, **compression) -> PQDense:
        """Wrap ``layer``: the new module takes over its Parameter objects (no copy)."""
        new = cls(layer.in_features, layer.out_features, layer.bias is not None, device="meta",
                  dtype=layer.weight.dtype, **compression)
        new.weight = layer.weight
        new.bias = layer.bias
        return new

    def _op(self, x: torch.Tensor, weight, bias) -> torch.Tensor:
        return F.linear(x, weight, bias)

    def __getstate__(self) -> dict:
        """Copies and pickles leave the fused kernels' cached specs behind (rebuilt on use)."""
        state = dict(super().__getstate__())
        for key in ("_fused_key", "_fused_value", "_hgq_key", "_hgq_value"):
            state.pop(key, None)
        return state

    def export_body(self, name: str) -> list:
        """Export rule: one matrix product with the baked weight and bias."""
        from pquant.nn.export_ops import LinearOp, array

        return [LinearOp(array(self.weight), array(self.bias))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (parameters read from their dict: this runs once per layer and step; the kernels are
        # asked for only where they can run)
        weight = self._parameters["weight"]
        if (x.dtype is _F32 and x.dim() == 2 and x.device.type == "cpu"
                and weight.dtype is _F32 and weight.device.type == "cpu" and not self.finalized
                and self.pruning_first):
            ext = kernels.get()
            y = None if ext is None else self._fused_forward(ext, x)
            if y is None and ext is not None:
                y = self._hgq_forward(ext, x)
            if y is not None:
                return y
        return CompressedWeightMixin.forward(self, x)

    # ------------------------------------------------------------------ fused CPU path
    def _fused_specs(self, x: torch.Tensor):
        """Specs of the four quantizers for the fused kernel (None entries: identity), or None
        when one of them cannot be fused. Cached until a format, a train/eval flag or one of the
        quantizer modules changes."""
        m = self._modules
        quantizers = (m["input_quantizer"], m["weight_quantizer"], m["bias_quantizer"],
                      m["output_quantizer"])
        key = tuple((q, None if q is None else q.cache_key()) for q in quantizers)
        d = self.__dict__
        if d.get("_fused_key") == key:
            return d["_fused_value"]
        likes = (x, self.weight, self.bias, x)
        specs = []
        for q, like in zip(quantizers, likes):
            if q is None or not q.enabled or q.bypass or like is None:
                specs.append(None)
                continue
            spec = q.fused_spec(like)
            if spec is None or (like is x and spec.per_element_format):
                specs = None
                break
            specs.append(spec)
        d["_fused_key"], d["_fused_value"] = key, specs
        return specs

    def _kernel_params(self, weight, bias) -> tuple:
        """``(weight, bias, mask, soft)`` for the kernels: the pruning method's mask (or PDP's soft
        mask parameters) is applied inside them."""
        mask = soft = None
        prune = self._modules["pruning"]
        if prune is not None:
            weight, mask, soft = prune.fused_weight(weight)
            if bias is not None and prune.masks_bias:
                bias = prune.prune_bias(bias)
        return weight, bias, mask, soft

    def _fused_forward(self, ext, x: torch.Tensor) -> torch.Tensor | None:
        """The whole layer as one autograd node (same values and gradients as the generic path);
        None when it does not apply (no graph needed -- eval uses the cache --, a format the
        kernels do not implement). :meth:`forward` checked the dtypes, devices and order."""
        params = self._parameters
        weight, bias = params["weight"], params["bias"]
        if not (torch.is_grad_enabled() and weight.requires_grad) and not self._needs_graph():
            return None
        specs = self._fused_specs(x)
        if specs is None:
            return None
        weight, bias, mask, soft = self._kernel_params(weight, bias)
        y = ext.dense(x, weight, bias, mask, *specs, soft)
        d = self.__dict__
        d["_shapes"] = (x.shape, y.shape)
        d["_last_weight"] = None
        return y

    def _hgq_parts(self):
        """(input, weight, bias) quantizers when the layer can run the fused HGQ kernel -- an
        enabled saturating HGQ weight quantizer, the input and bias ones HGQ too or absent --,
        else None. Cached like :meth:`_fused_specs`."""
        m = self._modules
        quantizers = (m["input_quantizer"], m["weight_quantizer"], m["bias_quantizer"])
        key = tuple((q, None if q is None else q.format_version) for q in quantizers)
        d = self.__dict__
        if d.get("_hgq_key") == key:
            return d["_hgq_value"]

        def usable(q):
            return (getattr(q, "fuses_in_hgq_dense", False) and q.enabled
                    and q.f.dtype is _F32 and not q.f.is_cuda)

        q_in, q_w, q_b = quantizers
        parts = None
        if (usable(q_w) and (q_in is None or usable(q_in))
                and (self.bias is None or q_b is None or usable(q_b))):
            q_b = q_b if self.bias is not None else None
            flags = []
            for q in (q_in, q_w, q_b):
                flags += ([0, 0] if q is None else
                          [int(q.overflow_mode is OverflowMode.SAT_SYM),
                           ROUND_INDEX[q.round_mode]])
            # the EBOPs come out of the kernel when every width they depend on is learned there
            folded = q_in is not None and (self.bias is None or q_b is not None)
            parts = (q_in, q_w, q_b, flags, folded)
        d["_hgq_key"], d["_hgq_value"] = key, parts
        return parts

    def _hgq_forward(self, ext, x: torch.Tensor) -> torch.Tensor | None:
        """Input, weight and bias HGQ quantizers, the mask and the matrix product as one autograd
        node (same values and gradients as the generic path); None when it does not apply."""
        params = self._parameters
        weight, bias = params["weight"], params["bias"]
        if not torch.is_grad_enabled():  # (eval: the generic path's cache)
            return None
        parts = self._hgq_parts()
        if parts is None:
            return None
        q_in, q_w, q_b, flags, folded = parts
        weight, bias, mask, soft = self._kernel_params(weight, bias)
        none2 = (None, None)
        outs = ext.hgq_dense(x, weight, bias, mask,
                             *(none2 if q_in is None else q_in.kernel_params()),
                             *q_w.kernel_params(),
                             *(none2 if q_b is None else q_b.kernel_params()), flags, soft)
        y, w_eff, ebops = outs[0], outs[1], outs[2]
        # this step's widths and EBOPs, for the HGQ loss (to the step's cost collector)
        q_w.report_bits(outs[3])
        if q_in is not None:
            q_in.report_bits(outs[4])
        if q_b is not None:
            q_b.report_bits(outs[-1])
        d = self.__dict__
        if folded and d["training"]:
            report_ebops(self, ebops)
        q_out = self._modules["output_quantizer"]
        if q_out is not None:
            y = q_out.forward(y)
        d["_shapes"] = (x.shape, y.shape)
        d["_last_weight"] = w_eff
        return y

    def cost(self, for_loss: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        shapes = self.sample_shapes
        if shapes is None:
            return super().cost(for_loss)
        in_shape = shapes[0]
        positions = math.prod(in_shape[:-1]) if len(in_shape) > 1 else 1
        loss = isinstance(for_loss, dict)  # the HGQ loss: EBOPs only
        step = for_loss.ebops_of(self) if isinstance(for_loss, StepCosts) else None
        if step is not None:  # computed by this step's fused HGQ forward
            return None, step
        return linear_cost(self.weight_bits(for_loss), self.input_bits(for_loss),
                           self.kept_weights(), self.bias_bits(for_loss), positions, bops=not loss)
