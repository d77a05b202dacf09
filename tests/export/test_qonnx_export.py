"""QONNX export: bit-exact under qonnx's own executor, for every model, granularity and mode."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

pytest.importorskip("qonnx")

from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.transformation.infer_shapes import InferShapes  # noqa: E402
from qonnx.util.cleanup import cleanup_model  # noqa: E402

from pquant.export import run_qonnx, to_qonnx  # noqa: E402
from tests.export.helpers import ROUND_MODES, built_model, edge_inputs, modes_chain  # noqa: E402


def _ref(model, x) -> np.ndarray:
    with torch.no_grad():
        return model(x).double().numpy()


@pytest.mark.parametrize("model_name", ["mlp", "cnn", "conv1d"])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
def test_fixed_models_bit_exact(tmp_path, model_name, granularity):
    model = built_model([f"model={model_name}", f"quantization.granularity={granularity}"])
    x = edge_inputs(64)
    path = to_qonnx(model, x, tmp_path / "m.onnx")
    out = run_qonnx(path, x.numpy())
    ref = _ref(model, x)
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out, ref)


def test_hgq_per_weight_and_per_feature_bit_exact(tmp_path):
    model = built_model(["quantization=hgq"])
    fmt = model.fc1.input_quantizer.f
    assert fmt.shape == (64,) and len(torch.unique(fmt)) > 1  # really per feature
    x = edge_inputs(64)
    out = run_qonnx(to_qonnx(model, x, tmp_path / "hgq.onnx"), x.numpy())
    np.testing.assert_array_equal(out, _ref(model, x))


def test_every_round_mode_at_ties_and_saturation(tmp_path):
    overflows = ["SAT", "SAT_SYM"] * len(ROUND_MODES)
    model = modes_chain(ROUND_MODES + ROUND_MODES, overflows)
    x = edge_inputs(6)
    ref = _ref(model, x)
    np.testing.assert_array_equal(run_qonnx(to_qonnx(model, x, tmp_path / "m.onnx"),
                                            x.numpy()), ref)
    # the inputs do reach ties: modes that only differ at ties give different outputs
    outs = {}
    for mode in ("RND", "RND_CONV", "RND_MIN_INF", "RND_ZERO", "RND_INF"):
        outs[mode] = _ref(modes_chain([mode], ["SAT"]), x)
    assert len({o.tobytes() for o in outs.values()}) == len(outs)
    assert np.abs(outs["RND"]).max() == 8.0  # and saturation (at -8; +7.9375 on top)
    assert outs["RND"].max() == 7.9375


def test_file_is_standard_qonnx(tmp_path):
    model = built_model(["model=cnn"])
    path = to_qonnx(model, edge_inputs(64), tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    ops = {n.op_type for n in proto.graph.node}
    assert {"Quant", "Conv", "Gemm", "AveragePool", "Relu"} <= ops
    wrapper = cleanup_model(ModelWrapper(proto)).transform(InferShapes())
    quant = [n for n in wrapper.graph.node if n.op_type == "Quant"]
    assert all(n.domain == "qonnx.custom_op.general" for n in quant)
