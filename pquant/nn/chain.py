"""Skip quantizers that provably do nothing, and link layers to their upstream quantizer.

In a chain such as ``PQDense(q_out) -> PQActivation(relu: q_in, q_out) -> PQDense(q_in)`` the
tensor leaving the first layer is already on a saturating fixed-point grid. A later quantizer whose
format *covers* that grid (same or finer step, same or wider range) maps every such value to itself
with a straight-through gradient of exactly 1, so skipping it changes neither values nor gradients
-- it only saves time. ReLU is followed through: it keeps values on the grid and its input
quantizer only needs to cover the non-negative part (negative values become 0 either way when the
quantizer saturates).

The analysis follows ``nn.Sequential`` chains (nested Sequentials are flattened) and, in a model
whose forward is written by hand, the torch.fx graph of that forward (shape-only and relu calls
are followed; a module called at several places is left alone); anything it does not understand
resets the knowledge of the incoming format, so it never skips wrongly. A forward that cannot be
traced is analysed along its ``nn.Sequential`` parts only (with a warning). Layers without an
input quantizer are linked to the nearest quantizer upstream, whose bit-width then describes
their input in the cost metrics.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import torch.fx as fx
from torch import nn

from pquant.nn.base import PQModule
from pquant.nn.registry import is_value_preserving
from pquant.nn.trace import has_own_forward, op_name, tensor_inputs, trace_graph
from pquant.quant.base import Quantizer
from pquant.quant.fixed_point import format_range

log = logging.getLogger(__name__)

#: Functions/methods of one tensor that leave every value unchanged (shape changes only).
_VALUE_OPS = {"view", "reshape", "flatten", "permute", "transpose", "t", "contiguous",
              "unsqueeze", "squeeze", "unflatten", "getitem", "detach", "clone"}
#: ... and those computing relu.
_RELU_OPS = {"relu", "relu_"}


@dataclass(frozen=True)
class Grid:
    """Values known to lie in ``[lo, hi]`` on the grid ``2**-f``."""

    lo: float
    hi: float
    f: float

    def nonnegative(self) -> Grid:
        return Grid(max(self.lo, 0.0), max(self.hi, 0.0), self.f)


def _active(q: Quantizer | None) -> bool:
    return q is not None and q.enabled


def _static_grid(q: Quantizer | None) -> Grid | None:
    """The grid a quantizer's output is guaranteed to lie on (saturating, constant formats)."""
    if not _active(q) or not q.overflow_mode.saturating:
        return None
    spec = q.spec
    if spec is None:
        return None
    lo, hi = format_range(spec.k, spec.i, spec.f, spec.overflow_mode)
    return Grid(lo, hi, spec.f)


def _covers(q: Quantizer | None, incoming: Grid | None) -> bool:
    """True if ``q`` maps every value of ``incoming`` to itself."""
    if not _active(q) or incoming is None or not q.supports_bypass:
        return False
    spec = q.spec
    if spec is None or spec.f < incoming.f:
        return False
    lo, hi = format_range(spec.k, spec.i, spec.f, spec.overflow_mode)
    return lo <= incoming.lo and hi >= incoming.hi


def _leaves(seq: nn.Sequential):
    for child in seq.children():
        if type(child) is nn.Sequential:
            yield from _leaves(child)
        else:
            yield child


def _after(q: Quantizer | None, incoming: Grid | None) -> Grid | None:
    """Grid after ``q`` (or after nothing, when ``q`` is absent or skipped)."""
    if not _active(q) or q.bypass:
        return incoming
    return _static_grid(q)


