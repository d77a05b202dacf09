"""Where do tensors flow unquantized? A torch.fx walk over a converted model.

PQ layers, quantizers and unconverted leaf modules are kept as leaves; everything else is traced
through, so functional calls in a user's ``forward`` (``F.relu``, ``torch.tanh``, ``x + skip``)
appear as graph nodes. Each tensor is marked quantized (it left a quantizer, or a grid-preserving
op applied to quantized tensors) or not, and the findings are phrased for a person:

* a functional op that computes in floating point (its output is not on any grid);
* a PQ layer without an input quantizer that receives an unquantized tensor;
* an unconverted module whose output is unquantized;
* model outputs that are not quantized.

A model that cannot be traced (data-dependent control flow) yields one line saying so.
"""

from __future__ import annotations

import operator

import torch.fx as fx
from torch import nn

from pquant.nn.activation import PQActivation
from pquant.nn.base import PQModule
from pquant.quant.base import Quantizer

#: Functions/methods that only move or reshape values: quantized in, quantized out.
_SHAPE_OPS = {
    "view", "reshape", "flatten", "permute", "transpose", "t", "contiguous", "unsqueeze",
    "squeeze", "chunk", "split", "expand", "expand_as", "repeat", "narrow", "unflatten",
    "getitem", "detach", "clone", "to", "float", "cat", "stack", "concat", "size", "dim",
}
#: Non-linear but grid-preserving (outputs are selected inputs or zero).
_GRID_OPS = {"relu", "relu_", "max_pool1d", "max_pool2d", "adaptive_max_pool1d",
             "adaptive_max_pool2d", "max", "maximum", "minimum", "min", "hardtanh", "neg"}
#: Leaf modules with the same property.
_GRID_MODULES = (nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
                 nn.MaxPool1d, nn.MaxPool2d, nn.ReLU)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (PQModule, Quantizer)):
            return True
        return super().is_leaf_module(m, qualname)


def _op_name(node: fx.Node) -> str:
    target = node.target
    if isinstance(target, str):
        return target
    if target is operator.getitem:
        return "getitem"
    return getattr(target, "__name__", str(target))


def _tensor_inputs(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
    return [n for n in found if n.op != "get_attr"]


def _module_output_quantized(mod: nn.Module, inputs_quantized: bool) -> bool:
    if isinstance(mod, PQModule):
        q_in, q_out = mod.input_quantizer, mod.output_quantizer
        if q_out is not None and q_out.enabled:
            return True
        if isinstance(mod, PQActivation) and mod.activation_name == "relu":
            return inputs_quantized or (q_in is not None and q_in.enabled)
        return False
    if isinstance(mod, Quantizer):
        return mod.enabled
    return isinstance(mod, _GRID_MODULES) and inputs_quantized


def analyse_dataflow(model: nn.Module) -> list[str]:
    """Findings about unquantized tensors in ``model`` (empty: everything is on a grid)."""
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure just limits the analysis
        return [f"could not trace the model with torch.fx ({type(exc).__name__}: {exc}); "
                "functional calls in forward() were not checked"]
    modules = dict(model.named_modules())
    quantized: dict[fx.Node, bool] = {}
    findings: list[str] = []
    for node in graph.nodes:
        ins = _tensor_inputs(node)
        all_q = all(quantized.get(n, False) for n in ins) if ins else False
        if node.op in ("placeholder", "get_attr"):
            quantized[node] = False
        elif node.op == "call_module":
            mod = modules[node.target]
            if isinstance(mod, PQModule) and mod.input_quantizer is None and not all_q:
                findings.append(f"'{node.target}' has no input quantizer and receives an "
                                f"unquantized tensor from {', '.join(n.name for n in ins)}")
            if not isinstance(mod, (PQModule, Quantizer, *_GRID_MODULES)):
                findings.append(f"'{node.target}' ({type(mod).__name__}) is not converted: it "
                                "computes in floating point and its output is unquantized")
            quantized[node] = _module_output_quantized(mod, all_q)
        elif node.op in ("call_function", "call_method"):
            name = _op_name(node)
            if name in _SHAPE_OPS or name in _GRID_OPS:
                quantized[node] = all_q
                if name in _GRID_OPS and not all_q and name.startswith("relu"):
                    findings.append(f"'{node.name}' (functional {name}) receives an unquantized "
                                    "tensor; its output stays unquantized")
            else:
                quantized[node] = False
                what = "quantized" if all_q else "unquantized"
                findings.append(f"'{node.name}' (functional {name}) computes in floating point "
                                f"on {what} inputs; its output is not quantized")
        elif node.op == "output":
            for n in ins:
                if not quantized.get(n, False):
                    findings.append(f"the model output '{n.name}' is not quantized")
    return findings


__all__ = ["analyse_dataflow"]
