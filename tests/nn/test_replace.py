"""add_compression_layers: exact copies, one set of parameters, names, bit-exact transparency."""

from __future__ import annotations

import copy

import torch
from torch import nn

from pquant import add_compression_layers
from pquant.nn.activation import PQActivation
from pquant.nn.dense import PQDense


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh())
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.encoder(x))


def test_weights_copied_exactly_and_parameters_shared(compose, tiny_mlp):
    original = tiny_mlp()
    before = copy.deepcopy(original.state_dict())
    model = add_compression_layers(original, compose([]))
    for name in ("fc1", "fc2", "out"):
        assert isinstance(getattr(model, name), PQDense)
        assert torch.equal(getattr(model, name).weight, before[f"{name}.weight"])
        assert torch.equal(getattr(model, name).bias, before[f"{name}.bias"])
    # one set of parameters: nothing but the layers' own weight and bias (PDP has none)
    names = [n for n, _ in model.named_parameters()]
    assert names == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "out.weight",
                     "out.bias"]


def test_user_model_is_not_mutated_unless_inplace(compose, tiny_mlp):
    original = tiny_mlp()
    model = add_compression_layers(original, compose([]))
    assert type(original.fc1) is nn.Linear and model is not original
    with torch.no_grad():
        model.fc1.weight.add_(1.0)
    assert not torch.equal(original.fc1.weight, model.fc1.weight)
    same = add_compression_layers(original, compose([]), inplace=True)
    assert same is original and isinstance(original.fc1, PQDense)


def test_inplace_keeps_the_parameter_objects(compose, tiny_mlp):
    original = tiny_mlp()
    weight = original.fc1.weight
    add_compression_layers(original, compose([]), inplace=True)
    assert original.fc1.weight is weight  # an optimizer built before conversion stays valid


def test_disabled_pruning_and_quantization_is_bit_exact(compose):
    torch.manual_seed(0)
    original = Block()
    model = add_compression_layers(original, compose(["pruning=none", "quantization=none"]))
    x = torch.randn(64, 8)
    assert torch.equal(model(x), original(x))
    assert isinstance(model.encoder[0], PQDense) and model.encoder[0].pruning is None
    assert isinstance(model.encoder[1], nn.ReLU)  # nothing to quantize: left as is


def test_nested_modules_are_converted_with_dotted_names(compose):
    model = add_compression_layers(Block(), compose([]))
    report = model.pquant_report
    assert set(report.converted) == {"encoder.0", "encoder.1", "encoder.2", "encoder.3", "head"}
    assert report.pruned == ["encoder.0", "encoder.2", "head"]


def test_disable_pruning_for_layers_exact_and_glob(compose):
    cfg = compose(["pruning.disable_pruning_for_layers=[head,encoder.*]"])
    model = add_compression_layers(Block(), cfg)
    assert model.head.pruning is None and model.encoder[0].pruning is None
    cfg = compose(["pruning.disable_pruning_for_layers=[encoder.2]"])
    model = add_compression_layers(Block(), cfg)
    assert model.encoder[2].pruning is None and model.encoder[0].pruning is not None
    assert model.pquant_report.not_pruned == ["encoder.2"]


def test_tanh_quantizers_are_signed(compose):
    torch.manual_seed(0)
    model = add_compression_layers(Block(), compose(["quantization.use_real_tanh=true"]))
    act = model.encoder[3]
    assert isinstance(act, PQActivation) and act.activation_name == "tanh"
    assert act.input_quantizer.spec.k == 1 and act.output_quantizer.spec.k == 1
    x = torch.tensor([[-0.5, 0.3, -0.2]])
    # negative inputs are not clamped to zero (the reference computes tanh(max(x, 0)))
    assert (act(x) < 0).sum() == 2


def test_tanh_defaults_to_hard_tanh_as_the_reference(compose):
    model = add_compression_layers(Block(), compose([]))
    assert model.encoder[3].activation_name == "hard_tanh"


def test_relu_quantizers_are_unsigned_with_the_same_width(compose, tiny_mlp):
    model = add_compression_layers(tiny_mlp(), compose([]))
    spec = model.act1.input_quantizer.spec
    assert (spec.k, spec.i, spec.f) == (0, 3, 5) and spec.bits == 8


def test_quantize_input_output_flags(compose, tiny_mlp):
    cfg = compose(["quantization.quantize_input=false", "quantization.quantize_output=false"])
    model = add_compression_layers(tiny_mlp(), cfg)
    assert model.fc1.input_quantizer is None and model.fc1.output_quantizer is None
    assert model.fc1.weight_quantizer is not None and model.fc1.bias_quantizer is not None


def test_enable_quantization_false_keeps_pruning(compose, tiny_mlp):
    model = add_compression_layers(tiny_mlp(), compose(["quantization.enable_quantization=false"]))
    assert model.fc1.weight_quantizer is None and model.fc1.pruning is not None
    assert isinstance(model.act1, nn.ReLU)


def test_quantized_forward_is_on_the_grid(compose, tiny_mlp):
    model = add_compression_layers(tiny_mlp(), compose(["pruning=none"])).eval()
    out = model(torch.randn(32, 8) * 5)
    codes = out * 16  # data format f = 4
    assert torch.equal(codes, codes.round())
    w = model.fc1.effective_weight()
    assert torch.equal(w * 128, (w * 128).round())


def test_state_dict_round_trip(compose, tiny_mlp):
    cfg = compose([])
    a = add_compression_layers(tiny_mlp(), cfg)
    b = add_compression_layers(tiny_mlp(), cfg)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.5)
    result = b.load_state_dict(a.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(16, 8)
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_eval_cache_is_invalidated_by_weight_updates(compose, tiny_mlp):
    model = add_compression_layers(tiny_mlp(), compose([])).eval()
    x = torch.randn(4, 8)
    with torch.no_grad():
        first = model(x)
        assert model.fc1.effective_weight() is model.fc1.effective_weight()  # cached
        model.fc1.weight.mul_(0.5)
        second = model(x)
    assert not torch.equal(first, second)
    with torch.no_grad():
        model.fc1.weight.mul_(2.0)
        assert torch.equal(model(x), first)


def test_bare_layer_is_rejected(compose):
    import pytest

    from pquant import ConfigError

    with pytest.raises(ConfigError, match="container"):
        add_compression_layers(nn.Linear(3, 3), compose([]))
