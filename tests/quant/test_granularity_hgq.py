"""Granularities, range-split and dynamic fixed point, HGQ parameters and learning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pquant import add_compression_layers, train_model
from pquant.quant.adaptive import DynamicDataQuantizer, RangeSplitQuantizer
from pquant.quant.fixed_point import quantize
from pquant.quant.granularity import Granularity
from pquant.quant.hgq import HGQQuantizer


def _conv_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


@pytest.mark.parametrize(("granularity", "dense", "conv"), [
    ("per_tensor", (), ()),
    ("per_channel", (3, 1), (4, 1, 1, 1)),
    ("per_weight", (3, 64), (4, 2, 3, 3)),
])
def test_hgq_weight_bit_shapes(compose, granularity, dense, conv):
    model = add_compression_layers(_conv_model(), compose(
        ["quantization=hgq", f"quantization.granularity={granularity}"]))
    assert tuple(model[3].weight_quantizer.f.shape) == dense
    assert tuple(model[0].weight_quantizer.f.shape) == conv


def test_hgq_per_feature_data_bit_shapes(compose):
    model = add_compression_layers(_conv_model(), compose(
        ["quantization=hgq", "quantization.quantize_output=true"]))
    assert tuple(model[0].input_quantizer.f.shape) == (2, 1, 1)  # conv input channels
    assert tuple(model[0].output_quantizer.f.shape) == (4, 1, 1)
    assert tuple(model[1].input_quantizer.f.shape) == (4, 1, 1)  # relu after the conv
    assert tuple(model[3].input_quantizer.f.shape) == (64,)  # dense input features
    torch.manual_seed(0)
    seq1d = nn.Sequential(nn.Conv1d(3, 5, 3), nn.ReLU())
    m1 = add_compression_layers(seq1d, compose(["quantization=hgq",
                                                "quantization.quantize_output=true"]))
    assert tuple(m1[1].output_quantizer.f.shape) == (5, 1)


def test_hgq_parameters_exist_before_the_first_forward(compose, tiny_mlp):
    model = add_compression_layers(tiny_mlp(), compose(["quantization=hgq"]))
    names = [n for n, _ in model.named_parameters()]
    # integer and fractional bits of each quantizer: one (2, *shape) parameter (i, f)
    for expected in ("fc1.weight_quantizer.i_f", "fc1.input_quantizer.i_f",
                     "act1.input_quantizer.i_f", "out.bias_quantizer.i_f"):
        assert expected in names
    assert model.fc1.weight_quantizer.i_f.shape == (2, *model.fc1.weight.shape)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)  # built before any forward
    before = model.fc1.weight_quantizer.f.detach().clone()
    out = model(torch.randn(16, 8))
    (out.square().mean() + model.fc1.weight_quantizer.regularizer()).backward()
    opt.step()
    assert not torch.equal(model.fc1.weight_quantizer.f, before)


def test_fixed_point_per_channel_split_follows_each_channel():
    q = RangeSplitQuantizer(1, 8, "RND", "SAT", Granularity.per_channel)
    w = torch.tensor([[0.3, -0.1, 0.05], [2.5, 1.0, -3.9], [0.0, 0.0, 0.0]])
    i, f = q.split(w)
    assert i.view(-1).tolist() == [-1.0, 2.0, 0.0] and f.view(-1).tolist() == [8.0, 5.0, 7.0]
    out = q(w)
    for row in range(3):
        expected = quantize(w[row], 1, float(i[row]), float(f[row]))
        assert torch.equal(out[row], expected)
    assert float(q.bits()) == 8


def test_fixed_point_per_weight_split():
    q = RangeSplitQuantizer(1, 4, "RND", "SAT", Granularity.per_weight)
    w = torch.tensor([0.3, 3.0, -0.05])
    # each weight gets the fewest integer bits holding it: i = -1, 2, -4; f = 3 - i
    assert q(w).tolist() == [0.3125, 3.0, -0.046875]


def test_fixed_point_granularity_in_the_model(compose):
    model = add_compression_layers(_conv_model(), compose(
        ["quantization.granularity=per_channel"]))
    assert isinstance(model[0].weight_quantizer, RangeSplitQuantizer)
    assert model[0].bias_quantizer.spec is not None  # biases stay per tensor in fixed point


def test_dynamic_data_range_follows_training_and_freezes_in_eval():
    q = DynamicDataQuantizer(1, 3, 4, "RND", "SAT", momentum=1.0)
    q.train()
    small = torch.tensor([0.1, -0.3])
    assert q(small).tolist() == [0.1015625, -0.30078125]  # range 0.5: i = -1, f = 8
    big = torch.tensor([30.0, -17.0])
    assert q(big).tolist() == [30.0, -17.0]  # range 32: i = 5, f = 2
    q.eval()
    assert q.current_split() == (5.0, 2.0)
    assert q(small).tolist() == [0.0, -0.25]  # eval keeps the frozen (wide) range


def test_dynamic_flag_builds_dynamic_quantizers(compose, tiny_mlp):
    model = add_compression_layers(tiny_mlp(), compose(
        ["quantization.dynamic_data_quantization=true"]))
    assert isinstance(model.fc1.input_quantizer, DynamicDataQuantizer)
    assert model.pquant_report.elided == []  # data formats are not constant: nothing skipped


def test_hgq_bits_fall_and_become_heterogeneous(compose, tiny_mlp):
    from pquant.data.synthetic import SyntheticData

    torch.manual_seed(0)
    data = SyntheticData(n_samples=400, n_features=8, n_classes=3)
    cfg = compose(["quantization=hgq", "pruning=none", "training.pretraining_epochs=1",
                   "training.epochs=25", "training.progress=false", "quantization.hgq_beta=1e-4",
                   "training.optimizer.lr=0.01"])
    model = add_compression_layers(tiny_mlp(), cfg)
    result = train_model(model, cfg, data.train_loader(32), data.val_loader(64))
    bits = [h["bits/weight/mean"] for h in result.history]
    assert bits[-1] < bits[1] - 1.0
    assert result.history[-1]["ebops/total"] < result.history[1]["ebops/total"]
    w_bits = model.fc1.weight_quantizer.bits()
    assert len(w_bits.unique()) > 2
    assert result.history[-1]["val/accuracy"] > 0.6


def test_hgq_bits_are_clamped_after_each_epoch():
    q = HGQQuantizer(1, 0, 4, "RND", "SAT", (3,))
    with torch.no_grad():
        q.f.copy_(torch.tensor([-100.0, 3.0, 100.0]))
    q.on_epoch_end()
    assert q.f.tolist() == [-24.0, 3.0, 24.0]


def test_zero_width_elements_output_zero():
    q = HGQQuantizer(0, 0, 2, "RND", "SAT", (3,))
    with torch.no_grad():
        q.i.copy_(torch.tensor([0.0, -2.0, 1.0]))  # widths 2, 0, 3 (k=0)
    q.eval()
    out = q(torch.tensor([[0.6, 0.6, 0.6]]))
    assert out[0, 1] == 0 and out[0, 0] != 0
    assert q.bits().tolist() == [2.0, 0.0, 3.0]


def test_wrap_mode_tracks_integer_bits_from_data():
    q = HGQQuantizer(1, 0, 2, "RND", "WRAP", ())
    assert not isinstance(q.i, nn.Parameter) and isinstance(q.f, nn.Parameter)
    q.train()
    q(torch.tensor([5.0, -3.0]))
    assert float(q.i) == 3.0


def test_hgq_state_dict_round_trip_and_separate_i_f_checkpoints():
    q = HGQQuantizer(1, 2, 5, "RND", "SAT", (3,))
    with torch.no_grad():
        q.i.copy_(torch.tensor([1.0, 2.0, 3.0]))
        q.f.copy_(torch.tensor([4.0, 5.0, 6.0]))
    r = HGQQuantizer(1, 0, 0, "RND", "SAT", (3,))
    r.load_state_dict(q.state_dict())
    assert r.i.tolist() == [1.0, 2.0, 3.0] and r.f.tolist() == [4.0, 5.0, 6.0]
    old_style = {"k": q.k, "i": torch.tensor([0.0, 1.0, 2.0]), "f": torch.tensor([7.0, 7.0, 7.0])}
    r.load_state_dict(old_style)  # separate entries, as written before i and f were one tensor
    assert r.i.tolist() == [0.0, 1.0, 2.0] and r.f.tolist() == [7.0, 7.0, 7.0]
