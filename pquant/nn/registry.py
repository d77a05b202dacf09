"""The layer registry: one entry per torch layer type says everything pquant needs to know.

An entry (:class:`LayerEntry`) gives, for a torch type:

* ``pq_class`` and ``build`` -- the PQ layer that replaces it and how it is built from the torch
  module (``build(factory, name, module, flow) -> (new module or None, outgoing Flow or None)``,
  see :class:`pquant.nn.factory.LayerFactory`); no ``pq_class``: the type is left as it is;
* ``role`` -- what the metrics do with it (:class:`Role`);
* ``value_preserving`` -- it moves values without changing them (shape changes only): a
  fixed-point grid survives it, so the quantizer elision follows through it;
* ``keeps_features`` -- (unconverted types) the output has the input's features in the same
  layout, so per-feature formats downstream follow through it (dropout, identity);
* ``grid`` -- its outputs are some of its inputs or zero (max-pool, relu, dropout): the torch.fx
  dataflow analysis keeps a quantized tensor quantized through it;
* ``float_cost`` -- (BOPs, EBOPs) of the *unconverted* torch layer (float weights and inputs);
  the cost of the PQ layer is its :meth:`~pquant.nn.base.PQModule.cost`;
* ``export_rule`` -- the PQ class's :meth:`~pquant.nn.base.PQModule.export_body` (the default
  on ``PQModule`` refuses by name).

Adding a layer type is one file: decorate its PQ class with :func:`register_layer` (or call it),
and make sure the file is imported before ``add_compression_layers`` runs -- typically by the
module of the model builder named in ``model._target_``. Nothing else in pquant keys on layer
types: conversion, metrics, summary, chain elision, the fx analysis and export all ask here.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from pquant.nn.activation import PQActivation
from pquant.nn.base import FLOAT_BITS, PQModule
from pquant.nn.conv import PQConv1d, PQConv2d
from pquant.nn.dense import PQDense
from pquant.nn.ebops import conv_cost, linear_cost
from pquant.nn.factory import Flow, LayerFactory
from pquant.nn.norm import PQBatchNorm1d, PQBatchNorm2d, PQLayerNorm
from pquant.nn.pool import PQAvgPool1d, PQAvgPool2d

log = logging.getLogger(__name__)

Builder = Callable[[LayerFactory, str, nn.Module, Flow], tuple]
FloatCost = Callable[[nn.Module, tuple, tuple], tuple]


class Role(enum.Enum):
    """What the metrics do with a layer.

    * ``weight``: a weight layer -- sparsity, weight bits, parameters, input bits, BOPs/EBOPs
      and a summary row (PQ class: a :class:`~pquant.nn.weight_layer.CompressedWeightMixin`
      with ``weight_bits``/``bias_bits``/``effective_params``);
    * ``operator``: computes without prunable weights (pooling, normalisation, activations, a
      user's op) -- BOPs/EBOPs, and a summary row unless its cost is always zero;
    * ``passive``: moves values (flatten, dropout, identity) -- no metrics.
    """

    weight = "weight"
    operator = "operator"
    passive = "passive"


@dataclass(frozen=True)
class LayerEntry:
    """Everything pquant knows about one torch layer type (see the module docstring)."""

    torch_type: type[nn.Module]
    pq_class: type[nn.Module] | None = None
    build: Builder | None = None
    role: Role = Role.operator
    value_preserving: bool = False
    grid: bool = False
    float_cost: FloatCost | None = None
    keeps_features: bool = False

    @property
    def export_rule(self) -> Callable | None:
        """The PQ class's ``export_body`` (None when the type is not converted)."""
        return None if self.pq_class is None else self.pq_class.export_body


_BY_TORCH: dict[type[nn.Module], LayerEntry] = {}
_BY_PQ: dict[type[nn.Module], LayerEntry] = {}


def _add(entry: LayerEntry) -> LayerEntry:
    old = _BY_TORCH.get(entry.torch_type)
    if old is not None and old.pq_class is not None and old.pq_class is not entry.pq_class:
        log.warning("layer registry: %s now converts to %s (was %s)", entry.torch_type.__name__,
                    getattr(entry.pq_class, "__name__", None), old.pq_class.__name__)
        _BY_PQ.pop(old.pq_class, None)
    _BY_TORCH[entry.torch_type] = entry
    if entry.pq_class is not None:
        _BY_PQ[entry.pq_class] = entry
    return entry


def register_layer(torch_type: type[nn.Module], pq_class: type[nn.Module] | None = None, *,
                   build: Builder | None = None, role: Role | str = Role.operator,
                   value_preserving: bool = False, grid: bool = False,
                   float_cost: FloatCost | None = None, keeps_features: bool = False):
    """Register how ``torch_type`` is converted and accounted for; usable as a class decorator.

    ``@register_layer(nn.MaxPool1d, grid=True)`` on a PQ class (a ``PQModule`` with a
    ``from_torch(layer, input_quantizer=..., output_quantizer=...)`` classmethod) registers it as
    the replacement of ``nn.MaxPool1d`` with the standard builder (input and output quantizers
    from the data format, ``layer_specific`` overrides, per-feature formats following the
    incoming features). Give ``build`` for anything else. Registering a type again replaces its
    entry (a warning when another PQ class took it over).

    Args:
        torch_type: the torch layer type (matched exactly when converting).
        pq_class: the PQ layer class (None: the type stays unconverted).
        build: ``(factory, name, module, flow) -> (new module or None, outgoing flow or None)``;
            default :meth:`LayerFactory.io_layer` for ``pq_class``.
        role: ``weight``, ``operator`` or ``passive`` (:class:`Role`).
        value_preserving: values pass unchanged (shape changes only).
        grid: outputs are selected inputs or zero (stays on the input's grid).
        float_cost: ``(module, in_shape, out_shape) -> (BOPs, EBOPs)`` of the unconverted layer.
        keeps_features: (unconverted types) features and layout pass through unchanged.

    Returns:
        The entry, or (without ``pq_class``) a decorator registering the decorated class.
    """
    role = Role(role)

    def make(cls):
        if cls is not None and not issubclass(cls, PQModule):
            raise TypeError(f"register_layer: {cls.__name__} must be a PQModule subclass")
        builder = build
        if builder is None and cls is not None:
            def builder(factory, name, module, flow, _cls=cls):
                return factory.io_layer(_cls, name, module, flow)
        return _add(LayerEntry(torch_type, cls, builder, role, value_preserving, grid,
                               float_cost, keeps_features))

    if pq_class is None and build is None:
        def decorate(cls):
            make(cls)
            return cls
        decorate.entry = make(None)  # (registered unconverted until the class is decorated)
        return decorate
    return make(pq_class)


def entry_for_type(torch_type: type) -> LayerEntry | None:
    """The entry of exactly this torch type (conversion), or None."""
    return _BY_TORCH.get(torch_type)


def entry_for(module: nn.Module) -> LayerEntry | None:
    """The entry describing ``module``: its PQ class or torch type, nearest in its MRO."""
    for cls in type(module).__mro__:
        entry = _BY_PQ.get(cls) or _BY_TORCH.get(cls)
        if entry is not None:
            return entry
    return None


def role_of(module: nn.Module) -> Role | None:
    entry = entry_for(module)
    return None if entry is None else entry.role


def is_weight_layer(module: nn.Module, pq: bool | None = None) -> bool:
    """True for a weight layer (``pq``: True only PQ ones, False only unconverted ones)."""
    if role_of(module) is not Role.weight:
        return False
    return pq is None or pq == isinstance(module, PQModule)


def is_value_preserving(module: nn.Module) -> bool:
    entry = entry_for(module)
    return entry is not None and entry.value_preserving


def is_grid(module: nn.Module) -> bool:
    entry = entry_for(module)
    return entry is not None and entry.grid


def is_passive(module: nn.Module) -> bool:
    return role_of(module) is Role.passive


def summary_row(module: nn.Module) -> bool:
    """True for a PQ layer with a row in the run summary: a weight layer, or an operator whose
    cost is not always zero."""
    if not isinstance(module, PQModule):
        return False
    role = role_of(module)
    return role is Role.weight or (role is Role.operator and not module.cost_free)


def float_cost(module: nn.Module, shapes: tuple) -> tuple | None:
    """(BOPs, EBOPs) of an unconverted layer for per-sample ``(in_shape, out_shape)``."""
    entry = entry_for(module)
    if entry is None or entry.float_cost is None:
        return None
    return entry.float_cost(module, *shapes)


def converted_types() -> list[type[nn.Module]]:
    """Torch types that ``add_compression_layers`` converts."""
    return [t for t, e in _BY_TORCH.items() if e.build is not None]


def entries() -> list[LayerEntry]:
    return list(_BY_TORCH.values())


# ---------------------------------------------------------------------- built-in entries
def _linear_float_cost(module: nn.Linear, in_shape: tuple, out_shape: tuple):
    w = module.weight.detach()
    kept = (w != 0).to(w.dtype)
    positions = math.prod(in_shape[:-1]) if len(in_shape) > 1 else 1
    return linear_cost(FLOAT_BITS, FLOAT_BITS, kept, None if module.bias is None else FLOAT_BITS,
                       positions)


def _conv_float_cost(module: nn.Module, in_shape: tuple, out_shape: tuple):
    w = module.weight.detach()
    kept = (w != 0).to(w.dtype)
    return conv_cost(FLOAT_BITS, FLOAT_BITS, kept, None if module.bias is None else FLOAT_BITS,
                     math.prod(out_shape[1:]), module.groups)


def _with(method, **bound) -> Builder:
    def build(factory, name, module, flow):
        return method(factory, name, module, flow, **bound)
    return build


_W, _OP, _PASS = Role.weight, Role.operator, Role.passive
register_layer(nn.Linear, PQDense, build=LayerFactory.linear, role=_W,
               float_cost=_linear_float_cost)
register_layer(nn.Conv1d, PQConv1d, build=_with(LayerFactory.conv, cls=PQConv1d,
                                                layout="channels1d"),
               role=_W, float_cost=_conv_float_cost)
register_layer(nn.Conv2d, PQConv2d, build=_with(LayerFactory.conv, cls=PQConv2d,
                                                layout="channels2d"),
               role=_W, float_cost=_conv_float_cost)
register_layer(nn.Conv3d, role=_W, float_cost=_conv_float_cost)  # (counted, not converted)
register_layer(nn.BatchNorm1d, PQBatchNorm1d, build=_with(LayerFactory.batchnorm,
                                                          cls=PQBatchNorm1d, layout=None))
register_layer(nn.BatchNorm2d, PQBatchNorm2d, build=_with(LayerFactory.batchnorm,
                                                          cls=PQBatchNorm2d, layout="channels2d"))
register_layer(nn.LayerNorm, PQLayerNorm, build=LayerFactory.layernorm)
register_layer(nn.AvgPool1d, PQAvgPool1d, build=_with(LayerFactory.avgpool, cls=PQAvgPool1d,
                                                      layout="channels1d"))
register_layer(nn.AvgPool2d, PQAvgPool2d, build=_with(LayerFactory.avgpool, cls=PQAvgPool2d,
                                                      layout="channels2d"))
register_layer(nn.ReLU, PQActivation, build=LayerFactory.relu, grid=True)
for _type, _build in ((nn.Tanh, LayerFactory.tanh), (nn.Hardtanh, LayerFactory.hardtanh),
                      (nn.LeakyReLU, LayerFactory.leaky_relu), (nn.Sigmoid, LayerFactory.sigmoid),
                      (nn.GELU, LayerFactory.gelu), (nn.Softmax, LayerFactory.softmax)):
    register_layer(_type, PQActivation, build=_build)  # (one PQ class for many types)
register_layer(nn.Identity, role=_PASS, value_preserving=True, grid=True, keeps_features=True)
for _type in (nn.Flatten, nn.Unflatten):
    register_layer(_type, role=_PASS, value_preserving=True, grid=True)
for _type in (nn.Dropout, nn.Dropout1d, nn.Dropout2d):
    # (identity in eval; in training it rescales -- not a grid for the elision, a grid for the
    # dataflow report, which describes the deployed model)
    register_layer(_type, role=_PASS, grid=True, keeps_features=True)
for _type in (nn.MaxPool1d, nn.MaxPool2d):
    register_layer(_type, role=_OP, grid=True)

__all__ = ["LayerEntry", "Role", "register_layer", "entry_for", "entry_for_type", "role_of",
           "is_weight_layer", "is_value_preserving", "is_grid", "is_passive", "float_cost", "summary_row",
           "converted_types", "entries"]
