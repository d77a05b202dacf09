"""Schemas of the shipped models (``model=mlp``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List


@dataclass
class MLPConfig:
    """Fully connected classifier. Input and output sizes come from the data module."""

    _target_: str = "pquant.models.mlp.mlp"
    hidden_sizes: List[int] = field(default_factory=lambda: [64, 32, 32])
    activation: str = "relu"  #: relu | tanh
