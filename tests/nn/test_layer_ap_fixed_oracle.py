"""A finalised ``PQDense`` against the same layer computed with ``ap_fixed`` types.

The HLS dense layer: inputs converted to the input format (``in_t``, with the layer's round and
overflow modes), weights and biases in their formats, products accumulated in a type wide enough
to be exact (``acc_t``), the sum converted to the output format (``out_t``). pquant's eval
output of the finalised layer must equal it bit for bit, for every sample -- on the torch path
and on the fused kernels. The compiled program comes from ``tests/apfixed.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pquant import add_compression_layers, kernels, load_config
from pquant.nn.dense import PQDense
from pquant.nn.finalize import finalize
from tests import apfixed
from tests.apfixed import Format


@pytest.fixture(autouse=True)
def _oracle_available():
    apfixed.require()

#: (round mode, data overflow mode, weight granularity)
CASES = [
    ("RND", "SAT", "per_tensor"),
    ("RND_CONV", "WRAP", "per_tensor"),
    ("TRN", "SAT_SYM", "per_channel"),
    ("RND_INF", "WRAP_SM", "per_tensor"),
    ("RND_ZERO", "SAT", "per_channel"),
    ("RND_MIN_INF", "WRAP", "per_tensor"),
    ("TRN_ZERO", "SAT", "per_tensor"),
]


def _quantizer_type(q, fallback: str) -> str:
    """The ap type of a constant per-tensor fixed-point quantizer."""
    if q is None or not q.enabled or q.bypass:
        return fallback
    spec = q.spec
    fmt = Format(spec.k, spec.i, spec.f)
    return fmt.ap_type(spec.round_mode.name, spec.overflow_mode.name)


def _layer(round_mode: str, overflow: str, granularity: str, seed: int) -> PQDense:
    cfg = load_config(["pruning=none", "quantization=fixed",
                       f"quantization.round_mode={round_mode}",
                       f"quantization.overflow_mode_data={overflow}",
                       f"quantization.granularity={granularity}"])
    torch.manual_seed(seed)
    model = add_compression_layers(nn.Sequential(nn.Linear(24, 10)), cfg)
    layer = model[0]
    assert isinstance(layer, PQDense)
    with torch.no_grad():  # weights across (and beyond) the weight range, some exact zeros
        layer.weight.uniform_(-1.3, 1.3)
        layer.weight[:, ::5] = 0.0
        layer.bias.uniform_(-1.2, 1.2)
    layer.eval()
    finalize(layer)
    return layer


def _inputs(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 24, generator=g) * 4
    # exact ties and saturation edges of the <8,4> input format (step 1/16, range [-8, 7.9375])
    x[:8] = (torch.randint(-140, 140, (8, 24), generator=g) + 0.5) / 16
    x[8, :] = 7.9375
    x[9, :] = -8.0
    x[10, :] = 7.96875  # overflows only after rounding up
    x[11, :] = -8.03125
    return x


@pytest.mark.parametrize("use_kernels", [False, True], ids=["torch", "kernels"])
@pytest.mark.parametrize("round_mode, overflow, granularity", CASES)
def test_finalised_dense_matches_ap_fixed(tmp_path_factory, monkeypatch, use_kernels,
                                          round_mode, overflow, granularity):
    monkeypatch.setenv("PQUANT_KERNELS", "auto" if use_kernels else "off")
    kernels.reset()
    try:
        if use_kernels and kernels.get() is None:
            pytest.skip(f"fused kernels unavailable: {kernels.status()}")
        layer = _layer(round_mode, overflow, granularity, seed=len(round_mode))
        x = _inputs(300, seed=7)
        with torch.no_grad():
            y = layer(x).double().numpy()
    finally:
        kernels.reset()
    # weights and biases are on their grids already (finalised): any type wide enough holds
    # them exactly; the accumulator holds every product and sum exactly
    types = {
        "in_t": _quantizer_type(layer.input_quantizer, "ap_fixed<48,24>"),
        "w_t": "ap_fixed<40,16>",
        "b_t": "ap_fixed<40,16>",
        "acc_t": "ap_fixed<64,28>",
        "out_t": _quantizer_type(layer.output_quantizer, "ap_fixed<64,28>"),
    }
    assert types["in_t"].startswith("ap_fixed<8, 4") and types["out_t"].startswith("ap_fixed<8")
    expected = apfixed.dense(x.double().numpy(), layer.weight.detach().double().numpy(),
                             layer.bias.detach().double().numpy(), types,
                             tmp_path_factory.getbasetemp() / "ap_fixed_oracle")
    bad = np.flatnonzero(y != expected)
    assert bad.size == 0, (f"{bad.size} of {y.size} outputs differ, e.g. {y.flat[bad[0]]} vs "
                           f"ap_fixed {expected.flat[bad[0]]}")
    assert (layer.weight == 0).sum() >= 10 * 5  # pruned weights stay exact zeros
