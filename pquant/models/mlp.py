"""A fully connected classifier (the jet-tagger shape: 16 -> 64 -> 32 -> 32 -> 5 on jets)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from pquant.config.registry import register_schema
from pquant.errors import check_choice, check_range

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def mlp(input_size: int, output_size: int, hidden_sizes: Sequence[int] = (64, 32, 32),
        activation: str = "relu") -> nn.Sequential:
    """Build ``Linear -> act -> ... -> Linear`` with named layers ``fc1, act1, ..., out``.

    Args:
        input_size: number of input features (from the data).
        output_size: number of classes (from the data).
        hidden_sizes: widths of the hidden layers.
        activation: ``relu`` or ``tanh``.
    """
    check_choice("model.activation", activation, sorted(_ACTIVATIONS))
    for n, width in enumerate(hidden_sizes):
        check_range(f"model.hidden_sizes[{n}]", width, lo=1)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    width_in = input_size
    for n, width in enumerate(hidden_sizes, start=1):
        layers[f"fc{n}"] = nn.Linear(width_in, width)
        layers[f"act{n}"] = _ACTIVATIONS[activation]()
        width_in = width
    layers["out"] = nn.Linear(width_in, output_size)
    return nn.Sequential(layers)


@register_schema("model", "mlp")
@dataclass
class MLPConfig:
    """Fully connected classifier. Input and output sizes come from the data module."""

    _target_: str = "pquant.models.mlp.mlp"
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 32, 32])
    activation: str = "relu"  #: relu | tanh
