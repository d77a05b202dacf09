"""The hls4ml layer list and precision config of a chain of export operations.

The route (why not a frontend): hls4ml's PyTorch frontend has no handler for quantized layers and
sets one type per layer; its QONNX frontend rewrites ``Quant`` nodes through optimizer passes
whose rounding names do not cover pquant's seven modes. Both end in the same place -- a list of
layer dictionaries handed to ``ModelGraph.from_layer_list`` -- so pquant writes that list itself
(channels-last, as hls4ml's ``io_parallel`` kernels expect) with every precision set explicitly:

* the model input type *is* the first quantizer (hls4ml's float-to-``ap_fixed`` conversion does
  the rounding and saturation); a per-element first quantizer gets a finer saturating input type
  followed by its per-element quantizer (exact for ``TRN``/``RND``; other modes refused);
* every other quantizer is hls4ml's per-element ``FixedPointQuantizer`` layer (``ap_fixed`` casts
  with pquant's rounding and overflow names, which are the ``ap_fixed`` ones);
* weights, biases, accumulators and results of the arithmetic layers get types computed by
  interval analysis that hold every value exactly, so the only roundings are pquant's.
"""

from __future__ import annotations

import logging
import math
import re

import numpy as np

from pquant.export.precision import fixed_type, frac_bits
from pquant.nn.export_ops import (
    AffineOp,
    AvgPoolOp,
    ConvOp,
    ExportError,
    LinearOp,
    QuantOp,
    ReluOp,
    ReshapeOp,
    Step,
)
from pquant.quant.modes import OverflowMode, RoundMode

log = logging.getLogger(__name__)


def _ap(lo: float, hi: float, f: int, rnd: str = "TRN", sat: str = "WRAP") -> str:
    width, integer, signed = fixed_type(lo, hi, f)
    kind = "ap_fixed" if signed else "ap_ufixed"
    if rnd == "TRN" and sat == "WRAP":
        return f"{kind}<{width},{integer}>"
    return f"{kind}<{width},{integer},AP_{rnd},AP_{sat}>"


class _Range:
    """Every value lies in ``[lo, hi]`` on the grid ``2**-f`` (scalars: conservative)."""

    def __init__(self, lo: float, hi: float, f: int) -> None:
        self.lo, self.hi, self.f = float(lo), float(hi), int(f)

    def type(self) -> str:
        return _ap(self.lo, self.hi, self.f)

    @property
    def bits(self) -> int:
        return fixed_type(self.lo, self.hi, self.f)[0]


def _quant_range(q: QuantOp) -> _Range:
    lo, hi = q.bounds()
    return _Range(float(np.min(lo)), float(np.max(hi)), int(np.max(q.f)))


def _hls_shape(shape: tuple[int, ...]) -> list[int]:
    """Per-sample torch shape -> hls4ml channels-last shape."""
    return list(shape[1:]) + [shape[0]] if len(shape) > 1 else list(shape)


def _weight_range(w: np.ndarray) -> tuple[int, float]:
    return frac_bits(w), float(np.max(np.abs(w), initial=0.0))


def _mac_range(x: _Range, w: np.ndarray, bias: np.ndarray | None) -> _Range:
    """Range of ``sum_j w_oj x_j + b_o`` (rows of ``w`` = outputs)."""
    w2 = w.reshape(w.shape[0], -1).astype(np.float64)
    hi = np.maximum(w2 * x.hi, w2 * x.lo).sum(axis=1)
    lo = np.minimum(w2 * x.hi, w2 * x.lo).sum(axis=1)
    f = x.f + frac_bits(w)
    if bias is not None:
        hi, lo = hi + bias, lo + bias
        f = max(f, frac_bits(bias))
    return _Range(min(float(lo.min()), 0.0), max(float(hi.max()), 0.0), f)


