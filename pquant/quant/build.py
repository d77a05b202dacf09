"""Pick and build the right quantizer for a tensor role, granularity and mode."""

from __future__ import annotations

from pquant.quant.adaptive import DynamicDataQuantizer, RangeSplitQuantizer
from pquant.quant.base import Quantizer
from pquant.quant.granularity import DataGranularity, Granularity
from pquant.quant.hgq import HGQQuantizer
from pquant.quant.spec import QuantSpec


def build_parameter_quantizer(spec: QuantSpec, param_shape: tuple[int, ...],
                              granularity: Granularity, hgq: bool) -> Quantizer:
    """Quantizer of a weight or bias tensor.

    ``per_tensor`` uses the configured format; ``per_channel``/``per_weight`` keep its width and
    split it per group (fixed point) or learn one format per group (HGQ). A 1-D parameter (a bias)
    has one element per channel, so ``per_channel`` and ``per_weight`` coincide for it.
    """
    shape = granularity.shape(tuple(param_shape))
    if hgq:
        return HGQQuantizer(spec.k, spec.i, spec.f, spec.round_mode, spec.overflow_mode, shape)
    if granularity is Granularity.per_tensor:
        return spec.build()
    return RangeSplitQuantizer(spec.k, spec.bits, spec.round_mode, spec.overflow_mode,
                               granularity)


def build_data_quantizer(spec: QuantSpec, *, hgq: bool, dynamic: bool,
                         granularity: DataGranularity = DataGranularity.per_tensor,
                         feature_shape: tuple[int, ...] | None = None) -> Quantizer:
    """Quantizer of an activation tensor (layer input or output).

    HGQ with ``per_feature`` learns one format per feature/channel when ``feature_shape`` is
    known, per tensor otherwise.
    """
    if hgq:
        shape = feature_shape if (granularity is DataGranularity.per_feature
                                  and feature_shape) else ()
        return HGQQuantizer(spec.k, spec.i, spec.f, spec.round_mode, spec.overflow_mode, shape)
    if dynamic:
        return DynamicDataQuantizer(spec.k, spec.i, spec.f, spec.round_mode, spec.overflow_mode)
    return spec.build()
