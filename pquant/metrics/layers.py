"""Enumerate the layers metrics are computed over, and the tensors they actually use."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pquant.nn.base import FLOAT_BITS, PQModule
from pquant.nn.registry import is_weight_layer
from pquant.pruning.base import PruningMethod
from pquant.quant.base import Quantizer

#: Module types that belong to the compression machinery, not to the model's own parameters.
MACHINERY = (PruningMethod, Quantizer)


@dataclass
class WeightLayerView:
    """A weight layer as the forward sees it.

    Attributes:
        name: dotted module name.
        module: the layer.
        weight: effective weight (pruned and quantized), detached.
        bias: effective bias or None.
        weight_bits: bit-width per weight element, broadcastable to ``weight``.
        bias_bits: bit-width per bias element (scalar tensor if per tensor), or None.
        input_bits: bit-width of the layer input (32 for float inputs).
    """

    name: str
    module: nn.Module
    weight: torch.Tensor
    bias: torch.Tensor | None
    weight_bits: torch.Tensor
    bias_bits: torch.Tensor | None
    input_bits: torch.Tensor


def weight_layers(model: nn.Module) -> list[WeightLayerView]:
    """Every weight layer of ``model`` (role ``weight`` in the layer registry), PQ or not."""
    views = []
    with torch.no_grad():
        for name, module in model.named_modules():
            if not is_weight_layer(module):
                continue
            if isinstance(module, PQModule):
                weight, bias = module.effective_params()
                views.append(WeightLayerView(
                    name, module, weight.detach(), None if bias is None else bias.detach(),
                    module.weight_bits().to(weight.device),
                    None if bias is None else module.bias_bits().to(weight.device),
                    module.input_bits().to(weight.device),
                ))
            else:
                w = module.weight.detach()
                b = None if module.bias is None else module.bias.detach()
                full = torch.full((), FLOAT_BITS, device=w.device)
                views.append(WeightLayerView(name, module, w, b, full,
                                             None if b is None else full, full))
    return views


def own_parameters(model: nn.Module):
    """``(module_name, module, param_name, tensor)`` for the model's own parameters.

    Parameters of pruning methods and quantizers (thresholds, learnable bit-widths) are skipped.
    """
    for name, module in model.named_modules():
        if isinstance(module, MACHINERY):
            continue
        for pname, p in module.named_parameters(recurse=False):
            if pname == "multiplier":  # ReLU's learnable power-of-two scale: machinery too
                continue
            yield name, module, pname, p
