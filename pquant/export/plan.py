"""Walk a finalised model into the chain of neutral export operations (:mod:`.ops`)."""

from __future__ import annotations

import torch
from torch import nn

from pquant.nn.base import PQModule
from pquant.nn.export_ops import ExportError, QuantOp, ReshapeOp, Step
from pquant.nn.registry import is_passive


def _leaves(module: nn.Module, prefix: str):
    for name, child in module.named_children():
        full = f"{prefix}.{name}" if prefix else name
        if type(child) is nn.Sequential:
            yield from _leaves(child, full)
        else:
            yield full, child


def check_finalized(model: nn.Module) -> None:
    """Raise :class:`ExportError` unless every PQ layer of ``model`` is finalised."""
    pending = [n for n, m in model.named_modules() if isinstance(m, PQModule) and not m.finalized]
    if pending:
        raise ExportError(f"layers {pending} are not finalised; export a finalised model "
                          f"(pquant.finalize(model) or pquant.load_run(run_dir, final=True))")


def plan(model: nn.Module, example_input: torch.Tensor) -> list[Step]:
    """The model as a chain of :class:`Step` (per-sample shapes filled from ``example_input``).

    The model must be an ``nn.Sequential`` (nested ones are flattened) of PQ layers and
    pass-through modules (flatten, unflatten, dropout, identity).

    Raises:
        ExportError: not finalised, not a chain, or a layer without an exact export rule.
    """
    if type(model) is not nn.Sequential:
        raise ExportError(f"only nn.Sequential models are exported (a chain of layers); got "
                          f"{type(model).__name__}")
    check_finalized(model)
    leaves = list(_leaves(model, ""))
    shapes: dict[str, tuple] = {}
    hooks = [m.register_forward_hook(
        lambda mod, inp, out, n=n: shapes.__setitem__(n, (tuple(inp[0].shape[1:]),
                                                          tuple(out.shape[1:]))))
        for n, m in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input[:1])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    steps: list[Step] = []
    for name, module in leaves:
        in_shape, out_shape = shapes[name]
        if isinstance(module, PQModule):
            ops = module.export_ops(name)
        elif is_passive(module):
            ops = [] if in_shape == out_shape else [ReshapeOp(out_shape)]
        else:
            raise ExportError(f"layer {name!r} ({type(module).__name__}) has no export rule "
                              f"(pquant did not convert it); export supports the PQ layers "
                              f"and flatten/unflatten/dropout/identity")
        current = in_shape
        for op in ops:
            after = current if isinstance(op, QuantOp) else out_shape
            steps.append(Step(op, name, current, after))
            current = after
    return steps
