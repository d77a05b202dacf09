"""Formats that cannot represent what a layer actually sees.

A format of valid width can still be useless for its data: ``i=-5, f=12`` saturates weights of
magnitude 0.5, ``f=1`` rounds inputs of magnitude 0.1 to zero. :func:`range_warnings` runs one
batch through the model (eval, no gradients), gives every layer's input quantizer the layer's
real input and every weight quantizer its weight, and reports formats for which every value
rounds to zero or most values (more than :data:`SATURATED_SHARE`) fall outside the range.
"""

from __future__ import annotations

import torch
from torch import nn

#: share of the non-zero values outside the format's range above which a format is reported
SATURATED_SHARE = 0.5


def _kif(q) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    k, i, f = (getattr(q, name, None) for name in ("k", "i", "f"))
    if not all(isinstance(t, torch.Tensor) for t in (k, i, f)):
        return None  # a data-dependent split (range-split, dynamic): always fits
    return k.detach().float(), torch.round(i.detach().float()), torch.round(f.detach().float())


def _describe(t: torch.Tensor) -> str:
    lo, hi = float(t.min()), float(t.max())
    return f"{lo:g}" if lo == hi else f"{lo:g}..{hi:g}"


def format_problem(q: nn.Module, x: torch.Tensor) -> str | None:
    """Why ``q``'s format cannot represent ``x`` (None if it can, at least mostly)."""
    kif = _kif(q)
    if kif is None or not getattr(q, "enabled", True):
        return None
    k, i, f = kif
    x = x.detach()
    if not x.is_floating_point():
        x = x.float()  # (a float64 model stays float64: no float32 kernels asked for)
    try:
        k, i, f = (t.expand_as(x) if t.dim() else t for t in (k, i, f))
    except RuntimeError:
        return None  # a per-feature format that does not broadcast to this view
    relevant = torch.where(k > 0, x != 0, x > 0)  # unsigned: negatives clamp to 0 by design
    n = int(relevant.sum())
    if n == 0:
        return None
    with torch.no_grad():
        y = q(x)
    amax = float(x[relevant].abs().max())
    fmt = f"k={_describe(k)}, i={_describe(i)}, f={_describe(f)}"
    if bool((y[relevant] == 0).all()):
        return (f"format {fmt} rounds every value to 0 (largest |x| {amax:.3g}, step "
                f"{float(torch.exp2(-f).min()):.3g}): raise the fractional bits")
    step = torch.exp2(-f)
    hi = torch.exp2(i) - step
    lo = -k * torch.exp2(i)
    outside = ((x > hi + step / 2) | (x < lo - step / 2)) & relevant
    share = int(outside.sum()) / n
    if share > SATURATED_SHARE:
        return (f"format {fmt} holds |x| <= {float(hi.max()):.3g} but {share:.0%} of the "
                f"values lie outside (largest |x| {amax:.3g}): raise the integer bits")
    return None


def range_warnings(model: nn.Module, example: torch.Tensor | None) -> list[str]:
    """Messages for quantizers whose format cannot represent their observed values.

    Args:
        model: a converted model (its layers' formats as configured or learned so far).
        example: one input batch for the data quantizers (None: weights only).
    """
    inputs: dict[str, torch.Tensor] = {}
    # (the layers: modules with the PQ layer interface's input and output quantizer slots --
    # pquant.nn.base.PQModule; quant sits below nn and does not import it)
    layers = {name: m for name, m in model.named_modules()
              if hasattr(m, "input_quantizer") and hasattr(m, "output_quantizer")}
    handles = []
    for name, layer in layers.items():
        def grab(module, args, name=name):
            if args and isinstance(args[0], torch.Tensor):
                inputs.setdefault(name, args[0].detach())
        handles.append(layer.register_forward_pre_hook(grab))
    was_training = model.training
    try:
        if example is not None:
            model.eval()
            with torch.no_grad():
                model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    messages = []
    for name, layer in layers.items():
        checks = [("input", getattr(layer, "input_quantizer", None), inputs.get(name))]
        weight = getattr(layer, "weight", None)
        checks.append(("weight", getattr(layer, "weight_quantizer", None), weight))
        for role, q, x in checks:
            if q is None or x is None or getattr(q, "bypass", False):
                continue
            problem = format_problem(q, x)
            if problem:
                messages.append(
                    f"{name} ({role}): {problem} (quantization.default_"
                    f"{'weight' if role == 'weight' else 'data'}_integer_bits / _fractional_bits"
                    f" or quantization.layer_specific.{name}.{role})")
    return messages
