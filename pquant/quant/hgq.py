"""HGQ: fixed-point quantizers with learnable bit-widths.

C. Sun et al., "HGQ: High Granularity Quantization for Real-time Neural Networks on FPGAs"
(arXiv 2405.00645). The fractional bits ``f`` (and, for the saturating modes, the integer bits
``i``) are trainable parameters -- one per tensor, per channel, per weight or per feature. The
forward uses them rounded to integers with a straight-through estimator; gradients reach them
through the rounding error (``-ln2 * (q(x) - x)`` for ``f``) and the clipping bounds (values that
saturate push ``i`` up), while the EBOPs term (``hgq_beta``) and the width regulariser
(``hgq_gamma``) push them down. With ``WRAP`` the integer bits are not learned but follow the
observed range of the data.

Parameters exist from construction, with their final shapes: an optimizer built from
``model.parameters()`` right after conversion trains them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from pquant import kernels
from pquant.distributed import all_reduce_
from pquant.quant import costs
from pquant.quant.base import Quantizer
from pquant.quant.fixed_point import (
    _fix_trn_underflow_,
    _low_bound,
    _round_inplace,
    _wrap_codes,
    check_wrap_sm_signed,
)
from pquant.quant.granularity import Granularity
from pquant.quant.modes import (
    ROUND_INDEX,
    OverflowMode,
    RoundMode,
    as_overflow_mode,
    as_round_mode,
)
from pquant.quant.quantizer import FixedPointQuantizer
from pquant.quant.registry import QuantizerConfig
from pquant.quant.spec import QuantSpec

#: Valid range of the learnable bits (clamped after every epoch and when frozen).
F_RANGE = (-24.0, 24.0)
I_RANGE = (-23.0, 23.0)


def round_ste(t: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer (half to even) with an identity gradient."""
    return t + (torch.round(t) - t).detach()


_LN2 = math.log(2.0)
_F32 = torch.float32


