"""hls4ml export: the compiled C++ emulation equals the finalised model bit for bit.

Each case compiles a project with g++ (seconds to a minute): marked ``slow``; they run in the
default suite. Convolutional models use narrower channels than the presets to keep the build
short (the layers and formats are the same). The default per-tensor MLP is compiled and checked
on the test set by the end-to-end run in ``test_export_run.py``; per-tensor formats at ties and
saturation edges by the round-mode chain here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("hls4ml")

from pquant.export import to_hls4ml  # noqa: E402
from tests.export.helpers import ROUND_MODES, built_model, edge_inputs, modes_chain  # noqa: E402

pytestmark = pytest.mark.slow

SMALL_CONV = ["model.channels=[4,8]", "model.hidden=16"]


def _check(model, x, tmp_path) -> None:
    hls = to_hls4ml(model, x, tmp_path / "prj", compile=True)
    with torch.no_grad():
        ref = model(x).double().numpy()
    out = hls.predict(x)
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("overrides", [
    ["model=mlp", "quantization.granularity=per_channel"],
    ["model=cnn", "quantization.granularity=per_channel", *SMALL_CONV],
    ["model=conv1d", "quantization.granularity=per_tensor", *SMALL_CONV],
    ["quantization=hgq"],
], ids=["mlp-per_channel", "cnn-per_channel", "conv1d-per_tensor", "hgq"])
def test_models_bit_exact(tmp_path, overrides):
    _check(built_model(overrides), edge_inputs(64), tmp_path)


def test_every_round_mode_and_overflow_at_ties_and_saturation(tmp_path):
    n = len(ROUND_MODES)
    rounds = ROUND_MODES * 3
    overflows = ["SAT"] * n + ["SAT_SYM"] * n + ["WRAP"] * n
    _check(modes_chain(rounds, overflows), edge_inputs(6), tmp_path)


def test_project_files_and_pruned_zeros(tmp_path):
    model = built_model(["model=mlp"])
    with torch.no_grad():
        model.fc2.weight[:, ::2] = 0.0  # pruned weights
    hls = to_hls4ml(model, edge_inputs(64), tmp_path / "prj")
    defines = (tmp_path / "prj" / "firmware" / "defines.h").read_text()
    assert "typedef ap_fixed<8,4,AP_RND,AP_SAT,0> input_t;" in defines  # the input quantizer
    weights = hls.hls_model.graph["fc2"].get_weights("weight").data  # (in, out)
    np.testing.assert_array_equal(weights.T, model.fc2.weight.detach().numpy())
    assert (weights == 0).sum() >= model.fc2.weight.numel() // 2
    assert list((tmp_path / "prj" / "firmware" / "weights").glob("w*.txt"))


def test_channels_first_input_and_output(tmp_path):
    """A conv taking (C, L) samples and returning (C, L): the layout is converted both ways."""
    from torch import nn

    import pquant
    from pquant.nn.conv import PQConv1d
    from pquant.quant.quantizer import FixedPointQuantizer

    torch.manual_seed(3)
    conv = PQConv1d(2, 3, 3, padding=1, input_quantizer=FixedPointQuantizer(1, 3, 4),
                    output_quantizer=FixedPointQuantizer(1, 4, 3, "RND_CONV", "SAT_SYM"))
    with torch.no_grad():
        conv.weight.copy_(torch.round(conv.weight * 64) / 64)
        conv.bias.copy_(torch.round(conv.bias * 64) / 64)
    model = pquant.finalize(nn.Sequential(conv).eval())
    x = edge_inputs(16).reshape(-1, 2, 8)
    _check(model, x, tmp_path)
