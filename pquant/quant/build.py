"""Build the quantizer of a tensor role from the kind chosen for it (``_target_``)."""

from __future__ import annotations

from pquant.quant.base import Quantizer
from pquant.quant.granularity import DataGranularity, Granularity
from pquant.quant.quantizer import FixedPointQuantizer
from pquant.quant.registry import QuantizerConfig
from pquant.quant.spec import QuantSpec


def build_fixed(spec: QuantSpec, shape: tuple[int, ...] = ()) -> FixedPointQuantizer:
    """A constant-format :class:`~pquant.quant.quantizer.FixedPointQuantizer` of ``spec``."""
    return FixedPointQuantizer.of(spec, shape)


def build_parameter_quantizer(kind: QuantizerConfig, spec: QuantSpec,
                              param_shape: tuple[int, ...],
                              granularity: Granularity) -> Quantizer:
    """Quantizer of a weight or bias tensor, built by the kind's quantizer class.

    ``per_tensor`` uses the configured format; ``per_channel``/``per_weight`` keep its width and
    split it per group (fixed point) or learn one format per group (HGQ). A 1-D parameter (a bias)
    has one element per channel, so ``per_channel`` and ``per_weight`` coincide for it.
    """
    return kind.quantizer_class().for_parameter(kind, spec, tuple(param_shape), granularity)


def build_data_quantizer(kind: QuantizerConfig, spec: QuantSpec,
                         granularity: DataGranularity = DataGranularity.per_tensor,
                         feature_shape: tuple[int, ...] | None = None) -> Quantizer:
    """Quantizer of an activation tensor (layer input or output), built by the kind's class.

    With ``per_feature`` a kind that learns per-feature formats gets ``feature_shape`` when it is
    known (per tensor otherwise).
    """
    per_feature = granularity is DataGranularity.per_feature and feature_shape
    return kind.quantizer_class().for_data(kind, spec, tuple(feature_shape) if per_feature
                                           else None)