def _reduce_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum ``t`` over the dimensions that ``shape`` broadcasts, giving a tensor of ``shape``.

    The sum runs in float64 and is rounded once to ``t``'s dtype: summation order then hardly
    matters, and the fused kernel (which sums in its own order) agrees to float rounding."""
    if t.shape == shape:
        return t
    lead = t.dim() - len(shape)
    dims = list(range(lead)) + [lead + d for d, n in enumerate(shape)
                                if n == 1 and t.shape[lead + d] != 1]
    if not dims:
        return t.reshape(shape)
    return t.sum(dim=dims, keepdim=True, dtype=torch.float64).to(t.dtype).reshape(shape)


@dataclass
class _Plan:
    """Everything derived from the bit parameters, computed once per parameter update.

    ``bits`` (``k + relu(i + f)``), ``active`` (``i + f > 0``), the grid (``scale = 2**f``,
    ``step = 2**-f``), the clip bounds, and the coefficients that turn the sums of the gradient
    over top- and bottom-clipped values into gradients for ``i`` and ``f``.
    """

    bits: torch.Tensor
    active: torch.Tensor
    scale: torch.Tensor
    step: torch.Tensor
    lo: torch.Tensor | None
    hi: torch.Tensor | None
    wrap: tuple | None
    gi_outside: torch.Tensor | None
    gi_signed: torch.Tensor | None
    gf_outside: torch.Tensor | None
    gf_signed: torch.Tensor | None


def _make_plan(k, i_raw, f_raw, learn_i: bool, overflow_mode: OverflowMode,
               training: bool) -> _Plan:
    """Derive a :class:`_Plan` (no autograd)."""
    with torch.no_grad():
        f = torch.round(f_raw)
        i = torch.round(i_raw) if learn_i else i_raw
        neg_f = -f
        i_eff = torch.maximum(i, neg_f)
        width = i_eff + f
        powers = torch.exp2(torch.stack((neg_f, f, i_eff)))
        step, scale, pow_i = powers[0], powers[1], powers[2]
        lo = hi = wrap = None
        gi_o = gi_s = gf_o = gf_s = None
        if overflow_mode.saturating:
            hi = pow_i - step
            lo = _low_bound(k, hi, pow_i, overflow_mode)
            # d hi/d i = ln2 2**i at the top; d lo/d i = -k ln2 2**i at the bottom. With
            # S_out = sum over clipped values, S_sgn = signed sum: top = (S_out + S_sgn) / 2,
            # bottom = (S_out - S_sgn) / 2.
            half_i = (0.5 * _LN2) * pow_i
            gi_o, gi_s = half_i * (1 - k), half_i * (1 + k)
            half_f = (0.5 * _LN2) * step
            if overflow_mode is OverflowMode.SAT_SYM:  # (SAT's in 1-bit signed formats)
                sym = width > 0
                gf_o = torch.where(sym, half_f * (1 - k), half_f)
                gf_s = torch.where(sym, half_f * (1 + k), half_f)
            else:
                gf_o = gf_s = half_f
        elif not training:
            period = torch.exp2(k + width)
            wrap = (-k * period / 2, period, overflow_mode is OverflowMode.WRAP_SM)
        return _Plan(width + k, (width > 0).to(width.dtype), scale, step, lo, hi, wrap,
                     gi_o, gi_s, gf_o, gf_s)


class _HGQQuantize(torch.autograd.Function):
    """Fused HGQ quantizer: clip + round forward, analytic backward without boolean tensors.

    Takes the raw (continuous) bit parameters and a :class:`_Plan` derived from their rounded
    values; the backward passes gradients straight through the rounding. Gradients:

    * ``x``: 1 inside ``[lo, hi]``, 0 where clipped;
    * ``f``: ``-ln2 * (q - x_clipped)`` (rounding error) plus ``d hi / d f = ln2 * 2**-f`` for
      values clipped at the top (and ``d lo / d f`` for SAT_SYM at the bottom);
    * ``i``: ``d hi / d i = ln2 * 2**i`` at the top, ``d lo / d i = -k ln2 2**i`` at the bottom.

    These are exactly the derivatives of the composed expression in
    :func:`pquant.quant.fixed_point.quantize` (tested against it). The second output is the width
    per bit element, ``k + relu(i + f)``, whose gradient joins the same backward -- the EBOPs and
    width losses reuse it instead of rebuilding it.
    """

    @staticmethod
    def forward(ctx, x, i_raw, f_raw, plan: _Plan, round_mode):
        ctx.set_materialize_grads(False)
        xc = x if plan.lo is None else torch.clamp(x, plan.lo, plan.hi)
        codes = xc * plan.scale
        wrap = plan.wrap
        unrounded = codes.clone() if wrap is not None and wrap[2] else None
        _round_inplace(codes, round_mode)
        if round_mode is RoundMode.TRN:
            _fix_trn_underflow_(codes, xc < 0)
        if wrap is not None:
            codes = _wrap_codes(codes, *wrap, unrounded)
        q = codes.mul_(plan.step)
        ctx.plan = plan
        ctx.shapes = (i_raw.shape, f_raw.shape)
        ctx.save_for_backward(x, xc, q)
        return q, plan.bits.clone()

    @staticmethod
    def backward(ctx, grad, grad_bits):
        x, xc, q = ctx.saved_tensors
        plan: _Plan = ctx.plan
        i_shape, f_shape = ctx.shapes
        need_x, need_i, need_f = ctx.needs_input_grad[0:3]
        gx = gi = gf = None
        if grad is not None:
            if plan.lo is not None:
                side = torch.sub(x, xc).sign_()  # +1 clipped at the top, -1 at the bottom
                outside = side.abs()
                if need_x:
                    gx = torch.addcmul(grad, grad, outside, value=-1.0)
                if need_i or need_f:
                    shape = i_shape if need_i else f_shape
                    s_out = _reduce_to(grad * outside, shape)
                    s_sgn = _reduce_to(grad * side, shape)
                    if need_i:  # (products and sums as separate ops: no fused multiply-add,
                        # whose use by addcmul depends on the CPU)
                        gi = plan.gi_outside * s_out + plan.gi_signed * s_sgn
            elif need_x:
                gx = grad
            if need_f:
                gf = _reduce_to(grad * (q - xc), f_shape).mul_(-_LN2)
                if plan.lo is not None:
                    gf = gf.reshape(s_out.shape) if gf.shape != s_out.shape else gf
                    gf = (gf + plan.gf_outside * s_out) + plan.gf_signed * s_sgn
        if grad_bits is not None:  # widths k + relu(i + f): straight through the rounding
            through = grad_bits * plan.active
            if need_f:
                gf = through if gf is None else gf.reshape(through.shape) + through
            if need_i:
                gi = through if gi is None else gi.reshape(through.shape) + through
        if gf is not None:
            gf = gf.reshape(f_shape)
        if gi is not None:
            gi = gi.reshape(i_shape)
        return gx, gi, gf, None, None


@dataclass
class HGQConfig(QuantizerConfig):
    """HGQ's learnable bit-widths (``quantization=hgq``; the weights of its loss terms,
    ``hgq_beta`` and ``hgq_gamma``, and ``data_granularity`` are settings of the section)."""

    name: ClassVar[str] = "hgq"
    _target_: str = "pquant.quant.hgq.HGQQuantizer"


class HGQQuantizer(Quantizer):
    """Quantizer with trainable integer/fractional bits.

    Args:
        k, i, f: initial format (``k`` stays fixed).
        round_mode, overflow_mode: as for fixed formats.
        shape: shape of the bit tensors (``()`` per tensor, ``(O, 1, ...)`` per channel, the
            weight shape per weight, ``(F,)``/``(C, 1[, 1])`` per feature).
    """

    learnable = True
    mean_width_regularizer = True
    per_feature_data = True
    bias_follows_granularity = True

    def __init__(self, k: int, i: int, f: int, round_mode, overflow_mode,
                 shape: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.round_mode = as_round_mode(round_mode)
        self.overflow_mode = as_overflow_mode(overflow_mode)
        check_wrap_sm_signed(k, self.overflow_mode)
        self.register_buffer("k", torch.full(shape, float(k)))
        # integer bits learn from the clipping bounds; wrapping modes have none, so there they
        # follow the observed range of the data instead
        self.learn_i = self.overflow_mode.saturating
        if self.learn_i:  # one (2, *shape) parameter: i = i_f[0], f = i_f[1] (one optimizer tensor)
            self.i_f = nn.Parameter(torch.stack((torch.full(shape, float(i)),
                                                 torch.full(shape, float(f)))))
        else:
            self.f = nn.Parameter(torch.full(shape, float(f)))
            self.register_buffer("i", torch.full(shape, float(i)))
        self._register_load_state_dict_pre_hook(_split_keys_to_i_f, with_module=True)
        self._plan_key = None
        self._plan: _Plan | None = None

    # ------------------------------------------------------------------ bit tensors
    # (data descriptors: they win over nn.Module's attribute lookup; assignment still goes
    # through nn.Module.__setattr__, which registers ``f`` / ``i`` for the wrapping modes)
    @property
    def f(self) -> torch.Tensor:
        """Fractional bits (a view of ``i_f[1]`` for the saturating modes)."""
        return self._bit_tensor("f", 1, self._parameters)

    @property
    def i(self) -> torch.Tensor:
        """Integer bits (a view of ``i_f[0]`` for the saturating modes, else a buffer)."""
        return self._bit_tensor("i", 0, self._buffers)

    def _bit_tensor(self, name: str, row: int, own: dict) -> torch.Tensor:
        if "i_f" in self._parameters:
            return self._parameters["i_f"][row]
        if name in own:
            return own[name]
        raise AttributeError(name)  # (not registered yet: lets nn.Module register it)

    def bit_grads(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Gradients of the integer and fractional bits (``None`` before a backward)."""
        p = self._parameters
        if "i_f" in p:
            g = p["i_f"].grad
            return (None, None) if g is None else (g[0], g[1])
        return None, p["f"].grad

    # ------------------------------------------------------------------ bits
    def _i_f(self) -> tuple[torch.Tensor, torch.Tensor]:
        f = round_ste(self.f)
        i = round_ste(self.i) if self.learn_i else self.i
        return i, f

    def bits_for_loss(self, memo: dict | None = None) -> torch.Tensor:
        """Widths with gradient: those this step's forward reported into ``memo`` (a
        :class:`~pquant.quant.costs.StepCosts`), else recomputed (and kept in ``memo``)."""
        if memo is not None and id(self) in memo:
            return memo[id(self)]
        i, f = self._i_f()
        bits = self.k + torch.relu(i + f)
        if memo is not None:
            memo[id(self)] = bits
        return bits

    def _current_plan(self) -> _Plan:
        """The plan for the current bit parameters (recomputed only after they change)."""
        key = (self.training, self.f._version, self.i._version, self.f.data_ptr(),
               self.i.data_ptr(), self.k._version)
        if key != self._plan_key:
            self._plan = _make_plan(self.k, self.i, self.f, self.learn_i, self.overflow_mode,
                                    self.training)
            self._plan_key = key
        return self._plan

    @property
    def fuses_in_hgq_dense(self) -> bool:
        """The saturating modes (learned integer bits) run in the fused HGQ dense kernel."""
        return self.learn_i

    def kernel_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(i_f, k)`` as the fused kernels take them (saturating modes)."""
        return self._parameters["i_f"], self._buffers["k"]

    def report_bits(self, bits: torch.Tensor) -> None:
        """Report this forward's widths (with their graph) to the step's cost collector, if one
        is active (:mod:`pquant.quant.costs`) -- in training only."""
        if self.__dict__["training"]:
            costs.report_bits(self, bits)

    def bits(self) -> torch.Tensor:
        with torch.no_grad():
            return self.k + torch.relu(torch.round(self.i) + torch.round(self.f))

    def regularizer(self, memo: dict | None = None) -> torch.Tensor:
        return self.bits_for_loss(memo).mean()

    # ------------------------------------------------------------------ forward
    def _track_integer_bits(self, x: torch.Tensor, f: torch.Tensor) -> None:
        """WRAP: integer bits follow the observed range of the rounded data."""
        with torch.no_grad():
            a = x.detach().abs()
            reduce = [d for d in range(a.dim()) if d >= a.dim() - self.i.dim()
                      and self.i.shape[d - (a.dim() - self.i.dim())] == 1]
            reduce += list(range(a.dim() - self.i.dim()))
            if reduce:
                a = a.amax(dim=reduce, keepdim=True)
            a = a.reshape(self.i.shape) if a.numel() == self.i.numel() else a.amax()
            all_reduce_(a, "max")  # torchrun: the range of the global batch
            new_i = torch.ceil(torch.log2(a + torch.exp2(-f.detach()) + 1e-10))
            self.i.copy_(new_i.clamp(*I_RANGE).expand_as(self.i))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._quantize(x, False)

    def forward_relu(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(self(x))`` -- one fused pass with the kernels."""
        return self._quantize(x, True)

    def _quantize(self, x: torch.Tensor, relu: bool) -> torch.Tensor:
        # (runs for every quantizer at every step: tensors are read from the module's dicts,
        # skipping nn.Module's attribute hooks; the widths go to the step's cost collector)
        d = self.__dict__
        if not d["_enabled"]:
            return torch.relu(x) if relu else x
        training = d["training"]
        params = self._parameters
        if d["learn_i"]:
            i_f = params["i_f"]
            ext = (kernels.get() if x.dtype is _F32 and i_f.dtype is _F32
                   and x.device.type == "cpu" and i_f.device.type == "cpu" else None)
            if ext is not None:
                # the same values (and gradients, to float rounding) in fused passes
                q, bits = ext.hgq_quantize(x, i_f, self._buffers["k"],
                                           d["overflow_mode"] is OverflowMode.SAT_SYM,
                                           ROUND_INDEX[d["round_mode"]], relu)
                self.report_bits(bits)
                return q
            i, f = i_f[0], i_f[1]
        else:
            i, f = self._buffers["i"], params["f"]
            if training:
                self._track_integer_bits(x, torch.round(f))
        q, bits = _HGQQuantize.apply(x, i, f, self._current_plan(), self.round_mode)
        if relu:
            q = torch.relu(q)
        self.report_bits(bits)
        return q

    def on_epoch_end(self) -> None:
        with torch.no_grad():
            self.f.clamp_(*F_RANGE)
            self.i.clamp_(*I_RANGE)

    @classmethod
    def for_parameter(cls, config, spec: QuantSpec, shape: tuple[int, ...],
                      granularity: Granularity) -> HGQQuantizer:
        """One learned format per tensor, output channel or weight (``granularity``)."""
        return cls(spec.k, spec.i, spec.f, spec.round_mode, spec.overflow_mode,
                   granularity.shape(tuple(shape)))

    @classmethod
    def for_data(cls, config, spec: QuantSpec, feature_shape=None) -> HGQQuantizer:
        """One learned format per feature (``feature_shape``) or per tensor."""
        return cls(spec.k, spec.i, spec.f, spec.round_mode, spec.overflow_mode,
                   feature_shape or ())

    def frozen(self):
        with torch.no_grad():
            q = FixedPointQuantizer(1, 0, 1, self.round_mode, self.overflow_mode,
                                    shape=tuple(self.f.shape))  # (k set below)
            q.set_format(k=self.k, i=torch.round(self.i).clamp(*I_RANGE),
                         f=torch.round(self.f).clamp(*F_RANGE))
        return q

    def extra_repr(self) -> str:
        mean_bits = float(self.bits().float().mean())
        return (f"shape={tuple(self.f.shape)}, mean bits {mean_bits:.2f}, "
                f"{self.round_mode.name}, {self.overflow_mode.name}")


def _split_keys_to_i_f(module, state_dict, prefix, *args) -> None:
    """Checkpoints with separate ``i`` and ``f`` entries load into the ``i_f`` parameter."""
    i_key, f_key = prefix + "i", prefix + "f"
    if "i_f" in module._parameters and i_key in state_dict and f_key in state_dict:
        state_dict[prefix + "i_f"] = torch.stack((state_dict.pop(i_key), state_dict.pop(f_key)))
