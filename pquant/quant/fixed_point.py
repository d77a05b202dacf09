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
def _round_half_up_(z: torch.Tensor) -> torch.Tensor:
    """RND in place: ``floor(z) + (z - floor(z) >= 1/2)``, exact for every float.

    The shortcut ``floor(z + 0.5)`` is not exact: for ``z`` just below a tie (``0.49999997``)
    or above ``2**23`` (float32) the sum itself rounds up to the next integer. The fraction
    ``z - floor(z)`` may round only for small negative ``z``, and never across 1/2.
    """
    low = torch.floor(z)
    return z.sub_(low).ge_(0.5).add_(low)


def _fix_trn_underflow_(codes: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """TRN codes of negative values are at most -1; with ``f < 0`` the product ``x * 2**f`` of a
    denormal ``x`` underflows to -0, whose floor is 0. ``negative`` is ``x < 0``."""
    return codes.sub_(torch.logical_and(negative, codes == 0).to(codes.dtype))


def _round_inplace(z: torch.Tensor, mode: RoundMode) -> torch.Tensor:
    """Round ``z`` (values in LSB units) in place to integers according to ``mode``.

    Exact for every float (checked against ap_fixed in ``tests/quant/test_ap_fixed_oracle.py``):
    the nearest modes other than RND_CONV reduce to the exact RND by symmetry.
    """
    if mode is RoundMode.RND:
        return _round_half_up_(z)
    if mode is RoundMode.TRN:
        return z.floor_()
    if mode is RoundMode.RND_CONV:
        return z.round_()
    if mode is RoundMode.TRN_ZERO:
        return z.trunc_()
    if mode is RoundMode.RND_MIN_INF:  # ties toward -inf: -RND(-z)
        return _round_half_up_(z.neg_()).neg_()
    sign = z.clone()
    if mode is RoundMode.RND_INF:  # ties away from zero: sign * RND(|z|)
        return _round_half_up_(z.abs_()).copysign_(sign)
    if mode is RoundMode.RND_ZERO:  # ties toward zero: sign * RND_MIN_INF(|z|)
        return _round_half_up_(z.abs_().neg_()).neg_().copysign_(sign)
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


def _low_bound(k, hi, pow_i, mode: OverflowMode):
    """The lowest value ``-k * 2**i`` -- or ``-k * hi`` for SAT_SYM, except in a 1-bit signed
    format (``hi == 0``), where ap_fixed's SAT_SYM saturates to ``-2**i`` like SAT."""
    if mode is not OverflowMode.SAT_SYM:
        return -k * pow_i
    if isinstance(hi, torch.Tensor) or isinstance(pow_i, torch.Tensor):
        return -k * torch.where(torch.as_tensor(hi) > 0, hi, pow_i)
    return -k * (hi if hi > 0 else pow_i)


def format_range(k: BitsLike, i: BitsLike, f: BitsLike, overflow_mode="SAT"):
    """Lower and upper representable value of the format ``(k, i, f)``.

    For ``SAT_SYM`` the lower bound is ``-k * (2**i - 2**-f)`` (``-k * 2**i`` in a 1-bit signed
    format, as ap_fixed does); for the other modes ``-k * 2**i``.
    Returns python floats for number inputs, tensors otherwise.
    """
    mode = as_overflow_mode(overflow_mode)
    if all(_is_number(v) for v in (k, i, f)):
        i_eff = max(i, -f)
        hi = 2.0**i_eff - 2.0**-f
        lo = _low_bound(k, hi, 2.0**i_eff, mode)
        return float(lo), float(hi)
    k_t, i_t, f_t = (torch.as_tensor(v, dtype=torch.float32) for v in (k, i, f))
    i_eff = torch.maximum(i_t, -f_t)
    hi = torch.exp2(i_eff) - torch.exp2(-f_t)
    lo = _low_bound(k_t, hi, torch.exp2(i_eff), mode)
    return lo, hi


# ----------------------------------------------------------------------------------- wrapping
def _wrap_codes(codes: torch.Tensor, lo_code, period, reflect: bool,
                unrounded: torch.Tensor | None = None) -> torch.Tensor:
    """Wrap rounded integer codes into ``[lo_code, lo_code + period)`` as ap_fixed does.

    ``AP_WRAP`` (``reflect=False``) is two's complement: modular arithmetic. ``AP_WRAP_SM``
    (``reflect=True``, signed formats only) starts from the same two's-complement code ``V`` and,
    where the rounded code overflowed, inverts all its bits (``V -> -V - 1``) when its sign bit
    differs from bit ``W`` of the code *before* rounding, ``floor(unrounded)`` -- what
    ``ap_fixed_base::overflow_adjust`` does (checked against the library in
    ``tests/quant/test_ap_fixed_oracle.py``). Non-finite codes become 0, as ap_fixed converts
    +-inf in the wrapping modes.

    Args:
        codes: rounded codes (integers in float), modified in place.
        lo_code, period: ``-k * 2**(W-1)`` and ``2**W`` (numbers or broadcastable tensors).
        reflect: WRAP_SM instead of WRAP.
        unrounded: ``x * 2**f`` before rounding (needed for WRAP_SM).
    """
    codes = codes.nan_to_num_(0.0, 0.0, 0.0)
    # exact for any magnitude: remainder is exact, ``codes - lo_code`` would round
    rem = torch.remainder(codes, period)
    wrapped = torch.where(rem >= period + lo_code, rem - period, rem)
    if not reflect:
        return wrapped
    bit_w = torch.floor(unrounded.nan_to_num(0.0, 0.0, 0.0) / period).remainder_(2)
    flip = wrapped.ne(codes).logical_and_(bit_w.eq(1).ne_(wrapped.lt(0)))
    return torch.where(flip, -wrapped - 1, wrapped)


def check_wrap_sm_signed(k, overflow_mode, where: str = "quantize") -> None:
    """Refuse ``WRAP_SM`` for unsigned formats: ap_fixed has no ``ap_ufixed<..., AP_WRAP_SM>``.

    Raises:
        ValueError: ``overflow_mode`` is WRAP_SM and some ``k`` is 0 (the message names
            ``where`` and the settings to change).
    """
    if as_overflow_mode(overflow_mode) is not OverflowMode.WRAP_SM:
        return
    if bool((torch.as_tensor(k) == 0).any()):
        raise ValueError(
            f"{where}: overflow mode WRAP_SM needs a signed format: ap_fixed has no "
            f"ap_ufixed<..., AP_WRAP_SM>. Set keep_negatives=1 for it, or use WRAP, SAT or "
            f"SAT_SYM (quantization.overflow_mode_data / overflow_mode_parameters, or the "
            f"layer's layer_specific entry); got keep_negatives=0 with WRAP_SM")


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
        code_clip: integer code bounds, only where the clip floats round outside the range
            (TRN: floor of a value just below ``lo`` falls one code too low; a grid as fine as
            the dtype's); elsewhere the rounding lands on the bounds by itself.
        wrap: ``(lo_code, period, reflect)`` for wrapping modes in eval, else None.
        trn_underflow: TRN with some ``f < 0``: ``x * 2**f`` of a denormal can underflow to
            -0 (see :func:`_fix_trn_underflow_`).
    """

    round_mode: RoundMode
    scale: float | torch.Tensor
    inv_scale: float | torch.Tensor
    clip: tuple | None
    code_clip: tuple | None
    wrap: tuple | None
    trn_underflow: bool = False


_NO_GRAD = torch.no_grad()


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
    check_wrap_sm_signed(k, omode)
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
        lo = _low_bound(k, hi, pow_i, omode)
        if scalar:
            lo, hi = float(lo) + 0.0, float(hi)
            clip = _outside(lo, hi, like.dtype)
            # the floats just outside usually round back onto the bounds; where they do not
            # (TRN below lo; a grid as fine as the dtype's, e.g. 24-bit formats in float32)
            # the codes are clipped too
            edge = torch.tensor(clip, dtype=like.dtype)
            negative = edge < 0
            _round_inplace(edge.mul_(scale), rmode)
            if rmode is RoundMode.TRN and f < 0:
                _fix_trn_underflow_(edge, negative)
            if edge[0] < lo * scale or edge[1] > hi * scale:
                code_clip = (lo * scale, hi * scale)
        else:
            lo = torch.broadcast_to(torch.as_tensor(lo, dtype=hi.dtype, device=hi.device), hi.shape)
            clip = (lo, hi)
    elif not training:
        wrap = (-k * period / 2, period, omode is OverflowMode.WRAP_SM)
    trn_underflow = rmode is RoundMode.TRN and bool((torch.as_tensor(f) < 0).any())
    return QuantPlan(rmode, scale, inv_scale, clip, code_clip, wrap, trn_underflow)


def make_kernel(plan: QuantPlan, like: torch.Tensor):
    """A function ``x -> quantized x`` for ``plan`` (specialised for the common fast case).

    The common case -- scalar saturating format, RND rounding, codes well inside the dtype's
    integer range -- becomes a closure with every constant bound in advance: one ``hardtanh``
    plus five in-place ops, no Python branching. Everything else goes through
    :func:`apply_plan`.
    """
    clip = plan.clip
    simple = (clip is not None and not isinstance(clip[0], torch.Tensor)
              and plan.round_mode is RoundMode.RND and plan.code_clip is None
              and plan.wrap is None
              and max(-clip[0], clip[1]) * plan.scale * 2 < 1.0 / torch.finfo(like.dtype).eps)
    if not simple:
        return lambda x: apply_plan(x, plan)
    below, above = clip
    scale2, inv_scale = plan.scale * 2, plan.inv_scale
    half = torch.tensor(0.5, dtype=like.dtype, device=like.device)
    hardtanh = torch._C._nn.hardtanh
    add = torch.add

    def kernel(x: torch.Tensor) -> torch.Tensor:
        y = hardtanh(x, below, above)
        # Round through a detached alias: no autograd recording, no grad-mode switching. The
        # hardtanh node saved its input, not ``y``, so rewriting ``y`` in place is safe.
        # RND exactly: floor(z + 1/2) = floor((floor(2 z) + 1) / 2), every step exact for
        # codes below 2**(mantissa - 1) (floor(z + 0.5) itself is not, see _round_half_up_).
        codes = y.detach().mul_(scale2).floor_()
        add(half, codes, alpha=0.5, out=codes).floor_().mul_(inv_scale)
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
        negative = y < 0 if plan.trn_underflow else None
        y.mul_(plan.scale)
        wrap = plan.wrap
        unrounded = y.clone() if wrap is not None and wrap[2] else None
        _round_inplace(y, plan.round_mode)
        if negative is not None:
            _fix_trn_underflow_(y, negative)
        if plan.code_clip is not None:
            y.clamp_(*plan.code_clip)
        if wrap is not None:
            y.copy_(_wrap_codes(y, *wrap, unrounded))
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
        lo = _low_bound(k, hi, torch.exp2(i_eff), omode)
        xc = torch.where(x > hi, hi, torch.where(x < lo, lo, x))
    elif training:
        xc = x
    else:  # wrapping in eval: +-inf wrap to 0 (and must not make inf - inf below)
        xc = torch.nan_to_num(x, 0.0, 0.0, 0.0)
    z = (xc * torch.exp2(f)).detach()
    codes = _round_inplace(z.clone(), rmode)
    if rmode is RoundMode.TRN:
        _fix_trn_underflow_(codes, xc.detach() < 0)
    if not omode.saturating and not training:
        period = torch.exp2(k + i_eff + f).detach()
        codes = _wrap_codes(codes, -k.detach() * period / 2, period,
                            omode is OverflowMode.WRAP_SM, z)
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
    check_wrap_sm_signed(k, omode)
    learnable = any(isinstance(v, torch.Tensor) and v.requires_grad for v in (k, i, f))
    if learnable:
        return _quantize_differentiable(x, k, i, f, rmode, omode, training)
    return apply_plan(x, plan_constant(k, i, f, rmode, omode, training, x))
