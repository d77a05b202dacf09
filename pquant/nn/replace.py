"""``add_compression_layers``: swap supported torch layers for PQ layers, anywhere in a model.

The swap is keyed by module *type* (exact type, so a user subclass with its own forward is left
alone). Converted layers take over the original Parameter objects -- values are exact and there
is a single set of parameters. The user's model is deep-copied first unless ``inplace=True``.
"""

from __future__ import annotations

import copy
import fnmatch
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from hydra.utils import get_class
from torch import nn

from pquant.config.errors import ConfigError
from pquant.config.sections import Sections, sections
from pquant.nn.activation import PQActivation
from pquant.nn.chain import elide_redundant_quantizers
from pquant.nn.dense import PQDense
from pquant.quant.quantizer import QuantSpec

log = logging.getLogger(__name__)


@dataclass
class ConversionReport:
    """What ``add_compression_layers`` did.

    Attributes:
        converted: dotted module name -> ``"<torch type> -> <PQ type>"``.
        pruned: names of layers that carry a pruning method.
        not_pruned: names of weight layers left unpruned (disabled by config or by name).
        elided: quantizers skipped because their input is provably on their grid already.
    """

    converted: dict[str, str] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)
    not_pruned: list[str] = field(default_factory=list)
    elided: list[str] = field(default_factory=list)


class _LayerFactory:
    """Builds the PQ replacement of one torch module from the validated config sections."""

    def __init__(self, s: Sections) -> None:
        self.s = s
        q = s.quantization
        self.quantize = q.enable_quantization
        self.data = q.data_spec()
        self.weight = q.weight_spec()
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

    # ------------------------------------------------------------------ helpers
    def _quantizer(self, spec: QuantSpec | None, enabled: bool, where: str, shape=()):
        if not (self.quantize and enabled) or spec is None:
            return None
        try:
            spec.check(where)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return spec.build(shape)

    def _pruning_for(self, name: str, weight, layer_type: str):
        self.weight_layer_names.append(name)
        hits = [p for p in self.disable_patterns if fnmatch.fnmatchcase(name, p)]
        self.matched_patterns.update(hits)
        if self._method_cls is None or hits:
            self.report.not_pruned.append(name)
            return None
        self.report.pruned.append(name)
        return self._method_cls(self.s.pruning, weight.shape, layer_type).to(weight.device)

    def _io(self, spec: QuantSpec, name: str):
        q = self.s.quantization
        return {
            "input_quantizer": self._quantizer(spec, q.quantize_input, f"{name} (input)"),
            "output_quantizer": self._quantizer(spec, q.quantize_output, f"{name} (output)"),
        }

    # ------------------------------------------------------------------ per type
    def linear(self, name: str, layer: nn.Linear) -> nn.Module:
        new = PQDense.from_torch(
            layer,
            weight_quantizer=self._quantizer(self.weight, True, f"{name} (weight)"),
            bias_quantizer=self._quantizer(self.weight, layer.bias is not None, f"{name} (bias)"),
            pruning=self._pruning_for(name, layer.weight, "linear"),
            pruning_first=self.s.training.pruning_first,
            **self._io(self.data, name),
        )
        return new.to(layer.weight.device)

    def relu(self, name: str, layer: nn.ReLU) -> nn.Module | None:
        if not self.quantize:
            return None
        d = self.data
        # ReLU outputs are non-negative: an unsigned format of the same total width.
        spec = QuantSpec(0, d.i, d.f + d.k, d.round_mode, d.overflow_mode)
        return PQActivation("relu", **self._io(spec, name))

    def tanh(self, name: str, layer: nn.Tanh) -> nn.Module | None:
        if not self.quantize:
            return None
        d = self.data
        # tanh is odd: its quantizers must be signed or negative inputs would be clamped to 0.
        spec = QuantSpec(1, d.i, d.f, d.round_mode, d.overflow_mode)
        fn = "tanh" if self.s.quantization.use_real_tanh else "hard_tanh"
        return PQActivation(fn, **self._io(spec, name))

    # ------------------------------------------------------------------ checks
    def check_names(self) -> None:
        unmatched = [p for p in self.disable_patterns if p not in self.matched_patterns]
        if unmatched:
            raise ConfigError(
                f"pruning.disable_pruning_for_layers must name prunable layers of the model "
                f"(dotted names as in model.named_modules(); glob patterns allowed): "
                f"{self.weight_layer_names}; got {unmatched} which match nothing"
            )


#: Which PQ layer replaces which torch layer (the one allowed type-keyed lookup).
REPLACEMENTS: dict[type[nn.Module], Callable[[_LayerFactory, str, nn.Module], nn.Module | None]] = {
    nn.Linear: _LayerFactory.linear,
    nn.ReLU: _LayerFactory.relu,
    nn.Tanh: _LayerFactory.tanh,
}


def _convert(module: nn.Module, prefix: str, factory: _LayerFactory) -> None:
    for child_name, child in list(module.named_children()):
        name = f"{prefix}.{child_name}" if prefix else child_name
        build = REPLACEMENTS.get(type(child))
        if build is None:
            _convert(child, name, factory)
            continue
        new = build(factory, name, child)
        if new is not None:
            setattr(module, child_name, new)
            factory.report.converted[name] = f"{type(child).__name__} -> {type(new).__name__}"


def add_compression_layers(model: nn.Module, config, *, inplace: bool = False) -> nn.Module:
    """Return ``model`` with supported layers replaced by their PQ counterparts.

    Args:
        model: any ``nn.Module``; nested modules and ``nn.Sequential`` are walked recursively.
        config: the composed pquant config (from :func:`pquant.load_config`) or a dict with
            some of the sections ``training``, ``pruning``, ``quantization``.
        inplace: modify ``model`` itself instead of a deep copy.

    Returns:
        The converted model. ``model.pquant_report`` holds a :class:`ConversionReport`.

    Raises:
        ConfigError: invalid settings, or a ``disable_pruning_for_layers`` entry matching no layer.
    """
    s = sections(config)
    if not inplace:
        model = copy.deepcopy(model)
    if isinstance(model, tuple(REPLACEMENTS)):
        raise ConfigError(
            "add_compression_layers needs a container model (e.g. nn.Sequential) around a "
            f"single {type(model).__name__} so the layer can be replaced; got a bare layer"
        )
    factory = _LayerFactory(s)
    _convert(model, "", factory)
    factory.check_names()
    factory.report.elided = elide_redundant_quantizers(model)
    model.pquant_report = factory.report
    log.debug("converted layers: %s", factory.report.converted)
    return model
