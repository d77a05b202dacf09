"""Schemas of the shipped models (``model=mlp``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MLPConfig:
    """Fully connected classifier. Input and output sizes come from the data module."""

    _target_: str = "pquant.models.mlp.mlp"
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 32, 32])
    activation: str = "relu"  #: relu | tanh


@dataclass
class CNNConfig:
    """2-D CNN (Conv2d + BatchNorm + ReLU + AvgPool blocks, dense head) over image-shaped
    features."""

    _target_: str = "pquant.models.conv.cnn"
    image_shape: list[int] = field(default_factory=lambda: [1, 8, 8])
    channels: list[int] = field(default_factory=lambda: [8, 16])
    kernel_size: int = 3
    hidden: int = 32


@dataclass
class Conv1dConfig:
    """1-D CNN treating the features as a one-channel sequence."""

    _target_: str = "pquant.models.conv.conv1d"
    channels: list[int] = field(default_factory=lambda: [8, 16])
    kernel_size: int = 5
    hidden: int = 32
