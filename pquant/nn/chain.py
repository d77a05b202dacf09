"""Skip quantizers that provably do nothing.

In a chain such as ``PQDense(q_out) -> PQActivation(relu: q_in, q_out) -> PQDense(q_in)`` the
tensor leaving the first layer is already on a saturating fixed-point grid. A later quantizer whose
format *covers* that grid (same or finer step, same or wider range) maps every such value to itself
with a straight-through gradient of exactly 1, so skipping it changes neither values nor gradients
-- it only saves time. ReLU is followed through: it keeps values on the grid and its input
quantizer only needs to cover the non-negative part (negative values become 0 either way when the
quantizer saturates).

The analysis follows ``nn.Sequential`` chains (nested Sequentials are flattened); anything it does
not understand resets the knowledge of the incoming format, so it never skips wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pquant.nn.activation import PQActivation
from pquant.nn.weight_layer import CompressedWeightMixin
from pquant.quant.fixed_point import format_range
from pquant.quant.quantizer import FixedPointQuantizer

#: Modules that pass values through unchanged (shape changes only).
PASS_THROUGH = (nn.Identity, nn.Flatten, nn.Unflatten)


@dataclass(frozen=True)
class Grid:
    """Values known to lie in ``[lo, hi]`` on the grid ``2**-f``."""

    lo: float
    hi: float
    f: float

    def nonnegative(self) -> Grid:
        return Grid(max(self.lo, 0.0), max(self.hi, 0.0), self.f)


def _static_grid(q: FixedPointQuantizer | None) -> Grid | None:
    """The grid a quantizer's output is guaranteed to lie on (saturating, constant formats)."""
    if q is None or not q.enabled or not q.overflow_mode.saturating:
        return None
    spec = q.spec
    if spec is None:
        return None
    lo, hi = format_range(spec.k, spec.i, spec.f, spec.overflow_mode)
    return Grid(lo, hi, spec.f)


def _covers(q: FixedPointQuantizer | None, incoming: Grid | None) -> bool:
    """True if ``q`` maps every value of ``incoming`` to itself."""
    if q is None or incoming is None or not q.enabled:
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


def _after(q: FixedPointQuantizer | None, incoming: Grid | None) -> Grid | None:
    """Grid after ``q`` (or after nothing, when ``q`` is absent or skipped)."""
    if q is None or not q.enabled:
        return incoming
    if q.bypass:
        return incoming
    return _static_grid(q)


def _visit(module: nn.Module, incoming: Grid | None, elided: list) -> Grid | None:
    if isinstance(module, CompressedWeightMixin):
        if _covers(module.input_quantizer, incoming):
            module.input_quantizer.bypass = True
            elided.append(module.input_quantizer)
        return _after(module.output_quantizer, None)
    if isinstance(module, PQActivation) and module.activation_name == "relu":
        q_in, q_out = module.input_quantizer, module.output_quantizer
        if q_in is not None and incoming is not None and q_in.enabled:
            if q_in.overflow_mode.saturating and _covers(q_in, incoming.nonnegative()):
                q_in.bypass = True
                elided.append(q_in)
        grid = _after(q_in, incoming)
        grid = grid.nonnegative() if grid is not None else None
        if _covers(q_out, grid):
            q_out.bypass = True
            elided.append(q_out)
        return _after(q_out, grid)
    if isinstance(module, PQActivation):
        if _covers(module.input_quantizer, incoming):
            module.input_quantizer.bypass = True
            elided.append(module.input_quantizer)
        return _static_grid(module.output_quantizer)
    if isinstance(module, PASS_THROUGH):
        return incoming
    return None


def elide_redundant_quantizers(model: nn.Module) -> list[str]:
    """Mark provably redundant quantizers as bypassed; return their dotted names.

    Call again after changing quantizer formats by hand (any change lapses all bypasses).
    """
    for q in model.modules():
        if isinstance(q, FixedPointQuantizer):
            q.bypass = False
    elided: list[FixedPointQuantizer] = []
    nested = {id(child) for m in model.modules() if type(m) is nn.Sequential
              for child in m.children() if type(child) is nn.Sequential}
    for module in model.modules():
        if type(module) is nn.Sequential and id(module) not in nested:
            grid = None
            for leaf in _leaves(module):
                grid = _visit(leaf, grid, elided)
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(q)] for q in elided]