class _Walker:
    def __init__(self) -> None:
        self.elided: list[Quantizer] = []
        #: the quantizers met so far along the chain: a skip depends on (at most) their formats
        self.chain: list[Quantizer] = []

    def skip(self, q: Quantizer) -> None:
        q.grant_bypass(self.chain)
        self.elided.append(q)

    def visit(self, module, grid: Grid | None, source: Quantizer | None):
        """Return the grid and the last active quantizer after ``module``."""
        if isinstance(module, PQModule):
            q_in, q_out = module.input_quantizer, module.output_quantizer
            self.chain += [q for q in (q_in, q_out) if q is not None]
            module._upstream = (source,) if q_in is None and source is not None else None
            relu = module.computes_relu and getattr(module, "multiplier", None) is None
            if relu:
                if (_active(q_in) and grid is not None and q_in.overflow_mode.saturating
                        and _covers(q_in, grid.nonnegative())):
                    self.skip(q_in)
                after_in = _after(q_in, grid)
                grid = after_in.nonnegative() if after_in is not None else None
                if _covers(q_out, grid):
                    self.skip(q_out)
                grid = _after(q_out, grid)
            else:
                if _covers(q_in, grid):
                    self.skip(q_in)
                grid = _after(q_out, None)
            for q in (q_in, q_out):
                if _active(q):
                    source = q
            if not relu and not _active(q_out):
                source = None
            return grid, source
        if is_value_preserving(module):
            return grid, source
        return None, None


def _is_relu(module) -> bool:
    return isinstance(module, nn.ReLU) or bool(getattr(module, "computes_relu", False))


def _note_successor(module, relu: bool) -> None:
    """Tell a layer's pruning method whether a ReLU consumes its output (activation pruning
    judges units by their positive outputs, which only a ReLU makes meaningful)."""
    method = getattr(module, "pruning", None)
    if method is not None and hasattr(method, "feeds_relu"):
        method.feeds_relu = relu


def _walk_sequentials(model: nn.Module, walker: _Walker) -> None:
    nested = {id(child) for m in model.modules() if type(m) is nn.Sequential
              for child in m.children() if type(child) is nn.Sequential}
    for module in model.modules():
        if type(module) is nn.Sequential and id(module) not in nested:
            grid, source = None, None
            walker.chain = []  # a skip depends on the quantizers met along its own chain
            leaves = list(_leaves(module))
            for leaf, following in zip(leaves, leaves[1:] + [None]):
                grid, source = walker.visit(leaf, grid, source)
                _note_successor(leaf, _is_relu(following))


def _walk_graph(model: nn.Module, graph: fx.Graph, walker: _Walker) -> None:
    """The same analysis along the fx graph of a hand-written forward (a skip depends on every
    quantizer met before it in the graph's order: a superset of its upstream, so it lapses at
    least whenever it must)."""
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    for module in modules.values():
        if isinstance(module, PQModule):
            module._upstream = None
    state: dict[fx.Node, tuple] = {}

    def relu_node(node: fx.Node) -> bool:
        if node.op == "call_module":
            return _is_relu(modules[node.target])
        return node.op in ("call_function", "call_method") and op_name(node) in _RELU_OPS

    for node in graph.nodes:
        ins = tensor_inputs(node)
        grid, source = state.get(ins[0], (None, None)) if len(ins) == 1 else (None, None)
        after = (None, None)
        if node.op == "call_module":
            module = modules[node.target]
            if calls[node.target] == 1:  # (a shared module's formats serve several inputs)
                after = walker.visit(module, grid, source)
                users = list(node.users)
                _note_successor(module, bool(users) and all(relu_node(u) for u in users))
        elif node.op in ("call_function", "call_method"):
            name = op_name(node)
            if name in _VALUE_OPS:
                after = (grid, source)
            elif name in _RELU_OPS:
                after = (None if grid is None else grid.nonnegative(), source)
        state[node] = after


def elide_redundant_quantizers(model: nn.Module) -> list[str]:
    """Mark provably redundant quantizers as bypassed; return their dotted names.

    Call again after changing quantizer formats by hand (a skip lapses when the format of the
    quantizer or of one upstream of it in the chain changes).
    """
    for q in model.modules():
        if isinstance(q, Quantizer) and q.supports_bypass:
            q.bypass = False
    walker = _Walker()
    graph = None
    if has_own_forward(model):
        graph, why = trace_graph(model)
        if graph is None:
            log.warning("quantizer elision: the forward of %s cannot be traced by torch.fx "
                        "(%s); only its nn.Sequential parts are analysed", type(model).__name__,
                        why)
    if graph is not None:
        _walk_graph(model, graph, walker)
    else:
        _walk_sequentials(model, walker)
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(q)] for q in walker.elided]
