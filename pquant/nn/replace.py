"""``add_compression_layers``: swap supported torch layers for PQ layers, anywhere in a model.

The swap is keyed by module *type* through the layer registry (:mod:`pquant.nn.registry`; exact
type, so a user subclass with its own forward is left alone). Converted layers take over the original Parameter objects and buffers -- values are exact
and there is a single set of parameters. The user's model is deep-copied first unless
``inplace=True``. Modules that cannot be converted stay in place and are listed in the conversion
report (``strict=True`` turns that into an error); a torch.fx analysis lists functional calls and
tensors that reach the output unquantized.
"""

from __future__ import annotations

import copy
import logging

from torch import nn

from pquant.config.sections import sections
from pquant.errors import ConfigError
from pquant.nn.base import PQModule
from pquant.nn.chain import elide_redundant_quantizers
from pquant.nn.factory import ConversionReport, Flow, LayerFactory
from pquant.nn.registry import Role, converted_types, entry_for_type
from pquant.nn.trace import analyse_dataflow, feature_sources, has_own_forward

log = logging.getLogger(__name__)

__all__ = ["add_compression_layers", "ConversionReport"]


class _Sources:
    """Where each module's input comes from in a forward written by hand (from the fx trace),
    and the features leaving every converted layer -- so a layer outside an ``nn.Sequential``
    gets the same per-feature formats as inside one."""

    def __init__(self, model: nn.Module) -> None:
        self.sources: dict[str, str | None] = {}
        self.order: dict[str, int] = {}
        self.why: str | None = None
        if has_own_forward(model):
            self.sources, self.order, self.why = feature_sources(model)
        self.out: dict[str, Flow] = {}
        self.reasons: dict[str, str] = {}

    def incoming(self, name: str) -> Flow:
        if self.why is not None:
            self.reasons[name] = f"the model's forward cannot be traced by torch.fx ({self.why})"
            return Flow()
        src = self.sources.get(name)
        if src is None:
            self.reasons[name] = ("its input does not come straight from a layer (a model "
                                  "input, a functional computation, or a module called at "
                                  "several places)")
            return Flow()
        if src not in self.out:
            self.reasons[name] = f"its input comes from {src!r}, whose output features are unknown"
            return Flow()
        return self.out[src]


def _convert(module: nn.Module, prefix: str, factory: LayerFactory, known: _Sources) -> Flow:
    """Convert the children of ``module``; return what is known about its output."""
    sequential = type(module) is nn.Sequential
    flow = Flow()
    children = list(module.named_children())
    if not sequential and known.order:  # (in the order the forward calls them)
        children.sort(key=lambda c: known.order.get(f"{prefix}.{c[0]}" if prefix else c[0],
                                                     len(known.order)))
    for child_name, child in children:
        name = f"{prefix}.{child_name}" if prefix else child_name
        incoming = flow if sequential else Flow()
        if not incoming.features and (known.sources or known.why):
            incoming = known.incoming(name)
        entry = entry_for_type(type(child))
        if entry is not None and entry.build is not None:
            new, out = entry.build(factory, name, child, incoming)
            if new is not None:
                setattr(module, child_name, new)
                factory.report.converted[name] = f"{type(child).__name__} -> {type(new).__name__}"
            elif out is None:  # a variant we do not convert
                factory.report.unsupported[name] = type(child).__name__
            flow = out if out is not None else Flow()
            known.out[name] = flow
        elif isinstance(child, PQModule):
            flow = Flow()
        elif len(list(child.children())) > 0:
            inner = _convert(child, name, factory, known)
            flow = inner if type(child) is nn.Sequential else Flow()
        elif entry is not None and entry.role is Role.passive:
            if not entry.keeps_features:
                flow = Flow()
        else:
            factory.report.unsupported[name] = type(child).__name__
            flow = Flow()
    return flow


def add_compression_layers(model: nn.Module, config, *, inplace: bool = False,
                           strict: bool = False) -> nn.Module:
    """Return ``model`` with supported layers replaced by their PQ counterparts.

    Supported: ``Linear``, ``Conv1d``, ``Conv2d``, ``BatchNorm1d/2d``, ``LayerNorm``,
    ``AvgPool1d/2d``, ``ReLU``, ``Tanh``, ``Hardtanh(-1, 1)``, ``LeakyReLU``, ``Sigmoid``,
    ``GELU``, ``Softmax``, and any type added with :func:`pquant.nn.registry.register_layer`
    -- at any depth, inside ``nn.Sequential`` or any other container.

    Args:
        model: any ``nn.Module``.
        config: the composed pquant config (from :func:`pquant.load_config`) or a dict with
            some of the sections ``training``, ``pruning``, ``quantization``.
        inplace: modify ``model`` itself instead of a deep copy.
        strict: raise if a leaf module with computation could not be converted.

    Returns:
        The converted model; ``model.pquant_report`` holds a :class:`ConversionReport`.

    Raises:
        ConfigError: invalid settings, a ``disable_pruning_for_layers`` or ``layer_specific``
            entry matching no layer, or (``strict``) unsupported modules.
    """
    s = sections(config)
    if not inplace:
        model = copy.deepcopy(model)
    if isinstance(model, tuple(converted_types())):
        raise ConfigError(
            "add_compression_layers needs a container model (e.g. nn.Sequential) around a "
            f"single {type(model).__name__} so the layer can be replaced; got a bare layer"
        )
    factory = LayerFactory(s)
    known = _Sources(model)
    _convert(model, "", factory, known)
    factory.check_names()
    report = factory.report
    if strict and report.unsupported:
        raise ConfigError(
            "add_compression_layers(strict=True): these modules cannot be converted and would "
            f"run unquantized: {report.unsupported}; supported types are "
            f"{sorted(t.__name__ for t in converted_types())}")
    device = next((p.device for p in model.parameters()), None)
    if device is not None:
        model.to(device)
    report.elided = elide_redundant_quantizers(model)
    report.dataflow = analyse_dataflow(model)
    model.pquant_report = report
    for line in report.dataflow:
        log.info("dataflow: %s", line)
    if report.unsupported:
        log.warning("left unconverted (run in floating point): %s", report.unsupported)
    for name in report.per_tensor_fallback:
        log.warning("per-feature data formats: layer %r falls back to per-tensor formats: %s",
                    name, known.reasons.get(name, "its input features are unknown (it starts "
                                                  "an nn.Sequential chain)"))
    return model
