"""Build the PQ replacement of one torch module from the validated config sections.

Formats chosen by default (each can be overridden per layer with ``layer_specific``):

* Dense/Conv inputs and outputs: the data format; weights and biases: the weight format.
* BatchNorm/LayerNorm scale and shift: the weight format's fractional bits with at least 3
  integer bits (a scale of 1 must be representable -- the reference's default saturates it at
  0.992).
* ReLU: unsigned data format of the same total width (one more fractional bit); with a wrapping
  data overflow mode (WRAP, WRAP_SM) the signed data format, as the layer before it computes
  (an unsigned wrap would turn negative inputs into large positive ones; ap_fixed has no
  unsigned WRAP_SM). Bounded outputs under a wrapping mode keep one integer bit (an output of 1
  would wrap to 0 or -1), signed under WRAP_SM.
* Odd or signed functions (tanh, leaky relu, gelu, ...): signed quantizers -- negative inputs are
  never clamped away. Bounded outputs use all bits but the sign for the fraction: tanh
  ``(1, 0, b-1)``, sigmoid and softmax ``(0, 0, b)``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from hydra.utils import get_class
from torch import nn

from pquant.config.layer_specific import LayerOverrides, apply_overrides
from pquant.config.sections import Sections
from pquant.errors import ConfigError
from pquant.nn.activation import ACTIVATIONS, PQActivation
from pquant.nn.conv import PQConv2d
from pquant.nn.dense import PQDense
from pquant.nn.norm import PQBatchNorm2d, PQLayerNorm
from pquant.nn.pool import PQAvgPool2d
from pquant.quant.build import build_data_quantizer, build_parameter_quantizer
from pquant.quant.granularity import Granularity, feature_shape
from pquant.quant.modes import OverflowMode, as_overflow_mode
from pquant.quant.registry import resolve_kind
from pquant.quant.spec import QuantSpec


@dataclass
class Flow:
    """What is known about the tensor flowing along a Sequential chain."""

    features: int | None = None
    layout: str | None = None  # "last", "channels1d", "channels2d"


@dataclass
class ConversionReport:
    """What ``add_compression_layers`` did.

    Attributes:
        converted: dotted module name -> ``"<torch type> -> <PQ type>"``.
        pruned: names of layers that carry a pruning method.
        not_pruned: names of weight layers left unpruned (disabled by config or by name).
        unsupported: leaf modules left as they were (name -> type): their tensors are not
            quantized.
        per_tensor_fallback: layers whose data quantizers are per tensor although per-feature
            formats were asked for (the feature count was not known at conversion).
        elided: quantizers skipped because their input is provably on their grid already.
        dataflow: findings of the torch.fx analysis (functional calls, unquantized tensors).
    """

    converted: dict[str, str] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)
    not_pruned: list[str] = field(default_factory=list)
    unsupported: dict[str, str] = field(default_factory=dict)
    per_tensor_fallback: list[str] = field(default_factory=list)
    elided: list[str] = field(default_factory=list)
    dataflow: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


_ALL = ("weight", "bias", "input", "output")


def _where(name: str, role: str, values) -> str:
    """Which setting a layer's format comes from, for error messages."""
    if any(key in values for key in ("keep_negatives", "integer_bits", "fractional_bits")):
        return f"quantization.layer_specific for layer {name} ({role})"
    return f"{name} ({role})"
_IO = ("input", "output")


