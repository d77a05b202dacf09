"""The fused CPU kernels' description of a constant fixed-point format (see :mod:`pquant.kernels`).

The kernels know nothing of quantizers: each quantizer builds the spec it can be run with
(:meth:`pquant.quant.base.Quantizer.fused_spec`); this module turns a precomputed
:class:`~pquant.quant.fixed_point.QuantPlan` into the extension's ``FixedSpec``.
"""

from __future__ import annotations

import torch

from pquant import kernels
from pquant.quant.modes import ROUND_INDEX

_F32 = torch.float32


def fixed_spec(plan, like):
    """The extension's ``FixedSpec`` for a :class:`~pquant.quant.fixed_point.QuantPlan` applied
    to tensors shaped like ``like`` -- or None when the kernels are off, the tensor is not a
    float32 CPU tensor, or the format is not one they implement (wrapping modes in eval)."""
    if like.device.type != "cpu" or like.dtype is not _F32:
        return None
    ext = kernels.get()
    if ext is None:
        return None
    clip = plan.clip
    if clip is None or plan.wrap is not None:
        return None
    mode = ROUND_INDEX[plan.round_mode]
    if not isinstance(clip[0], torch.Tensor):
        return ext.FixedSpec(clip[0], clip[1], plan.scale, plan.inv_scale, mode, plan.code_clip)
    if plan.code_clip is not None:  # pragma: no cover - per-element plans have no code clip
        return None
    parts = (clip[0], clip[1], plan.scale, plan.inv_scale)
    try:
        shape = torch.broadcast_shapes(like.shape, *(p.shape for p in parts))
    except RuntimeError:
        return None
    if shape != like.shape:
        return None
    lo, hi, scale, inv = (torch.broadcast_to(p, shape).contiguous() for p in parts)
    return ext.FixedSpec.per_element(lo, hi, scale, inv, mode)
