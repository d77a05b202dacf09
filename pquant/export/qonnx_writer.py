"""``to_qonnx``: a finalised model as standard ONNX ops plus QONNX ``Quant`` nodes.

Rounding modes (pquant -> QONNX ``rounding_mode``; ``z`` is the value in LSBs):

* ``TRN`` -> ``FLOOR``, ``RND_CONV`` -> ``ROUND`` (half to even), ``TRN_ZERO`` -> ``DOWN``,
  ``RND_ZERO`` -> ``HALF_DOWN``, ``RND_INF`` -> ``HALF_UP`` (QONNX's halves go toward/away
  from zero).
* ``RND`` (ties toward +inf) and ``RND_MIN_INF`` (ties toward -inf) have no QONNX name. For an
  unsigned format they equal ``HALF_UP`` / ``HALF_DOWN``; for a signed one they are written as
  ``Where(x >= 0, Quant(HALF_UP), Quant(HALF_DOWN))`` (and the reverse) -- exact, standard ops.

Overflow: ``SAT`` and ``SAT_SYM`` are the Quant node's clipping (``narrow`` = SAT_SYM on a
signed format). ``WRAP`` and ``WRAP_SM`` cannot be stated by a Quant node and are refused.
Per-element formats (HGQ per-feature data) and formats a single Quant node cannot hold (1-bit
signed, 0-bit) are written as ``Max``/``Min`` with per-element bounds followed by a Quant node
with a per-element scale and a bit-width wide enough never to clip.

Weights and biases are float initializers (the finalised, on-grid values) each behind a Quant node
with a per-output-channel scale that holds them exactly (the node is the identity on them).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pquant.export.precision import exact_channel_format
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

QONNX_DOMAIN = "qonnx.custom_op.general"
OPSET = 13

#: pquant round modes QONNX names directly (``RND``/``RND_MIN_INF``: see the module docstring)
_DIRECT = {
    RoundMode.TRN: "FLOOR",
    RoundMode.RND_CONV: "ROUND",
    RoundMode.TRN_ZERO: "DOWN",
    RoundMode.RND_ZERO: "HALF_DOWN",
    RoundMode.RND_INF: "HALF_UP",
}
#: (for x >= 0, for x < 0) of the modes that depend on the sign
_BY_SIGN = {
    RoundMode.RND: ("HALF_UP", "HALF_DOWN"),
    RoundMode.RND_MIN_INF: ("HALF_DOWN", "HALF_UP"),
}


class _Graph:
    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"{hint.replace('.', '_')}_{self.n}"

    def const(self, value, hint: str, dtype=np.float32) -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, domain: str = "", **attrs) -> str:
        out = self.name(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, domain=domain, **attrs))
        return out

    def quant(self, x, scale, bits, signed, narrow, mode, hint, dtype) -> str:
        inputs = [x, self.const(scale, hint + "_scale", dtype), self.const(0.0, hint + "_zp", dtype),
                  self.const(float(bits), hint + "_bits", dtype)]
        return self.node("Quant", inputs, hint, domain=QONNX_DOMAIN, signed=int(signed),
                         narrow=int(narrow), rounding_mode=mode)

    def rounded(self, x, scale, bits, signed, narrow, rmode, hint, dtype) -> str:
        """Quant with pquant's ``rmode`` (decomposed by sign where QONNX has no name)."""
        if rmode in _DIRECT:
            return self.quant(x, scale, bits, signed, narrow, _DIRECT[rmode], hint, dtype)
        pos, neg = _BY_SIGN[rmode]
        if not signed:
            return self.quant(x, scale, bits, signed, narrow, pos, hint, dtype)
        q_pos = self.quant(x, scale, bits, signed, narrow, pos, hint + "_pos", dtype)
        q_neg = self.quant(x, scale, bits, signed, narrow, neg, hint + "_neg", dtype)
        cond = self.node("GreaterOrEqual", [x, self.const(0.0, hint + "_zero", dtype)],
                         hint + "_sign")
        return self.node("Where", [cond, q_pos, q_neg], hint)


def _check_overflow(q: QuantOp) -> None:
    if not q.overflow_mode.saturating:
        raise ExportError(
            f"{q.where}: overflow mode {q.overflow_mode.name} cannot be stated by a QONNX Quant "
            f"node (it saturates); train with a saturating mode (quantization."
            f"overflow_mode_data / overflow_mode_parameters = SAT or SAT_SYM), or export to "
            f"hls4ml only (WRAP is native there)")


