"""Skip quantizers that provably do nothing, and link layers to their upstream quantizer.

In a chain such as ``PQDense(q_out) -> PQActivation(relu: q_in, q_out) -> PQDense(q_in)`` the
tensor leaving the first layer is already on a saturating fixed-point grid. A later quantizer whose
format *covers* that grid (same or finer step, same or wider range) maps every such value to itself
with a straight-through gradient of exactly 1, so skipping it changes neither values nor gradients
-- it only saves time. ReLU is followed through: it keeps values on the grid and its input
quantizer only needs to cover the non-negative part (negative values become 0 either way when the
quantizer saturates).

The analysis follows ``nn.Sequential`` chains (nested Sequentials are flattened); anything it does
not understand resets the knowledge of the incoming format, so it never skips wrongly. Layers
without an input quantizer are linked to the nearest quantizer upstream, whose bit-width then
describes their input in the cost metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pquant.nn.activation import PQActivation
from pquant.nn.base import PQModule
from pquant.quant.base import Quantizer
from pquant.quant.fixed_point import format_range

#: Modules that leave every value unchanged (shape changes only), so a grid survives them.
VALUE_PRESERVING = (nn.Identity, nn.Flatten, nn.Unflatten)


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
            relu = (isinstance(module, PQActivation) and module.activation_name == "relu"
                    and module.multiplier is None)
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
        if isinstance(module, VALUE_PRESERVING):
            return grid, source
        return None, None


def _note_successor(module, following) -> None:
    """Tell a layer's pruning method whether a ReLU consumes its output (activation pruning
    judges units by their positive outputs, which only a ReLU makes meaningful)."""
    method = getattr(module, "pruning", None)
    if method is not None and hasattr(method, "feeds_relu"):
        relu = isinstance(following, nn.ReLU) or (
            isinstance(following, PQActivation) and following.activation_name == "relu")
        method.feeds_relu = bool(relu)


def elide_redundant_quantizers(model: nn.Module) -> list[str]:
    """Mark provably redundant quantizers as bypassed; return their dotted names.

    Call again after changing quantizer formats by hand (a skip lapses when the format of the
    quantizer or of one upstream of it in the chain changes).
    """
    for q in model.modules():
        if isinstance(q, Quantizer) and q.supports_bypass:
            q.bypass = False
    walker = _Walker()
    nested = {id(child) for m in model.modules() if type(m) is nn.Sequential
              for child in m.children() if type(child) is nn.Sequential}
    for module in model.modules():
        if type(module) is nn.Sequential and id(module) not in nested:
            grid, source = None, None
            walker.chain = []
            leaves = list(_leaves(module))
            for leaf, following in zip(leaves, leaves[1:] + [None]):
                grid, source = walker.visit(leaf, grid, source)
                _note_successor(leaf, following)
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(q)] for q in walker.elided]
