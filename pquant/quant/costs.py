"""The per-step cost collector: what a training forward computed for the compression loss.

A forward that computes, as a by-product, values the loss of the same step needs -- HGQ's bit
widths (with their graph), the EBOPs the fused HGQ dense kernel evaluates -- reports them into the
*active* :class:`StepCosts` through :func:`report_bits` / :func:`report_ebops`; no module keeps
them. The loss owns the collector and decides when it is active::

    costs = StepCosts()
    with costs.collecting():          # (CompressionLoss does this around the model's forward)
        y = model(x)
    bits = costs.bits_of(quantizer)   # None: not reported, recompute it
    costs.clear()                     # after the loss of the step is built

Outside ``collecting`` (evaluation, a model used without a loss, another model's forward) the
reports go nowhere, so a model never holds a step's tensors: it can be copied or pickled after
any forward. Only tensors that carry a graph (training with gradients) are kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

_ACTIVE: ContextVar[StepCosts | None] = ContextVar("pquant_step_costs", default=None)


class StepCosts(dict):
    """One training step's reported costs.

    As a dict it maps ``id(quantizer)`` to the quantizer's widths per element (what
    :meth:`pquant.quant.base.Quantizer.bits_for_loss` returns; the loss passes this object as
    their per-step ``memo``, so widths computed once are shared by the EBOPs and width terms).
    :attr:`ebops` maps ``id(layer)`` to the EBOPs a layer's forward computed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ebops: dict[int, torch.Tensor] = {}

    # ------------------------------------------------------------------ reading
    def bits_of(self, quantizer: nn.Module) -> torch.Tensor | None:
        """The widths ``quantizer`` reported (or a loss term computed) this step, or None."""
        return self.get(id(quantizer))

    def ebops_of(self, layer: nn.Module) -> torch.Tensor | None:
        """The EBOPs ``layer``'s forward reported this step, or None (the loss computes them)."""
        return self.ebops.get(id(layer))

    def clear(self) -> None:
        """Forget the step (the owner calls this once the step's loss is built)."""
        super().clear()
        self.ebops.clear()

    # ------------------------------------------------------------------ activation
    @contextmanager
    def collecting(self) -> Iterator[StepCosts]:
        """Make this the collector the forwards inside the block report into."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    def activate(self):
        """Start collecting (returns a token for :func:`deactivate`); for forward hooks."""
        return _ACTIVE.set(self)


def deactivate(token) -> None:
    """End what :meth:`StepCosts.activate` started."""
    _ACTIVE.reset(token)


def collecting() -> bool:
    """Whether a collector is active (a forward may skip work nobody will read)."""
    return _ACTIVE.get() is not None


def report_bits(quantizer: nn.Module, bits: torch.Tensor) -> None:
    """Report ``quantizer``'s widths of this forward (kept only if they carry a graph)."""
    costs = _ACTIVE.get()
    if costs is not None and bits.requires_grad:
        costs[id(quantizer)] = bits


def report_ebops(layer: nn.Module, ebops: torch.Tensor) -> None:
    """Report the EBOPs ``layer``'s forward computed (kept only if they carry a graph)."""
    costs = _ACTIVE.get()
    if costs is not None and ebops.requires_grad:
        costs.ebops[id(layer)] = ebops
