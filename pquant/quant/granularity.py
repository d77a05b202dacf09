"""How finely a format varies over a tensor (typed, not free strings)."""

from __future__ import annotations

from enum import Enum


class Granularity(Enum):
    """Weight-quantizer granularity: one format per tensor, per output channel, or per weight."""

    per_tensor = "per_tensor"
    per_channel = "per_channel"
    per_weight = "per_weight"

    def shape(self, weight_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the format buffers for a weight of ``weight_shape`` (output dim first)."""
        if self is Granularity.per_tensor or len(weight_shape) == 0:
            return ()
        if self is Granularity.per_channel:
            return (weight_shape[0],) + (1,) * (len(weight_shape) - 1)
        return tuple(weight_shape)


class DataGranularity(Enum):
    """Data-quantizer granularity: one format per tensor, or per feature/channel (HGQ)."""

    per_tensor = "per_tensor"
    per_feature = "per_feature"


def feature_shape(n_features: int, layout: str) -> tuple[int, ...]:
    """Broadcast shape of per-feature formats for a per-sample tensor.

    Args:
        n_features: number of features (Dense) or channels (Conv, BN).
        layout: ``"last"`` for ``(..., F)`` tensors, ``"channels1d"`` for ``(B, C, L)``,
            ``"channels2d"`` for ``(B, C, H, W)``.
    """
    if layout == "last":
        return (n_features,)
    if layout == "channels1d":
        return (n_features, 1)
    if layout == "channels2d":
        return (n_features, 1, 1)
    raise ValueError(f"unknown layout {layout!r}")
