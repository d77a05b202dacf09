"""A RangeSplitQuantizer reached by ``finalize`` (as a layer's data quantizer) is kept exactly."""

from __future__ import annotations

import pytest
import torch

from pquant.nn.activation import PQActivation
from pquant.nn.finalize import finalize
from pquant.quant.adaptive import RangeSplitQuantizer
from pquant.quant.granularity import Granularity


@pytest.mark.parametrize("granularity", [Granularity.per_channel, Granularity.per_weight])
def test_finalize_keeps_range_split_data_quantizer(granularity):
    q_in = RangeSplitQuantizer(1, 6, "RND", "SAT", granularity)
    q_out = RangeSplitQuantizer(0, 4, "TRN", "SAT", granularity)
    layer = PQActivation("tanh", input_quantizer=q_in, output_quantizer=q_out).eval()
    torch.manual_seed(0)
    batches = [torch.randn(5, 7) * scale for scale in (0.01, 1.0, 300.0)]
    before = [layer(x) for x in batches]
    finalize(layer)
    assert layer.finalized
    assert isinstance(layer.input_quantizer, RangeSplitQuantizer)
    assert layer.input_quantizer is not q_in  # a copy, the original is untouched
    for x, y in zip(batches, before):
        assert torch.equal(layer(x), y)
    # the frozen copy quantizes for real (not an identity)
    x = torch.tensor([[0.3, 0.71]])
    assert not torch.equal(layer.input_quantizer(x), x)