class LayerFactory:
    """One instance per conversion; remembers names and reports what it did."""

    def __init__(self, s: Sections) -> None:
        self.s = s
        q = s.quantization
        self.quantize = q.enable_quantization
        q.resolve_quantizer()  # (idempotent: validated sections already hold the kind)
        self.kind = q.quantizer  # the section's quantizer kind (a QuantizerConfig)
        self.data = q.data_spec()
        self.weight = q.weight_spec()
        self.norm_params = self.weight.with_(k=1, i=max(self.weight.i, 3))
        self.overrides = LayerOverrides(q.layer_specific if self.quantize else {})
        self.disable_patterns = list(s.pruning.disable_pruning_for_layers)
        self.matched_patterns: set[str] = set()
        self.weight_layer_names: list[str] = []
        self.report = ConversionReport()
        self._method_cls = None
        if s.pruning.enable_pruning:
            try:
                self._method_cls = get_class(s.pruning._target_)
            except Exception as exc:  # noqa: BLE001 - any import failure is a config problem
                raise ConfigError(
                    f"pruning._target_ must name an importable PruningMethod class, got "
                    f"{s.pruning._target_!r} ({exc})"
                ) from None

    # ------------------------------------------------------------------ quantizers
    @staticmethod
    def _checked(spec: QuantSpec, where: str) -> QuantSpec:
        try:
            spec.check(where)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return spec

    def _kind(self, name: str, role: str, values):
        """The quantizer kind of one role: ``layer_specific``'s ``quantizer``, else the section's."""
        if "quantizer" not in values:
            return self.kind
        try:
            return resolve_kind(values["quantizer"],
                                f"quantization.layer_specific for layer {name} ({role}).quantizer")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def _data_q(self, name, sections, role, base: QuantSpec, flow: Flow | None):
        q = self.s.quantization
        values = sections.get(role, {})
        default = q.quantize_input if role == "input" else q.quantize_output
        if not self.quantize or not values.get("quantize", default):
            return None
        spec = self._checked(apply_overrides(base, values), _where(name, role, values))
        kind = self._kind(name, role, values)
        fshape = None
        if flow is not None and flow.features and flow.layout:
            fshape = feature_shape(flow.features, flow.layout)
        elif (kind.quantizer_class().per_feature_data
              and q.data_granularity.name == "per_feature"):
            if name not in self.report.per_tensor_fallback:
                self.report.per_tensor_fallback.append(name)
        return build_data_quantizer(kind, spec, q.data_granularity, fshape)

    def _param_q(self, name, sections, role, base: QuantSpec, param):
        if param is None or not self.quantize:
            return None
        values = sections.get(role, {})
        spec = self._checked(apply_overrides(base, values), _where(name, role, values))
        kind = self._kind(name, role, values)
        granularity = self.s.quantization.granularity
        if role == "bias" and not kind.quantizer_class().bias_follows_granularity:
            # fixed point: one bias format per tensor unless a layer asks otherwise (the range
            # split per element buys nothing for a vector added once per output)
            granularity = Granularity.per_tensor
        if "granularity" in values:
            granularity = Granularity[getattr(values["granularity"], "name",
                                              values["granularity"])]
        return build_parameter_quantizer(kind, spec, tuple(param.shape),
                                         granularity).to(param.device)

    def _pruning_for(self, name: str, weight, layer_type: str):
        self.weight_layer_names.append(name)
        hits = [p for p in self.disable_patterns if fnmatch.fnmatchcase(name, p)]
        self.matched_patterns.update(hits)
        if self._method_cls is None or hits:
            self.report.not_pruned.append(name)
            return None
        self.report.pruned.append(name)
        method = self._method_cls(self.s.pruning, weight.shape, layer_type).to(weight.device)
        method.layer_name = name
        return method

    # ------------------------------------------------------------------ weight layers
    def _weight_layer(self, cls, name, layer, layer_type, fin: Flow, fout: Flow):
        sections = self.overrides.for_layer(name, _ALL)
        new = cls.from_torch(
            layer,
            input_quantizer=self._data_q(name, sections, "input", self.data, fin),
            weight_quantizer=self._param_q(name, sections, "weight", self.weight, layer.weight),
            bias_quantizer=self._param_q(name, sections, "bias", self.weight, layer.bias),
            output_quantizer=self._data_q(name, sections, "output", self.data, fout),
            pruning=self._pruning_for(name, layer.weight, layer_type),
            pruning_first=self.s.training.pruning_first,
        ).to(layer.weight.device)
        if new.pruning is not None:
            new.pruning.bind(new)
        return new

    def linear(self, name, layer: nn.Linear, flow: Flow):
        out = Flow(layer.out_features, "last")
        return self._weight_layer(PQDense, name, layer, "linear",
                                  Flow(layer.in_features, "last"), out), out

    def conv(self, name, layer, flow: Flow, *, cls=PQConv2d, layout: str = "channels2d"):
        out = Flow(layer.out_channels, layout)
        return self._weight_layer(cls, name, layer, "conv", Flow(layer.in_channels, layout),
                                  out), out

    def batchnorm(self, name, layer, flow: Flow, *, cls=PQBatchNorm2d,
                  layout: str | None = "channels2d"):
        """``layout`` None: the incoming one (BatchNorm1d takes ``(N, C)`` or ``(N, C, L)``)."""
        if not self.quantize:
            return None, flow
        if layout is None:
            layout = flow.layout if flow.layout in ("last", "channels1d") else None
        f = Flow(layer.num_features, layout)
        return self._norm(cls, name, layer, f), f

    def layernorm(self, name, layer: nn.LayerNorm, flow: Flow):
        if not self.quantize:
            return None, flow
        f = Flow(layer.normalized_shape[-1], "last")
        return self._norm(PQLayerNorm, name, layer, f), flow

    def _norm(self, cls, name, layer, f: Flow):
        sections = self.overrides.for_layer(name, _ALL)
        return cls.from_torch(
            layer,
            input_quantizer=self._data_q(name, sections, "input", self.data, f),
            weight_quantizer=self._param_q(name, sections, "weight", self.norm_params,
                                           layer.weight),
            bias_quantizer=self._param_q(name, sections, "bias", self.norm_params, layer.bias),
            output_quantizer=self._data_q(name, sections, "output", self.data, f),
        )

    def avgpool(self, name, layer, flow: Flow, *, cls=PQAvgPool2d, layout: str = "channels2d"):
        """:meth:`io_layer`, per feature only when the incoming features have ``layout``."""
        f = Flow(flow.features, layout) if flow.layout == layout else Flow()
        return self.io_layer(cls, name, layer, f)[0], flow

    def io_layer(self, cls, name, layer, flow: Flow):
        """A layer with input and output quantizers only (the standard builder of a registered
        type): ``cls.from_torch(layer, input_quantizer=..., output_quantizer=...)``, formats from
        the data format and ``layer_specific``, per feature along the incoming features (the op
        must keep them, as pooling and element-wise functions do). Not converted when
        quantization is off."""
        if not self.quantize:
            return None, flow
        sections = self.overrides.for_layer(name, _IO)
        return cls.from_torch(
            layer,
            input_quantizer=self._data_q(name, sections, "input", self.data, flow),
            output_quantizer=self._data_q(name, sections, "output", self.data, flow),
        ), flow

    # ------------------------------------------------------------------ activations
    def _activation(self, name, fn: str, flow: Flow, **options):
        if not self.quantize:
            return None, flow
        d, info = self.data, ACTIVATIONS[fn]
        width = d.bits
        mode = as_overflow_mode(d.overflow_mode)
        wrapping = not mode.saturating
        if not info.signed_input:  # relu: unsigned, same width (signed when wrapping)
            in_spec = out_spec = d.with_(k=1) if wrapping else d.with_(k=0, f=d.f + d.k)
        else:
            in_spec = out_spec = d.with_(k=1)
            if info.output_range is not None:  # (wrapping: an output of +-1 must not wrap)
                k_out = 1 if info.output_range[0] < 0 or mode is OverflowMode.WRAP_SM else 0
                i_out = 1 if wrapping else 0
                out_spec = d.with_(k=k_out, i=i_out, f=width - k_out - i_out)
        sections = self.overrides.for_layer(name, _IO)
        multiplier = fn == "relu" and self.s.quantization.use_relu_multiplier
        return PQActivation(
            fn, input_quantizer=self._data_q(name, sections, "input", in_spec, flow),
            output_quantizer=self._data_q(name, sections, "output", out_spec, flow),
            relu_multiplier=multiplier, **options,
        ), flow

    def relu(self, name, layer, flow):
        return self._activation(name, "relu", flow)

    def tanh(self, name, layer, flow):
        return self._activation(name, "tanh" if self.s.quantization.use_real_tanh
                                else "hard_tanh", flow)

    def hardtanh(self, name, layer: nn.Hardtanh, flow):
        if (layer.min_val, layer.max_val) != (-1.0, 1.0):
            return None, None
        return self._activation(name, "hard_tanh", flow)

    def leaky_relu(self, name, layer: nn.LeakyReLU, flow):
        return self._activation(name, "leaky_relu", flow, negative_slope=layer.negative_slope)

    def sigmoid(self, name, layer, flow):
        return self._activation(name, "sigmoid", flow)

    def gelu(self, name, layer: nn.GELU, flow):
        return self._activation(name, "gelu", flow, approximate=layer.approximate)

    def softmax(self, name, layer: nn.Softmax, flow):
        return self._activation(name, "softmax", flow, dim=-1 if layer.dim is None else layer.dim)

    # ------------------------------------------------------------------ checks
    def check_names(self) -> None:
        unmatched = [p for p in self.disable_patterns if p not in self.matched_patterns]
        if unmatched:
            raise ConfigError(
                f"pruning.disable_pruning_for_layers must name prunable layers of the model "
                f"(dotted names as in model.named_modules(); glob patterns allowed): "
                f"{self.weight_layer_names}; got {unmatched} which match nothing"
            )
        self.overrides.check_all_used()
