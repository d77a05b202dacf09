"""Pure fixed-point quantization ops.

A fixed-point format is a triple ``(k, i, f)``:

* ``k`` in {0, 1} -- keep negatives (a sign bit is present);
* ``i`` -- integer bits *excluding* the sign bit (may be zero or negative);
* ``f`` -- fractional bits (may be negative: a grid coarser than 1).

The total width is ``k + i + f`` bits, the step (LSB) is ``2**-f`` and the saturating range is
``[-k * 2**i, 2**i - 2**-f]``. The integer bits are floored at ``-f`` (``i_eff = max(i, -f)``) so that
the upper bound always lies on the grid.

``quantize`` is the single entry point. With plain numbers (or tensors that do not require grad)
for ``k, i, f`` it runs a fused straight-through kernel: the forward value is the fixed-point value,
the gradient with respect to ``x`` is 1 inside the representable range and 0 where a saturating
mode clipped the value. When ``i`` or ``f`` require grad (learnable bit-widths), a differentiable
formulation is used instead: the bounds receive gradient from clipped values and ``f`` receives
``-ln2 * (q(x) - x)`` from the rounding error (HGQ's surrogate gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pquant.quant.modes import OverflowMode, RoundMode, as_overflow_mode, as_round_mode

Number = int | float
BitsLike = Number | torch.Tensor

__all__ = [
    "quantize", "round_codes", "bit_width", "format_range", "plan_constant", "apply_plan",
    "make_kernel",
]


# ----------------------------------------------------------------------------------- rounding
def _round_inplace(z: torch.Tensor, mode: RoundMode) -> torch.Tensor:
    """Round ``z`` (values in LSB units) in place to integers according to ``mode``."""
    if mode is RoundMode.RND:
        return z.add_(0.5).floor_()
    if mode is RoundMode.TRN:
        return z.floor_()
    if mode is RoundMode.RND_CONV:
        return z.round_()
    if mode is RoundMode.TRN_ZERO:
        return z.trunc_()
    if mode is RoundMode.RND_MIN_INF:
        return z.sub_(0.5).ceil_()
    sign = torch.sign(z)
    if mode is RoundMode.RND_ZERO:
        return z.abs_().sub_(0.5).ceil_().mul_(sign)
    if mode is RoundMode.RND_INF:
        return z.abs_().add_(0.5).floor_().mul_(sign)
    raise ValueError(f"unknown round mode {mode!r}")  # pragma: no cover - enum is closed


def round_codes(z: torch.Tensor, round_mode: RoundMode | str = "RND") -> torch.Tensor:
    """Round values measured in LSBs to integer codes (out of place, no gradient handling).

    Args:
        z: any tensor, values in units of the LSB (``x * 2**f``).
        round_mode: one of the seven :class:`RoundMode` names.

    Returns:
        A new tensor of the same shape holding integers.
    """
    return _round_inplace(z.clone(), as_round_mode(round_mode))


# ----------------------------------------------------------------------------------- formats
def bit_width(k: BitsLike, i: BitsLike, f: BitsLike) -> BitsLike:
    """Total width ``k + max(i, -f) + f`` in bits (element-wise for tensors)."""
    if isinstance(i, torch.Tensor) or isinstance(f, torch.Tensor):
        i_t, f_t = torch.as_tensor(i), torch.as_tensor(f)
        return k + torch.maximum(i_t, -f_t) + f_t
    return k + max(i, -f) + f


def _is_number(v) -> bool:
    return isinstance(v, (int, float))


def format_range(k: BitsLike, i: BitsLike, f: BitsLike, overflow_mode="SAT"):
    """Lower and upper representable value of the format ``(k, i, f)``.

    For ``SAT_SYM`` the lower bound is ``-k * (2**i - 2**-f)``; for the other modes ``-k * 2**i``.
    Returns python floats for number inputs, tensors otherwise.
    """
    mode = as_overflow_mode(overflow_mode)
    if all(_is_number(v) for v in (k, i, f)):
        i_eff = max(i, -f)
        hi = 2.0**i_eff - 2.0**-f
        lo = -k * (hi if mode is OverflowMode.SAT_SYM else 2.0**i_eff)
        return float(lo), float(hi)
    k_t, i_t, f_t = (torch.as_tensor(v, dtype=torch.float32) for v in (k, i, f))
    i_eff = torch.maximum(i_t, -f_t)
    hi = torch.exp2(i_eff) - torch.exp2(-f_t)
    lo = -k_t * (hi if mode is OverflowMode.SAT_SYM else torch.exp2(i_eff))
    return lo, hi


# ----------------------------------------------------------------------------------- wrapping
def _wrap_codes(z: torch.Tensor, lo_code, period, reflect: bool) -> torch.Tensor:
    """Wrap integer codes into ``[lo_code, lo_code + period)``.

    Two's complement (``reflect=False``) is modular arithmetic. Sign-magnitude wrap
    (``reflect=True``, AP_WRAP_SM) folds the code: moving past the top of the range walks back
    down (the extreme code repeats), a triangle wave of period ``2 * period``.
    """
    if not reflect:
        return z.sub_(lo_code).remainder_(period).add_(lo_code)
    u = z.sub_(lo_code).remainder_(2 * period)
    return torch.where(u < period, u, 2 * period - 1 - u).add_(lo_code)


# ----------------------------------------------------------------------------------- fast path
@dataclass(frozen=True)
class QuantPlan:
    """Everything the fast kernel needs for one constant format, precomputed once.

    Attributes:
        round_mode: rounding of the codes.
        scale: ``2**f`` (number, or tensor for per-element formats).
        inv_scale: ``2**-f``.
        clip: ``(below, above)`` -- the floats just outside ``[lo, hi]`` for ``hardtanh``
            (scalar formats), ``(lo, hi)`` tensors for ``clamp`` (per-element formats), or None.
        code_clip: integer code bounds, only needed for TRN (floor of a value just below ``lo``
            would fall one code too low; the nearest modes land on the bound by themselves).
        wrap: ``(lo_code, period, reflect)`` for wrapping modes in eval, else None.
    """

    round_mode: RoundMode
    scale: float | torch.Tensor
    inv_scale: float | torch.Tensor
    clip: tuple | None
    code_clip: tuple | None
    wrap: tuple | None


_HALF: dict = {}
_NO_GRAD = torch.no_grad()


def _half(like: torch.Tensor) -> torch.Tensor:
    key = (like.device, like.dtype)
    t = _HALF.get(key)
    if t is None:
        t = _HALF[key] = torch.tensor(0.5, dtype=like.dtype, device=like.device)
    return t


def _outside(lo: float, hi: float, dtype: torch.dtype) -> tuple[float, float]:
    """The representable numbers of ``dtype`` just below ``lo`` and just above ``hi``."""
    lo_t = torch.tensor(lo, dtype=dtype)
    hi_t = torch.tensor(hi, dtype=dtype)
    below = torch.nextafter(lo_t, torch.tensor(-float("inf"), dtype=dtype))
    above = torch.nextafter(hi_t, torch.tensor(float("inf"), dtype=dtype))
    return float(below), float(above)


def plan_constant(k, i, f, round_mode, overflow_mode, training: bool,
                  like: torch.Tensor) -> QuantPlan:
    """Precompute a :class:`QuantPlan` for a constant format (numbers or non-grad tensors)."""
    rmode, omode = as_round_mode(round_mode), as_overflow_mode(overflow_mode)
    if all(_is_number(v) for v in (k, i, f)):
        i_eff = max(i, -f)
        scale, inv_scale = 2.0**f, 2.0**-f
        pow_i = 2.0**i_eff
        period = 2.0 ** (k + i_eff + f)
        scalar = True
    else:
        k, i, f = (torch.as_tensor(v, dtype=like.dtype, device=like.device) for v in (k, i, f))
        i_eff = torch.maximum(i, -f)
        scale, inv_scale = torch.exp2(f), torch.exp2(-f)
        pow_i = torch.exp2(i_eff)
        period = torch.exp2(k + i_eff + f)
        scalar = False
    clip = code_clip = wrap = None
    if omode.saturating:
        hi = pow_i - inv_scale
        lo = -k * (hi if omode is OverflowMode.SAT_SYM else pow_i)
        if scalar:
            lo, hi = float(lo) + 0.0, float(hi)
            clip = _outside(lo, hi, like.dtype)
            if rmode is RoundMode.TRN:
                code_clip = (lo * scale, hi * scale)
        else:
            lo = torch.broadcast_to(torch.as_tensor(lo, dtype=hi.dtype, device=hi.device), hi.shape)
            clip = (lo, hi)
    elif not training:
        wrap = (-k * period / 2, period, omode is OverflowMode.WRAP_SM)
    return QuantPlan(rmode, scale, inv_scale, clip, code_clip, wrap)


def make_kernel(plan: QuantPlan, like: torch.Tensor):
    """A function ``x -> quantized x`` for ``plan`` (specialised for the common fast case).

    The common case -- scalar saturating format, RND rounding -- becomes a closure with every
    constant bound in advance: one ``hardtanh`` plus three in-place ops, no Python branching.
    Everything else goes through :func:`apply_plan`.
    """
    clip = plan.clip
    simple = (clip is not None and not isinstance(clip[0], torch.Tensor)
              and plan.round_mode is RoundMode.RND and plan.code_clip is None
              and plan.wrap is None)
    if not simple:
        return lambda x: apply_plan(x, plan)
    below, above = clip
    scale, inv_scale = plan.scale, plan.inv_scale
    half = _half(like)
    hardtanh = torch._C._nn.hardtanh
    add = torch.add

    def kernel(x: torch.Tensor) -> torch.Tensor:
        y = hardtanh(x, below, above)
        # Round through a detached alias: no autograd recording, no grad-mode switching. The
        # hardtanh node saved its input, not ``y``, so rewriting ``y`` in place is safe.
        codes = y.detach()
        add(half, codes, alpha=scale, out=codes).floor_().mul_(inv_scale)
        return y

    return kernel


def apply_plan(x: torch.Tensor, plan: QuantPlan) -> torch.Tensor:
    """Quantize ``x`` with a precomputed plan; straight-through gradient.

    The differentiable part is one built-in op: ``hardtanh`` with bounds one float outside
    ``[lo, hi]`` (its backward passes the gradient exactly where ``lo <= x <= hi``, in a single
    fused kernel), ``clamp`` for per-element bounds, or ``clone`` (identity gradient) for the
    wrapping modes. Rounding then happens in place under ``no_grad``: the clipping op saved its
    *input* for backward, so rewriting its output is safe, and the gradient is the STE's.
    """
    clip = plan.clip
    if clip is None:
        y = x.clone()
    elif isinstance(clip[0], torch.Tensor):
        y = torch.clamp(x, clip[0], clip[1])
    else:
        y = F.hardtanh(x, clip[0], clip[1])
    with _NO_GRAD:
        scale = plan.scale
        if plan.round_mode is RoundMode.RND and not isinstance(scale, torch.Tensor):
            torch.add(_half(y), y, alpha=scale, out=y).floor_()
        else:
            _round_inplace(y.mul_(scale), plan.round_mode)
        if plan.code_clip is not None:
            y.clamp_(*plan.code_clip)
        if plan.wrap is not None:
            wrapped = _wrap_codes(y, *plan.wrap)
            if wrapped is not y:
                y.copy_(wrapped)
        y.mul_(plan.inv_scale)
    return y


# ----------------------------------------------------------------------------------- grad path
def _quantize_differentiable(x, k, i, f, rmode, omode, training):
    """Quantize with gradients to ``i`` and ``f`` (learnable bit-widths, HGQ)."""
    k, i, f = (torch.as_tensor(v, dtype=x.dtype, device=x.device) for v in (k, i, f))
    i_eff = i + (torch.maximum(i, -f) - i).detach()
    step = torch.exp2(-f)
    if omode.saturating:
        hi = torch.exp2(i_eff) - step
        lo = -k * (hi if omode is OverflowMode.SAT_SYM else torch.exp2(i_eff))
        xc = torch.where(x > hi, hi, torch.where(x < lo, lo, x))
    else:
        xc = x
    z = (xc * torch.exp2(f)).detach()
    codes = _round_inplace(z.clone(), rmode)
    if not omode.saturating and not training:
        period = torch.exp2(k + i_eff + f).detach()
        codes = _wrap_codes(codes, -k.detach() * period / 2, period, omode is OverflowMode.WRAP_SM)
    # value: exactly codes * step; gradient: 1 to x (through the clip), -ln2 * (q - x) to f
    # from the rounding error, and the clip bounds' derivatives for clipped values.
    return codes * step.detach() + (xc - xc.detach()) + (codes - z) * (step - step.detach())


# ----------------------------------------------------------------------------------- entry
def quantize(
    x: torch.Tensor,
    k: BitsLike,
    i: BitsLike,
    f: BitsLike,
    round_mode: RoundMode | str = "RND",
    overflow_mode: OverflowMode | str = "SAT",
    training: bool = False,
) -> torch.Tensor:
    """Map ``x`` onto the fixed-point grid ``(k, i, f)`` with a straight-through gradient.

    Args:
        x: tensor of any shape.
        k: keep-negatives, 0 or 1 (number or tensor broadcastable to ``x``).
        i: integer bits without the sign bit (number or tensor broadcastable to ``x``).
        f: fractional bits (number or tensor broadcastable to ``x``).
        round_mode: ``TRN, RND, RND_CONV, TRN_ZERO, RND_ZERO, RND_MIN_INF, RND_INF``.
        overflow_mode: ``SAT, SAT_SYM, WRAP, WRAP_SM``. Saturating modes clip before rounding.
            Wrapping modes only wrap when ``training`` is False; in training they round only, so
            gradients stay alive across the discontinuity.
        training: selects the training behaviour of the wrapping modes.

    Returns:
        Tensor of the shape of ``x`` (broadcast with the bit tensors) holding fixed-point values.
    """
    rmode, omode = as_round_mode(round_mode), as_overflow_mode(overflow_mode)
    learnable = any(isinstance(v, torch.Tensor) and v.requires_grad for v in (k, i, f))
    if learnable:
        return _quantize_differentiable(x, k, i, f, rmode, omode, training)
    return apply_plan(x, plan_constant(k, i, f, rmode, omode, training, x))
