"""``add_compression_layers``: swap supported torch layers for PQ layers, anywhere in a model.

The swap is keyed by module *type* (exact type, so a user subclass with its own forward is left
alone). Converted layers take over the original Parameter objects and buffers -- values are exact
and there is a single set of parameters. The user's model is deep-copied first unless
``inplace=True``. Modules that cannot be converted stay in place and are listed in the conversion
report (``strict=True`` turns that into an error); a torch.fx analysis lists functional calls and
tensors that reach the output unquantized.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

from torch import nn

from pquant.config.sections import sections
from pquant.errors import ConfigError
from pquant.nn.base import PQModule
from pquant.nn.chain import elide_redundant_quantizers
from pquant.nn.factory import ConversionReport, Flow, LayerFactory
from pquant.nn.trace import analyse_dataflow

log = logging.getLogger(__name__)

__all__ = ["add_compression_layers", "ConversionReport", "REPLACEMENTS"]

Builder = Callable[[LayerFactory, str, nn.Module, Flow], tuple]

#: Which PQ layer replaces which torch layer (the one allowed type-keyed lookup).
REPLACEMENTS: dict[type[nn.Module], Builder] = {
    nn.Linear: LayerFactory.linear,
    nn.Conv1d: LayerFactory.conv,
    nn.Conv2d: LayerFactory.conv,
    nn.BatchNorm1d: LayerFactory.batchnorm,
    nn.BatchNorm2d: LayerFactory.batchnorm,
    nn.LayerNorm: LayerFactory.layernorm,
    nn.AvgPool1d: LayerFactory.avgpool,
    nn.AvgPool2d: LayerFactory.avgpool,
    nn.ReLU: LayerFactory.relu,
    nn.Tanh: LayerFactory.tanh,
    nn.Hardtanh: LayerFactory.hardtanh,
    nn.LeakyReLU: LayerFactory.leaky_relu,
    nn.Sigmoid: LayerFactory.sigmoid,
    nn.GELU: LayerFactory.gelu,
    nn.Softmax: LayerFactory.softmax,
}

#: Leaf modules that move values without computing on them (not reported as unsupported).
PASS_THROUGH = (nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d)


def _convert(module: nn.Module, prefix: str, factory: LayerFactory) -> Flow:
    """Convert the children of ``module``; return what is known about its output."""
    sequential = type(module) is nn.Sequential
    flow = Flow()
    for child_name, child in list(module.named_children()):
        name = f"{prefix}.{child_name}" if prefix else child_name
        incoming = flow if sequential else Flow()
        build = REPLACEMENTS.get(type(child))
        if build is not None:
            new, out = build(factory, name, child, incoming)
            if new is not None:
                setattr(module, child_name, new)
                factory.report.converted[name] = f"{type(child).__name__} -> {type(new).__name__}"
            elif out is None:  # a variant we do not convert
                factory.report.unsupported[name] = type(child).__name__
            flow = out if out is not None else Flow()
        elif isinstance(child, PQModule):
            flow = Flow()
        elif len(list(child.children())) > 0:
            inner = _convert(child, name, factory)
            flow = inner if type(child) is nn.Sequential else Flow()
        elif isinstance(child, PASS_THROUGH):
            if not isinstance(child, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)):
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
    ``GELU``, ``Softmax`` -- at any depth, inside ``nn.Sequential`` or any other container.

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
    if isinstance(model, tuple(REPLACEMENTS)):
        raise ConfigError(
            "add_compression_layers needs a container model (e.g. nn.Sequential) around a "
            f"single {type(model).__name__} so the layer can be replaced; got a bare layer"
        )
    factory = LayerFactory(s)
    _convert(model, "", factory)
    factory.check_names()
    report = factory.report
    if strict and report.unsupported:
        raise ConfigError(
            "add_compression_layers(strict=True): these modules cannot be converted and would "
            f"run unquantized: {report.unsupported}; supported types are "
            f"{sorted(t.__name__ for t in REPLACEMENTS)}")
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
    return model
