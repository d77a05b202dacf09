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

The same trace tells the conversion where each module's input comes from in a forward written by
hand (:func:`feature_sources`), so per-feature formats and the quantizer elision work there as
along ``nn.Sequential`` chains.
"""

from __future__ import annotations

import operator

import torch.fx as fx
from torch import nn

from pquant.nn.base import PQModule
from pquant.nn.registry import entry_for, entry_for_type, is_grid
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
class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (PQModule, Quantizer)) or entry_for_type(type(m)) is not None:
            return True
        return super().is_leaf_module(m, qualname)


def has_own_forward(model: nn.Module) -> bool:
    """True if a container in ``model`` is not an ``nn.Sequential`` (its forward is code)."""
    if isinstance(model, (PQModule, Quantizer)) or next(model.children(), None) is None:
        return False
    if type(model) is not nn.Sequential:
        return True
    return any(has_own_forward(child) for child in model.children())


def trace_graph(model: nn.Module) -> tuple[fx.Graph | None, str | None]:
    """``(graph, None)``, or ``(None, why)`` when torch.fx cannot trace ``model``'s forward."""
    try:
        return _Tracer().trace(model), None
    except Exception as exc:  # noqa: BLE001 - any tracing failure just limits the analyses
        return None, f"{type(exc).__name__}: {exc}"


def op_name(node: fx.Node) -> str:
    target = node.target
    if isinstance(target, str):
        return target
    if target is operator.getitem:
        return "getitem"
    return getattr(target, "__name__", str(target))


def tensor_inputs(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
    return [n for n in found if n.op != "get_attr"]


def _module_output_quantized(mod: nn.Module, inputs_quantized: bool) -> bool:
    if isinstance(mod, PQModule):
        q_in, q_out = mod.input_quantizer, mod.output_quantizer
        if q_out is not None and q_out.enabled:
            return True
        if mod.computes_relu:
            return inputs_quantized or (q_in is not None and q_in.enabled)
        return False
    if isinstance(mod, Quantizer):
        return mod.enabled
    return is_grid(mod) and inputs_quantized


def analyse_dataflow(model: nn.Module) -> list[str]:
    """Findings about unquantized tensors in ``model`` (empty: everything is on a grid)."""
    graph, why = trace_graph(model)
    if graph is None:
        return [f"could not trace the model with torch.fx ({why}); "
                "functional calls in forward() were not checked"]
    modules = dict(model.named_modules())
    quantized: dict[fx.Node, bool] = {}
    findings: list[str] = []
    for node in graph.nodes:
        ins = tensor_inputs(node)
        all_q = all(quantized.get(n, False) for n in ins) if ins else False
        if node.op in ("placeholder", "get_attr"):
            quantized[node] = False
        elif node.op == "call_module":
            mod = modules[node.target]
            if isinstance(mod, PQModule) and mod.input_quantizer is None and not all_q:
                findings.append(f"'{node.target}' has no input quantizer and receives an "
                                f"unquantized tensor from {', '.join(n.name for n in ins)}")
            if not isinstance(mod, (PQModule, Quantizer)) and not is_grid(mod):
                findings.append(f"'{node.target}' ({type(mod).__name__}) is not converted: it "
                                "computes in floating point and its output is unquantized")
            quantized[node] = _module_output_quantized(mod, all_q)
        elif node.op in ("call_function", "call_method"):
            name = op_name(node)
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


#: Functions/methods that keep every feature where it was (element-wise or no-op).
_FEATURE_OPS = {"relu", "relu_", "dropout", "detach", "clone", "contiguous"}


def _keeps_features(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        entry = entry_for(modules[node.target])
        return entry is not None and entry.keeps_features
    return node.op in ("call_function", "call_method") and op_name(node) in _FEATURE_OPS


def feature_sources(model: nn.Module) -> tuple[dict[str, str | None], dict[str, int], str | None]:
    """Where each module's input comes from, through a torch.fx trace of ``model``.

    Returns:
        ``(sources, order, why)``: ``sources[name]`` is the module whose output features reach
        module ``name`` unchanged (through dropout, identity, relu and similar), or None when the
        input comes from anything else (a model input, a functional computation, a module
        called at several places); ``order[name]`` the position of the first call of each module
        (and of each container, from its first called descendant); ``why`` is None, or the reason
        the model could not be traced (then both dicts are empty).
    """
    graph, why = trace_graph(model)
    if graph is None:
        return {}, {}, why
    modules = dict(model.named_modules())
    sources: dict[str, str | None] = {}
    order: dict[str, int] = {}
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        name = node.target
        parts = name.split(".")
        for n in range(len(parts) + 1):
            order.setdefault(".".join(parts[:n]), len(order))
        ins = tensor_inputs(node)
        src = ins[0] if len(ins) == 1 else None
        while src is not None and _keeps_features(src, modules):
            nxt = tensor_inputs(src)
            src = nxt[0] if len(nxt) == 1 else None
        found = src.target if src is not None and src.op == "call_module" else None
        if name in sources and sources[name] != found:
            found = None  # called at several places with different inputs
        sources[name] = found
    return sources, order, None


__all__ = ["analyse_dataflow", "feature_sources", "has_own_forward", "trace_graph"]
