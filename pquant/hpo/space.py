"""From Hydra's override grammar to Optuna distributions, and back to override strings.

================================  =========================================================
override                          distribution
================================  =========================================================
``x=interval(0.1, 0.9)``          ``FloatDistribution(0.1, 0.9)``
``x=tag(log, interval(1e-4, 1))``  ``FloatDistribution(1e-4, 1, log=True)``
``x=range(2, 10, 2)``             ``IntDistribution(2, 8, step=2)`` (Hydra ranges are half-open)
``x=range(0.1, 0.5, 0.1)``        ``FloatDistribution(0.1, 0.4, step=0.1)``
``x=tag(log, range(1, 65))``      ``IntDistribution(1, 64, log=True)``
``x=a,b,c`` / ``x=choice(a,b,c)`` ``CategoricalDistribution([a, b, c])``
``x=3`` (no sweep)                passed through unchanged to every trial
================================  =========================================================
"""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Iterable, Mapping

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

from pquant.errors import ConfigError

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./\-]*$")


def distribution_for(override: Override):
    """The Optuna distribution of one sweep override (raises ConfigError if it has none)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    name = override.key_or_group
    value = override.value()
    tags = getattr(value, "tags", set()) or set()
    log = "log" in tags
    if isinstance(value, IntervalSweep):
        return FloatDistribution(float(value.start), float(value.end), log=log)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if all(isinstance(v, int) for v in (start, stop, step)):
            if step <= 0 or stop <= start:
                raise ConfigError(f"{name}: range({start}, {stop}, {step}) is empty")
            last = start + step * ((stop - 1 - start) // step)
            if log and step != 1:
                raise ConfigError(f"{name}: a log-scaled range needs step 1, got {step}")
            return IntDistribution(start, last, step=step, log=log)
        if log:
            raise ConfigError(f"{name}: a log-scaled float range cannot have a step; use "
                              f"tag(log, interval({start}, {stop}))")
        d_start, d_stop, d_step = (decimal.Decimal(str(v)) for v in (start, stop, step))
        n = math.ceil((d_stop - d_start) / d_step)
        if n <= 0:
            raise ConfigError(f"{name}: range({start}, {stop}, {step}) is empty")
        last = float(d_start + d_step * (n - 1))
        return FloatDistribution(float(start), last, step=float(step))
    if isinstance(value, ChoiceSweep):
        if log:
            raise ConfigError(f"{name}: 'log' applies to interval() and range(), not choice()")
        choices = [Override._convert_value(v) for v in value.list]
        for c in choices:
            if not (c is None or isinstance(c, (bool, int, float, str))):
                raise ConfigError(f"{name}: choices must be null, booleans, numbers or "
                                  f"strings for Optuna, got {c!r}")
        return CategoricalDistribution(choices)
    raise ConfigError(f"{name}={override.get_value_element_as_str()} is not a sweep")


def parse(overrides: Iterable[str]) -> list[Override]:
    return OverridesParser.create().parse_overrides(list(overrides))


def split_search_space(overrides: Iterable[str]) -> tuple[dict, list[str]]:
    """``(name -> distribution, fixed overrides)`` from command-line style overrides."""
    space: dict = {}
    fixed: list[str] = []
    for override in parse(overrides):
        if override.is_sweep_override():
            if override.is_hydra_override():
                raise ConfigError(f"cannot search over Hydra's own settings: "
                                  f"{override.input_line}")
            space[override.key_or_group] = distribution_for(override)
        else:
            fixed.append(override.input_line)
    return space, fixed


def serialize(value) -> str:
    """A trial value written back in Hydra's override syntax."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    lowered = text.lower()
    looks_typed = lowered in ("true", "false", "null", "nan", "inf", "-inf")
    try:
        float(text)
        looks_typed = True
    except ValueError:
        pass
    if _PLAIN.match(text) and not looks_typed:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def trial_overrides(params: Mapping[str, object]) -> list[str]:
    return [f"{name}={serialize(value)}" for name, value in params.items()]


# --------------------------------------------------------------------------- reference block
#: where a bare parameter name of the reference's HPO block is looked for, in order
SECTION_ORDER = ("training", "pruning", "quantization", "fitcompress")


def resolve_name(name: str, config) -> str:
    """Full dotted path of a reference HPO parameter name (bare names: first section with it)."""
    from omegaconf import OmegaConf

    if "." in name:
        if OmegaConf.select(config, name, default="__missing__") == "__missing__":
            raise ConfigError(f"finetuning.hyperparameter_search: {name} is not a setting")
        return name
    for section in SECTION_ORDER:
        node = config.get(section)
        if node is not None and name in node:
            return f"{section}.{name}"
    raise ConfigError(
        f"finetuning.hyperparameter_search: '{name}' is not a setting of "
        f"{', '.join(SECTION_ORDER)}; use a dotted path such as training.optimizer.lr")


def reference_search_space(finetuning, config) -> dict:
    """Distributions from the reference's block: ``numerical: {name: [low, high(, step)]}`` --
    float if any bound is a float, else int -- and ``categorical: {name: [choices]}``."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space: dict = {}
    search = finetuning.get("hyperparameter_search") or {}
    for name, bounds in (search.get("numerical") or {}).items():
        bounds = list(bounds)
        if len(bounds) not in (2, 3) or bounds[0] >= bounds[1]:
            raise ConfigError(f"finetuning.hyperparameter_search.numerical.{name} must be "
                              f"[low, high] or [low, high, step] with low < high, got {bounds}")
        path = resolve_name(name, config)
        step = bounds[2] if len(bounds) == 3 else None
        if step is not None and step > bounds[1] - bounds[0]:
            raise ConfigError(f"finetuning.hyperparameter_search.numerical.{name}: the step "
                              f"{step} is larger than the range {bounds[:2]}")
        if any(isinstance(b, float) for b in bounds):
            space[path] = FloatDistribution(float(bounds[0]), float(bounds[1]),
                                            step=None if step is None else float(step))
        else:
            space[path] = IntDistribution(int(bounds[0]), int(bounds[1]), step=int(step or 1))
    for name, choices in (search.get("categorical") or {}).items():
        space[resolve_name(name, config)] = CategoricalDistribution(list(choices))
    return space
