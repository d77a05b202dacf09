"""BOPs and EBOPs for the metrics: the one implementation lives in :mod:`pquant.nn.ebops`
(beside the layers whose cost it computes; ``nn`` sits below ``metrics``) and is re-exported
here."""

from __future__ import annotations

from pquant.nn.ebops import (  # noqa: F401
    LUT_SCALE,
    conv_cost,
    linear_cost,
    lut_cost,
    norm_cost,
    pool_cost,
)

__all__ = ["LUT_SCALE", "conv_cost", "linear_cost", "lut_cost", "norm_cost", "pool_cost"]
