"""WRAP_SM needs signed formats (ap_fixed has no ap_ufixed<..., AP_WRAP_SM>): refused before any
model surgery, naming the setting; ReLU inputs keep a signed format under wrapping data modes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pquant import ConfigError, add_compression_layers
from pquant.config.sections import sections
from pquant.nn.activation import PQActivation


@pytest.mark.parametrize("kind, mode", [("data", "overflow_mode_data"),
                                        ("weight", "overflow_mode_parameters")])
def test_unsigned_default_format_with_wrap_sm_is_a_config_error(compose, kind, mode):
    cfg = compose([f"quantization.{mode}=WRAP_SM",
                   f"quantization.default_{kind}_keep_negatives=0"])
    with pytest.raises(ConfigError) as err:
        sections(cfg)
    message = str(err.value)
    assert f"quantization.{mode}=WRAP_SM" in message
    assert f"quantization.default_{kind}_keep_negatives=1" in message
    assert "got default_" in message


def test_unsigned_layer_override_with_wrap_sm_names_the_layer(compose, tiny_mlp):
    cfg = compose(["+quantization.layer_specific={fc1: {input: {keep_negatives: 0, "
                   "overflow_mode: WRAP_SM}}}"])
    with pytest.raises(ConfigError) as err:
        add_compression_layers(tiny_mlp(), cfg)
    message = str(err.value)
    assert "fc1 (input)" in message and "WRAP_SM" in message and "keep_negatives=0" in message


@pytest.mark.parametrize("mode", ["WRAP", "WRAP_SM"])
def test_relu_inputs_stay_signed_under_wrapping_data_modes(compose, tiny_mlp, mode):
    model = add_compression_layers(tiny_mlp(), compose([f"quantization.overflow_mode_data={mode}"]))
    relus = [m for m in model.modules() if isinstance(m, PQActivation)]
    assert relus
    for act in relus:
        for q in (act.input_quantizer, act.output_quantizer):
            assert q.spec.k == 1 and q.spec.overflow_mode.name == mode
    model.eval()
    with torch.no_grad():  # a negative pre-activation must not wrap into a positive one
        x = torch.full((1, 8), -3.0)
        assert (relus[0](x) == 0).all()


def test_saturating_relu_inputs_stay_unsigned(compose, tiny_mlp):
    model = add_compression_layers(tiny_mlp(), compose([]))
    act = next(m for m in model.modules() if isinstance(m, PQActivation))
    assert act.input_quantizer.spec.k == 0


def test_cli_refuses_unsigned_wrap_sm(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pquant", "quantization.overflow_mode_data=WRAP_SM",
         "quantization.default_data_keep_negatives=0", "tracking=none",
         f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "quantization.overflow_mode_data=WRAP_SM" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("mode", ["WRAP", "WRAP_SM"])
@pytest.mark.parametrize("fn", [torch.nn.Sigmoid, lambda: torch.nn.Softmax(dim=-1),
                                torch.nn.Tanh])
def test_bounded_outputs_do_not_wrap_under_wrapping_modes(compose, mode, fn):
    model = add_compression_layers(torch.nn.Sequential(torch.nn.Linear(4, 4), fn()),
                                   compose([f"quantization.overflow_mode_data={mode}"]))
    model.eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(4))
        model[0].bias.zero_()
        y = model(torch.tensor([[7.9, -7.9, 0.0, 0.0]]))
    assert y.abs().max() > 0.9, y  # sigmoid(7.9), softmax's 1.0 and tanh(+-7.9) stay near 1


def test_hgq_wrap_sm_model_finalises(compose, tiny_mlp):
    from pquant.nn.finalize import finalize

    model = add_compression_layers(tiny_mlp(), compose([
        "quantization.use_hgq=true", "quantization.overflow_mode_data=WRAP_SM"]))
    x = torch.randn(5, 8)
    model.eval()
    with torch.no_grad():
        before = model(x)
        finalize(model)
        assert torch.equal(model(x), before)
