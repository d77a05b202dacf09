"""What cannot be exported exactly is refused, naming the layer, the setting and the fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("qonnx")
pytest.importorskip("hls4ml")

import pquant  # noqa: E402
from pquant.export import ExportError, to_hls4ml, to_qonnx  # noqa: E402
from pquant.export.config import export_settings  # noqa: E402
from pquant.nn.dense import PQDense  # noqa: E402
from pquant.nn.norm import PQLayerNorm  # noqa: E402
from pquant.quant.quantizer import FixedPointQuantizer  # noqa: E402
from tests.export.helpers import built_model, edge_inputs, modes_chain  # noqa: E402


def test_wrap_refused_by_qonnx_accepted_by_hls4ml_writer(tmp_path):
    model = modes_chain(["RND"], ["WRAP"])
    with pytest.raises(ExportError, match=r"0\.output_quantizer: overflow mode WRAP .*SAT"):
        to_qonnx(model, edge_inputs(6), tmp_path / "m.onnx")


@pytest.mark.parametrize("export", ["qonnx", "hls4ml"])
def test_wrap_sm_refused(tmp_path, export):
    model = modes_chain(["RND"], ["WRAP_SM"])
    with pytest.raises(ExportError, match="WRAP_SM"):
        if export == "qonnx":
            to_qonnx(model, edge_inputs(6), tmp_path / "m.onnx")
        else:
            to_hls4ml(model, edge_inputs(6), tmp_path / "prj")


def test_non_relu_activation_refused(tmp_path):
    model = built_model(["model.activation=tanh"])
    with pytest.raises(ExportError, match=r"layer 'act1': activation 'hard_tanh'.*relu"):
        to_qonnx(model, edge_inputs(64), tmp_path / "m.onnx")


def test_layer_without_rule_refused_by_name(tmp_path):
    model = nn.Sequential(PQLayerNorm(4, input_quantizer=FixedPointQuantizer(1, 3, 4)))
    pquant.finalize(model.eval())
    with pytest.raises(ExportError, match=r"layer '0' \(PQLayerNorm\) has no export rule"):
        to_qonnx(model, torch.zeros(2, 4), tmp_path / "m.onnx")
    plain = nn.Sequential(nn.Tanh())
    with pytest.raises(ExportError, match=r"layer '0' \(Tanh\) has no export rule"):
        to_qonnx(plain, torch.zeros(2, 4), tmp_path / "m.onnx")


def test_unfinalised_and_non_sequential_refused(tmp_path):
    layer = PQDense(4, 4, input_quantizer=FixedPointQuantizer(1, 3, 4))
    with pytest.raises(ExportError, match="not finalised"):
        to_qonnx(nn.Sequential(layer), torch.zeros(2, 4), tmp_path / "m.onnx")

    class Residual(nn.Module):
        def forward(self, x):
            return x + x

    with pytest.raises(ExportError, match="only nn.Sequential"):
        to_qonnx(Residual(), torch.zeros(2, 4), tmp_path / "m.onnx")


def test_batchnorm_without_output_quantizer_refused(tmp_path):
    model = built_model(["model=cnn"])
    model.bn1.output_quantizer = None  # (as with quantize_output=false for this layer)
    with pytest.raises(ExportError, match=r"layer 'bn1'.*output quantizer"):
        to_hls4ml(model, edge_inputs(64), tmp_path / "prj")


def test_missing_input_quantizer_refused_by_hls4ml(tmp_path):
    model = nn.Sequential(PQDense(4, 4, output_quantizer=FixedPointQuantizer(1, 3, 4)))
    pquant.finalize(model.eval())
    with pytest.raises(ExportError, match="quantize_input=true"):
        to_hls4ml(model, torch.zeros(2, 4), tmp_path / "prj")


def test_export_extra_missing_is_named(monkeypatch):
    import sys

    from pquant.errors import ConfigError

    monkeypatch.setitem(sys.modules, "hls4ml", None)
    with pytest.raises(ConfigError, match=r"export=hls4ml needs the optional 'export' extra"):
        export_settings({"export": {"formats": ["hls4ml"]}})
    with pytest.raises(ConfigError, match=r"export.formats must be a subset"):
        export_settings({"export": {"formats": ["onnx"]}})
