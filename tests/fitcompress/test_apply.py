"""FITCompress on real converted models: applied formats and masks, every layer type, the loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pquant import add_compression_layers, load_config, train_model
from pquant.config.sections import sections
from pquant.fitcompress import run_fitcompress, weight_compression
from pquant.fitcompress.mask import SearchedMask
from pquant.quant.fixed_point import quantize
from tests.conftest import FAST

BASE = [*FAST, "fitcompress=on", "fitcompress.fisher_batches=4", "fitcompress.fisher_min_batches=4"]


def _data(n_in=8, n_out=3, n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=g)
    y = (x[:, :n_out].argmax(1))
    return [(x[i:i + 32], y[i:i + 32]) for i in range(0, n, 32)]


def _model(overrides, model=None, n_in=8, n_out=3):
    from pquant.models.mlp import mlp

    base = BASE
    if any(o.startswith("pruning=") for o in overrides):  # (epsilon is PDP's)
        base = [o for o in BASE if not o.startswith("pruning.epsilon")]
    cfg = load_config(base + list(overrides))
    torch.manual_seed(0)
    model = model if model is not None else mlp(n_in, n_out, (16, 8), "relu")
    return add_compression_layers(model, cfg), cfg


def _search(overrides, model=None, n_in=8, n_out=3):
    model, cfg = _model(overrides, model, n_in, n_out)
    outcome = run_fitcompress(model, sections(cfg), _data(n_in, n_out), nn.CrossEntropyLoss(),
                              torch.device("cpu"))
    return model, outcome


def _layers(model):
    return {n: m for n, m in model.named_modules() if hasattr(m, "weight_quantizer")
            and type(m).__name__.startswith("PQ") and hasattr(m, "pruning")}


@pytest.mark.parametrize("quant", [
    [], ["quantization.granularity=per_channel"], ["quantization.granularity=per_weight"],
    ["quantization=hgq"], ["quantization.round_mode=RND_CONV",
                           "quantization.overflow_mode_parameters=WRAP"]],
    ids=["fixed", "per_channel", "per_weight", "hgq", "rnd_conv_wrap"])
def test_applied_weights_are_the_searched_ones(quant):
    """After the search the layers compute exactly the weights the search evaluated."""
    model, outcome = _search(["fitcompress.compression_goal=0.12",
                              "fitcompress.optimize_pruning=true", *quant])
    r = outcome.result
    assert r.reached and any(b is not None for b in r.bits)
    model.eval()
    layers = _layers(model)
    for name, bits, mask in zip(r.layers, r.bits, r.masks):
        layer = layers[name]
        if mask is not None:
            assert isinstance(layer.pruning, SearchedMask)
        if bits is None:
            continue
        entry = outcome.layer_specific[name]["weight"]
        k, i, f = entry["keep_negatives"], entry["integer_bits"], entry["fractional_bits"]
        assert k + i + f == bits
        q = layer.weight_quantizer
        assert float(q.bits().float().mean()) == bits
        w = layer.weight.detach() * (1 if mask is None else mask)
        if type(q).__name__ == "FixedPointQuantizer" or type(q).__name__ == "HGQQuantizer":
            expected = quantize(w, k, i, f, q.round_mode, q.overflow_mode, training=False)
            with torch.no_grad():
                assert torch.equal(layer.effective_weight(), expected)
    assert outcome.result.compression <= 0.12
    # the size the search reached is the size the model has (same definition)
    assert weight_compression(model) == pytest.approx(r.compression, rel=1e-6)


def test_layer_specific_entries_rebuild_the_same_formats():
    model, outcome = _search(["fitcompress.compression_goal=0.12"])
    overrides = [
        f"+quantization.layer_specific.{n}.weight={{keep_negatives:{e['weight']['keep_negatives']},"
        f"integer_bits:{e['weight']['integer_bits']},fractional_bits:{e['weight']['fractional_bits']}}}"
        for n, e in outcome.layer_specific.items()]
    assert overrides
    again, _ = _model(["fitcompress=off", *overrides])
    layers, fresh = _layers(model), _layers(again)
    for name in outcome.layer_specific:
        assert layers[name].weight_quantizer.spec == fresh[name].weight_quantizer.spec
    text = outcome.overrides_yaml()
    assert text.startswith("# @package _global_")
    for line in overrides:
        assert line in text


def test_disable_pruning_for_layers_is_respected():
    model, outcome = _search(["fitcompress.optimize_pruning=true",
                              "fitcompress.optimize_quantization=false",
                              "fitcompress.compression_goal=0.15",
                              "pruning.disable_pruning_for_layers=[fc1]"])
    r = outcome.result
    assert r.sparsity[r.layers.index("fc1")] == 0.0
    assert _layers(model)["fc1"].pruning is None
    assert r.reached and r.global_sparsity > 0.4
    assert all(isinstance(_layers(model)[n].pruning, SearchedMask) for n in r.layers
               if n != "fc1")


def test_conv1d_and_conv2d_layers_take_part():
    from pquant.models.conv import cnn, conv1d

    for build, convs in ((cnn, {"conv1", "conv2"}), (conv1d, {"conv1", "conv2"})):
        torch.manual_seed(0)
        model, outcome = _search(["fitcompress.compression_goal=0.1",
                                  "fitcompress.optimize_pruning=true"],
                                 build(64, 3), n_in=64, n_out=3)
        r = outcome.result
        assert convs <= set(r.layers)
        assert {"fc", "out"} <= set(r.layers)
        assert r.reached
        moved = {m.split(":")[0] for m in r.moves}
        assert moved & convs, r.moves
        for name in convs:
            layer = _layers(model)[name]
            assert isinstance(layer.pruning, SearchedMask)
            assert layer.pruning.mask.shape == layer.weight.shape


def test_unreachable_goal_warns_and_training_continues():
    model, cfg = _model(["fitcompress.compression_goal=0.01",
                         "fitcompress.quantization_schedule=[6]"])
    result = train_model(model, cfg, _data(), _data(seed=1))
    fit = result.fitcompress
    assert fit is not None and not fit.result.reached
    assert fit.result.bits == [6, 6, 6]  # closest: every layer at the lowest width
    assert any("cannot be reached" in w and "closest node" in w for w in result.warnings)
    assert result.history[-1]["stage"] == 2.0  # training went on to the end
    assert "fitcompress" in result.stage_order


def test_enable_fitcompress_switch():
    model, cfg = _model(["fitcompress=off"])
    result = train_model(model, cfg, _data(), _data(seed=1))
    assert result.fitcompress is None and "fitcompress" not in result.stage_order
    model, cfg = _model([])
    result = train_model(model, cfg, _data(), _data(seed=1))
    assert result.fitcompress is not None
    order = result.stage_order
    assert order.index("stage:pretraining") < order.index("fitcompress") < order.index(
        "on_pretraining_end")


def test_training_keeps_the_searched_masks_frozen():
    model, cfg = _model(["fitcompress.optimize_pruning=true",
                         "fitcompress.optimize_quantization=false",
                         "fitcompress.compression_goal=0.15", "pruning=cs"])
    result = train_model(model, cfg, _data(), _data(seed=1))
    r = result.fitcompress.result
    for name, mask in zip(r.layers, r.masks):
        layer = _layers(model)[name]
        assert torch.equal(layer.hard_mask().bool(), mask)
        with torch.no_grad():
            assert torch.all(layer.effective_weight()[~mask] == 0)


def test_fisher_batches_setting_is_read():
    _, few = _search(["fitcompress.fisher_batches=2", "fitcompress.fisher_min_batches=2"])
    _, more = _search(["fitcompress.fisher_batches=6", "fitcompress.fisher_min_batches=6"])
    assert few.result.fisher_batches == 2 * few.result.fisher_evaluations
    assert more.result.fisher_batches == 6 * more.result.fisher_evaluations


def test_quantization_schedule_field_is_read():
    _, five = _search(["fitcompress.quantization_schedule=[5]",
                       "fitcompress.compression_goal=0.01"])
    _, three = _search(["fitcompress.quantization_schedule=[6,3]",
                        "fitcompress.compression_goal=0.01"])
    assert five.result.bits == [5, 5, 5] and three.result.bits == [3, 3, 3]


def test_pruning_schedule_field_is_read():
    args = ["fitcompress.optimize_pruning=true", "fitcompress.optimize_quantization=false",
            "fitcompress.compression_goal=0.2"]
    _, coarse = _search([*args, "fitcompress.pruning_schedule.end=-1",
                         "fitcompress.pruning_schedule.steps=2"])
    _, fine = _search(args)
    assert coarse.result.moves == ("prune:0.9",)
    assert fine.result.moves[0] == "prune:0.1623"
    assert coarse.result.global_sparsity != fine.result.global_sparsity