def _quantize(g: _Graph, x: str, q: QuantOp, shape: tuple, dtype) -> str:
    _check_overflow(q)
    hint = q.where
    if len(np.unique(q.k)) > 1:
        raise ExportError(f"{q.where}: keep_negatives differs between elements; not exported")
    signed = bool(q.k.flat[0])
    width = q.width
    if q.per_tensor and int(width.flat[0]) >= 1 + signed:
        narrow = signed and q.overflow_mode is OverflowMode.SAT_SYM
        return g.rounded(x, float(np.exp2(-q.f).flat[0]), int(width.flat[0]), signed, narrow,
                         q.round_mode, hint, dtype)
    # per-element (or degenerate) formats: explicit bounds, then a Quant node that never clips
    lo, hi = q.bounds()
    rank = len(shape)
    view = (1,) * (rank - q.f.ndim) + q.f.shape if q.f.ndim else ()
    x = g.node("Max", [x, g.const(np.reshape(lo, view) if view else lo, hint + "_lo", dtype)],
               hint + "_max")
    x = g.node("Min", [x, g.const(np.reshape(hi, view) if view else hi, hint + "_hi", dtype)],
               hint + "_min")
    scale = np.exp2(-q.f)
    scale = np.reshape(scale, view) if view else scale
    return g.rounded(x, scale, int(width.max()) + 2, True, False, q.round_mode, hint, dtype)


def _weight(g: _Graph, w: np.ndarray, hint: str) -> str:
    """Initializer + Quant node holding ``w`` exactly (per-output-channel scale)."""
    rows = w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(1, -1)
    f, bits = exact_channel_format(rows)
    if w.ndim > 1:
        scale = np.exp2(-f).reshape((-1,) + (1,) * (w.ndim - 1))
    else:
        scale = float(np.exp2(-f[0]))
    return g.quant(g.const(w, hint), scale, bits, True, False, "ROUND", hint + "_q", np.float32)


def _step(g: _Graph, x: str, step: Step) -> str:
    op, hint = step.op, step.name
    if isinstance(op, QuantOp):
        return _quantize(g, x, op, (1,) + tuple(step.in_shape), np.float32)
    if isinstance(op, LinearOp):
        w = _weight(g, op.weight, hint + "_weight")
        inputs = [x, w] + ([_weight(g, op.bias, hint + "_bias")] if op.bias is not None else [])
        if len(step.in_shape) == 1:
            return g.node("Gemm", inputs, hint, transB=1)
        wt = g.node("Transpose", [w], hint + "_wT", perm=[1, 0])
        y = g.node("MatMul", [x, wt], hint)
        return y if op.bias is None else g.node("Add", [y, inputs[2]], hint + "_bias_add")
    if isinstance(op, ConvOp):
        inputs = [x, _weight(g, op.weight, hint + "_weight")]
        if op.bias is not None:
            inputs.append(_weight(g, op.bias, hint + "_bias"))
        return g.node("Conv", inputs, hint, kernel_shape=list(op.weight.shape[2:]),
                      strides=list(op.stride), dilations=list(op.dilation), group=op.groups,
                      pads=list(op.padding) * 2)
    if isinstance(op, AffineOp):
        view = (1, -1) + (1,) * (len(step.in_shape) - 1)
        y = g.node("Cast", [x], hint + "_f64", to=TensorProto.DOUBLE)
        y = g.node("Mul", [y, g.const(op.scale.reshape(view), hint + "_scale", np.float64)],
                   hint + "_mul")
        return g.node("Add", [y, g.const(op.shift.reshape(view), hint + "_shift", np.float64)],
                      hint + "_add")
    if isinstance(op, AvgPoolOp):
        return g.node("AveragePool", [x], hint, kernel_shape=list(op.kernel),
                      strides=list(op.stride))
    if isinstance(op, ReluOp):
        return g.node("Relu", [x], hint)
    if isinstance(op, ReshapeOp):
        return g.node("Reshape", [x, g.const([-1, *op.shape], hint + "_shape", np.int64)], hint)
    raise ExportError(f"layer {step.name!r}: no QONNX writer for {type(op).__name__}")


def build(steps: list[Step], in_shape: tuple, out_shape: tuple) -> onnx.ModelProto:
    """The QONNX model of the chain ``steps`` (batch dimension ``N``)."""
    g = _Graph()
    x, double = "input", False
    for step in steps:
        if isinstance(step.op, AffineOp):
            x, double = _step(g, x, step), True
            continue
        if double:  # the affine map's output quantizer runs in float64, then back to float32
            if not isinstance(step.op, QuantOp):
                raise ExportError(f"layer {step.name!r}: the batch norm needs its output "
                                  f"quantizer right after it")
            x = _quantize(g, x, step.op, (1,) + tuple(step.in_shape), np.float64)
            x = g.node("Cast", [x], step.name + "_f32", to=TensorProto.FLOAT)
            double = False
            continue
        x = _step(g, x, step)
    x = g.node("Identity", [x], "output")
    graph = helper.make_graph(
        g.nodes, "pquant",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", *out_shape])],
        initializer=g.inits)
    model = helper.make_model(graph, producer_name="pquant", opset_imports=[
        helper.make_opsetid("", OPSET), helper.make_opsetid(QONNX_DOMAIN, 1)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