class LayerListBuilder:
    """Builds ``(layer_list, layer precisions)`` for ``ModelGraph.from_layer_list``."""

    def __init__(self, steps: list[Step], in_shape: tuple[int, ...]) -> None:
        self.steps = steps
        self.in_shape = tuple(in_shape)
        self.layers: list[dict] = []
        self.precision: dict[str, dict] = {}
        self.names: set[str] = set()
        self.flat_perm: np.ndarray | None = None  # hls flat index -> torch flat index
        self.max_bits = 0

    def _name(self, hint: str) -> str:
        base = re.sub(r"\W", "_", hint)
        if not base[:1].isalpha():  # (C++ identifiers; nn.Sequential names are numbers)
            base = f"layer_{base}"
        name, n = base, 1
        while name in self.names:
            n += 1
            name = f"{base}_{n}"
        self.names.add(name)
        return name

    def _add(self, layer: dict, hint: str, **precision: str) -> None:
        layer["name"] = self._name(hint)
        layer["inputs"] = [self.layers[-1]["name"]]
        self.layers.append(layer)
        self.precision[layer["name"]] = {"Precision": precision}

    def build(self) -> tuple[list[dict], dict]:
        steps = list(self.steps)
        at = next((n for n, s in enumerate(steps) if not isinstance(s.op, ReshapeOp)), None)
        first = None if at is None else steps[at].op
        if isinstance(first, QuantOp) and first.per_tensor:
            # (a per-tensor format commutes with the reshapes before it)
            self._check_modes(first)
            r = _quant_range(first)
            k, width, i_eff = (int(np.ravel(v)[0]) for v in (first.k, first.width, first.i_eff))
            if width < 1 + k:
                raise ExportError(f"{first.where}: a {width}-bit input format has no ap_fixed "
                                  f"type; give the input quantizer more bits")
            kind = "ap_fixed" if k else "ap_ufixed"
            in_type = (f"{kind}<{width},{k + i_eff},AP_{first.round_mode.name},"
                       f"AP_{first.overflow_mode.name}>")
            del steps[at]
        elif isinstance(first, QuantOp):
            self._check_modes(first)
            if (first.round_mode not in (RoundMode.TRN, RoundMode.RND)
                    or not first.overflow_mode.saturating):
                raise ExportError(
                    f"{first.where}: a per-element input quantizer with {first.round_mode.name} "
                    f"rounding and {first.overflow_mode.name} overflow cannot be reproduced from "
                    f"float inputs in hls4ml (only TRN/RND with SAT/SAT_SYM survive the input "
                    f"conversion); use quantization.round_mode=RND or TRN and a saturating mode")
            r = _quant_range(first)
            r = _Range(r.lo - 2.0 ** -r.f, r.hi + 2.0 ** -r.f, r.f + 1)
            in_type = _ap(r.lo, r.hi, r.f, "TRN", "SAT")
        else:
            raise ExportError("the model's first layer has no input quantizer: its float input "
                              "cannot be represented in fixed point; set "
                              "quantization.quantize_input=true")
        self.layers.append({"class_name": "InputLayer", "name": "x_in",
                            "input_shape": _hls_shape(self.in_shape)})
        self.names.add("x_in")
        self.precision["x_in"] = {"Precision": {"result": in_type}}
        shape = self.in_shape
        for step in steps:
            r, shape = self._step(step, r, shape)
            self.max_bits = max(self.max_bits, r.bits)
            if r.bits > 24 and isinstance(step.op, (LinearOp, ConvOp, AvgPoolOp)):
                log.warning("layer %r: its exact result needs %d bits, more than float32's 24: "
                            "the torch model may round there and differ from the exact "
                            "fixed-point export (the check will tell)", step.name, r.bits)
        return self.layers, self.precision

    @staticmethod
    def _check_modes(q: QuantOp) -> None:
        if q.overflow_mode is OverflowMode.WRAP_SM:
            raise ExportError(
                f"{q.where}: overflow mode WRAP_SM is not exported (pquant's sign-magnitude "
                f"wrap is being aligned with ap_fixed's AP_WRAP_SM); use SAT, SAT_SYM or WRAP")

    # ------------------------------------------------------------------ one step
    def _step(self, step: Step, r: _Range, shape):
        op = step.op
        if isinstance(op, QuantOp):
            self._check_modes(op)
            q = _quant_range(op)
            k, b, i = self._kbi(op, step.in_shape)
            self._add({"class_name": "FixedPointQuantizer", "mask_kbi": (k, b, i),
                       "RND": op.round_mode.name, "SAT": op.overflow_mode.name,
                       "overrides": {}, "fusible": False}, op.where, result=q.type())
            return q, shape
        if isinstance(op, ReluOp):
            out = _Range(max(r.lo, 0.0), max(r.hi, 0.0), r.f)
            self._add({"class_name": "Activation", "activation": "relu"}, step.name,
                      result=out.type())
            return out, shape
        if isinstance(op, ReshapeOp):
            return r, self._reshape(step, r, shape)
        if isinstance(op, LinearOp):
            return self._dense(step, op, r), step.out_shape
        if isinstance(op, ConvOp):
            return self._conv(step, op, r), step.out_shape
        if isinstance(op, AffineOp):
            out = _mac_range(r, op.scale.reshape(-1, 1), op.shift)
            sf, sb = frac_bits(op.scale), frac_bits(op.shift)
            sm, bm = float(np.abs(op.scale).max()), float(np.abs(op.shift).max())
            self._add({"class_name": "BatchNormalization", "n_in": int(math.prod(shape)),
                       "n_filt": int(shape[0]), "scale_data": op.scale.astype(np.float64),
                       "bias_data": op.shift.astype(np.float64)}, step.name,
                      scale=_ap(-sm, sm, sf), bias=_ap(-bm, bm, sb), result=out.type())
            return out, shape
        if isinstance(op, AvgPoolOp):
            return self._pool(step, op, r), step.out_shape
        raise ExportError(f"layer {step.name!r}: no hls4ml writer for {type(op).__name__}")

    def _kbi(self, q: QuantOp, shape: tuple[int, ...]):
        """``(k, bits, integer bits incl. sign)`` per element, channels-last, batch axis first."""
        full = [np.broadcast_to(v, shape) for v in (q.k, q.width, q.k + q.i_eff)]
        if len(shape) > 1:
            full = [np.moveaxis(v, 0, -1) for v in full]
        return tuple(np.ascontiguousarray(v)[None].astype(np.int64) for v in full)

    def _reshape(self, step: Step, r: _Range, shape):
        target = tuple(step.out_shape)
        if len(target) == 1 and len(shape) > 1:  # flatten from channels-last
            idx = np.arange(math.prod(shape)).reshape(shape)
            self.flat_perm = np.moveaxis(idx, 0, -1).ravel()
            self._add({"class_name": "Reshape", "target_shape": list(target)}, step.name,
                      result=r.type())
            return target
        if len(shape) == 1 and len(target) > 1:  # unflatten into channels-last
            if target[0] != 1:
                self._add({"class_name": "Reshape", "target_shape": list(target)},
                          step.name + "_chw", result=r.type())
                perm = list(range(1, len(target))) + [0]
                self._add({"class_name": "Transpose", "perm": perm}, step.name,
                          result=r.type())
            else:
                self._add({"class_name": "Reshape", "target_shape": _hls_shape(target)},
                          step.name, result=r.type())
            return target
        raise ExportError(f"layer {step.name!r}: reshape {shape} -> {target} is not exported")

    def _dense(self, step: Step, op: LinearOp, r: _Range) -> _Range:
        if len(step.in_shape) != 1:
            raise ExportError(f"layer {step.name!r}: a linear layer on a {len(step.in_shape)}-d "
                              f"sample is not exported to hls4ml")
        weight = op.weight
        if self.flat_perm is not None:
            weight = weight[:, self.flat_perm]
            self.flat_perm = None
        out = _mac_range(r, weight, op.bias)
        self._add({"class_name": "Dense", "n_in": weight.shape[1], "n_out": weight.shape[0],
                   "weight_data": np.ascontiguousarray(weight.T).astype(np.float64),
                   "bias_data": self._bias(op.bias, weight.shape[0]),
                   "use_bias": op.bias is not None}, step.name,
                  weight=self._param_type(weight), bias=self._param_type(op.bias),
                  accum=out.type(), result=out.type())
        return out

    @staticmethod
    def _bias(bias, n):
        return (np.zeros(n) if bias is None else bias).astype(np.float64)

    @staticmethod
    def _param_type(w: np.ndarray | None) -> str:
        if w is None:
            return "ap_fixed<2,1>"
        f, m = _weight_range(w)
        f = max(f, 0) if m == 0 else f
        return _ap(-m, m, f)

    def _conv(self, step: Step, op: ConvOp, r: _Range) -> _Range:
        if op.groups != 1 or any(d != 1 for d in op.dilation):
            raise ExportError(f"layer {step.name!r}: groups={op.groups}, dilation={op.dilation} "
                              f"are not exported to hls4ml (QONNX export supports them)")
        out = _mac_range(r, op.weight, op.bias)
        cin, cout = op.weight.shape[1], op.weight.shape[0]
        layer = {"data_format": "channels_last", "n_chan": cin, "n_filt": cout,
                 "bias_data": self._bias(op.bias, cout), "dilation": 1}
        if op.nd == 1:
            (length,), (pad,) = step.in_shape[1:], op.padding
            layer.update(class_name="Conv1D", in_width=length, filt_width=op.weight.shape[2],
                         stride_width=op.stride[0], pad_left=pad, pad_right=pad,
                         out_width=step.out_shape[1],
                         weight_data=op.weight.transpose(2, 1, 0).astype(np.float64))
        else:
            (h, w), (ph, pw) = step.in_shape[1:], op.padding
            layer.update(class_name="Conv2D", in_height=h, in_width=w,
                         filt_height=op.weight.shape[2], filt_width=op.weight.shape[3],
                         stride_height=op.stride[0], stride_width=op.stride[1], pad_top=ph,
                         pad_bottom=ph, pad_left=pw, pad_right=pw,
                         out_height=step.out_shape[1], out_width=step.out_shape[2],
                         weight_data=op.weight.transpose(2, 3, 1, 0).astype(np.float64))
        self._add(layer, step.name, weight=self._param_type(op.weight),
                  bias=self._param_type(op.bias), accum=out.type(), result=out.type())
        return out

    def _pool(self, step: Step, op: AvgPoolOp, r: _Range) -> _Range:
        taps = math.prod(op.kernel)
        acc = _Range(r.lo * taps, r.hi * taps, r.f + int(math.log2(taps)))
        out = _Range(r.lo, r.hi, r.f + int(math.log2(taps)))
        c = step.in_shape[0]
        if op.nd == 1:
            layer = {"class_name": "AveragePooling1D", "n_in": step.in_shape[1], "n_filt": c,
                     "pool_width": op.kernel[0], "stride_width": op.stride[0],
                     "n_out": step.out_shape[1], "pad_left": 0, "pad_right": 0,
                     "padding": "valid"}
        else:
            layer = {"class_name": "AveragePooling2D", "in_height": step.in_shape[1],
                     "in_width": step.in_shape[2], "n_filt": c, "pool_height": op.kernel[0],
                     "pool_width": op.kernel[1], "stride_height": op.stride[0],
                     "stride_width": op.stride[1], "out_height": step.out_shape[1],
                     "out_width": step.out_shape[2], "pad_top": 0, "pad_bottom": 0,
                     "pad_left": 0, "pad_right": 0, "padding": "valid"}
        layer.update(data_format="channels_last", count_pad=False)
        self._add(layer, step.name, accum=acc.type(), result=out.type())
        return out
