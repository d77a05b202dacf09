"""``finalize``: freeze a trained model for inference."""

from __future__ import annotations

from torch import nn

from pquant.nn.base import PQModule
from pquant.nn.chain import elide_redundant_quantizers


def finalize(model: nn.Module) -> nn.Module:
    """Freeze every quantizer and bake masks and quantized weights, in place.

    After this, weight layers hold their effective (pruned, quantized) weights and biases
    directly -- no pruning method, no parameter quantizer runs in the forward -- and learned or
    data-dependent data formats become constant fixed-point formats (their eval behaviour). Eval
    outputs are bit-for-bit those of the model before finalisation. Bit-widths stay available to
    the metrics (``final_weight_bits``/``final_bias_bits`` buffers).

    Returns:
        ``model`` (modified in place).
    """
    for module in model.modules():
        if isinstance(module, PQModule):
            module.finalize()
    elide_redundant_quantizers(model)
    return model
