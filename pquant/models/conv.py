"""Small convolutional classifiers for flat feature vectors (the data stays ``(B, F)``).

* :func:`cnn` views the features as an image (8x8 digits: ``(1, 8, 8)``):
  ``[Conv2d -> BatchNorm2d -> ReLU -> AvgPool2d] x 2 -> Flatten -> Linear -> ReLU -> Linear``.
* :func:`conv1d` views the features as a one-channel sequence:
  ``[Conv1d -> BatchNorm1d -> ReLU -> AvgPool1d] x 2 -> Flatten -> Linear -> ReLU -> Linear``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from pquant.config.registry import register_schema
from pquant.errors import check_range, fail


def _conv_stack(conv, norm, pool, in_channels, channels, kernel_size):
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    c_in = in_channels
    for n, c_out in enumerate(channels, start=1):
        check_range(f"model.channels[{n - 1}]", c_out, lo=1)
        layers[f"conv{n}"] = conv(c_in, c_out, kernel_size, padding=kernel_size // 2)
        layers[f"bn{n}"] = norm(c_out)
        layers[f"act{n}"] = nn.ReLU()
        layers[f"pool{n}"] = pool(2)
        c_in = c_out
    return layers


def _head(layers, flat: int, hidden: int, output_size: int, act_index: int) -> nn.Sequential:
    check_range("model.hidden", hidden, lo=1)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(flat, hidden)
    layers[f"act{act_index}"] = nn.ReLU()
    layers["out"] = nn.Linear(hidden, output_size)
    return nn.Sequential(layers)


def cnn(input_size: int, output_size: int, image_shape: Sequence[int] = (1, 8, 8),
        channels: Sequence[int] = (8, 16), kernel_size: int = 3, hidden: int = 32
        ) -> nn.Sequential:
    """2-D CNN over features reshaped to ``image_shape`` (``C, H, W``; product = input size)."""
    shape = tuple(int(v) for v in image_shape)
    if len(shape) != 3 or math.prod(shape) != input_size:
        raise fail("model.image_shape", f"be [C, H, W] with C*H*W = the {input_size} input "
                   "features", list(shape))
    c, h, w = shape
    if h % 2 ** len(channels) or w % 2 ** len(channels):
        raise fail("model.image_shape", f"have H and W divisible by 2**{len(channels)} (one "
                   "2x2 pooling per conv block)", list(shape))
    layers: OrderedDict[str, nn.Module] = OrderedDict(unflatten=nn.Unflatten(1, shape))
    layers.update(_conv_stack(nn.Conv2d, nn.BatchNorm2d, nn.AvgPool2d, c, channels,
                              kernel_size))
    scale = 2 ** len(channels)
    flat = channels[-1] * (h // scale) * (w // scale)
    return _head(layers, flat, hidden, output_size, len(channels) + 1)


def conv1d(input_size: int, output_size: int, channels: Sequence[int] = (8, 16),
           kernel_size: int = 5, hidden: int = 32) -> nn.Sequential:
    """1-D CNN over the features as a sequence of length ``input_size``."""
    if input_size % 2 ** len(channels):
        raise fail("model.channels", f"allow one 2x pooling per block on {input_size} features "
                   f"(input size divisible by 2**n_blocks)", list(channels))
    layers: OrderedDict[str, nn.Module] = OrderedDict(unflatten=nn.Unflatten(1, (1, input_size)))
    layers.update(_conv_stack(nn.Conv1d, nn.BatchNorm1d, nn.AvgPool1d, 1, channels,
                              kernel_size))
    flat = channels[-1] * (input_size // 2 ** len(channels))
    return _head(layers, flat, hidden, output_size, len(channels) + 1)


@register_schema("model", "cnn")
@dataclass
class CNNConfig:
    """2-D CNN (Conv2d + BatchNorm + ReLU + AvgPool blocks, dense head) over image-shaped
    features."""

    _target_: str = "pquant.models.conv.cnn"
    image_shape: list[int] = field(default_factory=lambda: [1, 8, 8])
    channels: list[int] = field(default_factory=lambda: [8, 16])
    kernel_size: int = 3
    hidden: int = 32


@register_schema("model", "conv1d")
@dataclass
class Conv1dConfig:
    """1-D CNN treating the features as a one-channel sequence."""

    _target_: str = "pquant.models.conv.conv1d"
    channels: list[int] = field(default_factory=lambda: [8, 16])
    kernel_size: int = 5
    hidden: int = 32
