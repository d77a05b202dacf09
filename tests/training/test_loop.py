"""The stage loop: hook order, losses per stage, save/rewind, targets, determinism."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from pquant import add_compression_layers, train_model
from pquant.data.synthetic import SyntheticData
from pquant.pruning.base import PruningConfig, PruningMethod, Stage

EVENTS: list[str] = []


@dataclass
class RecorderConfig(PruningConfig):
    _target_: str = "tests.training.test_loop.Recorder"
    pruning_method: str = "recorder_for_tests"


class Recorder(PruningMethod):
    """Logs every hook call (only for the first layer) and adds a loss that counts its calls."""

    def __init__(self, config, weight_shape, layer_type):
        super().__init__(config, weight_shape, layer_type)
        self.log = tuple(weight_shape) == (16, 8)  # the first layer only
        self.loss_calls = {s: 0 for s in Stage}

    def _rec(self, text):
        if self.log:
            EVENTS.append(text)

    def forward(self, weight):
        return weight

    def hard_mask(self, weight):
        return torch.ones_like(weight)

    def extra_loss(self):
        self.loss_calls[self.stage] += 1
        return torch.zeros(())

    def on_epoch_start(self, info):
        self._rec(f"start {info.stage.name[0]}{info.round}.{info.epoch}/{info.num_epochs}")

    def on_epoch_end(self, info, weight):
        self._rec(f"end {info.stage.name[0]}{info.round}.{info.epoch}")

    def on_pretraining_end(self):
        super().on_pretraining_end()
        self._rec("pretraining_end")

    def on_round_end(self, info, weight):
        self._rec(f"round_end {info.round} last={info.is_last}")

    def on_finetuning_start(self, weight):
        super().on_finetuning_start(weight)
        self._rec("finetuning_start")


def _setup(training, pruning=None, tiny_mlp=None, quantize=False):
    torch.manual_seed(0)
    data = SyntheticData(n_samples=160, n_features=8, n_classes=3)
    cfg = {
        "training": {"progress": False, "batch_size": 32, **training},
        "pruning": pruning or RecorderConfig(),
        "quantization": ({"default_data_keep_negatives": 1, "default_data_integer_bits": 3,
                          "default_data_fractional_bits": 4,
                          "default_weight_keep_negatives": 1,
                          "default_weight_fractional_bits": 7}
                         if quantize else {"enable_quantization": False}),
    }
    model = add_compression_layers(tiny_mlp(), cfg)
    return model, cfg, data.train_loader(32, seed=0), data.val_loader(64)


def test_hook_order_and_stage_events(tiny_mlp):
    EVENTS.clear()
    model, cfg, train, val = _setup({"pretraining_epochs": 1, "epochs": 2, "rounds": 2,
                                     "fine_tuning_epochs": 1}, tiny_mlp=tiny_mlp)
    result = train_model(model, cfg, train, val)
    assert EVENTS == [
        "start P0.0/1", "end P0.0", "pretraining_end",
        "start T0.0/2", "end T0.0", "start T0.1/2", "end T0.1", "round_end 0 last=False",
        "start T1.0/2", "end T1.0", "start T1.1/2", "end T1.1", "round_end 1 last=True",
        "finetuning_start", "start F0.0/1", "end F0.0",
    ]
    assert result.stage_order == [
        "stage:pretraining", "on_pretraining_end", "stage:training:0", "on_round_end:0",
        "stage:training:1", "on_round_end:1", "on_finetuning_start", "stage:finetuning",
    ]
    assert [h["stage"] for h in result.history] == [0, 1, 1, 1, 1, 2]
    assert all("val/accuracy" in h and "train/loss" in h for h in result.history)


def test_hooks_run_even_for_empty_stages(tiny_mlp):
    EVENTS.clear()
    model, cfg, train, val = _setup({"pretraining_epochs": 0, "epochs": 1,
                                     "fine_tuning_epochs": 0}, tiny_mlp=tiny_mlp)
    train_model(model, cfg, train, val)
    assert EVENTS == ["pretraining_end", "start T0.0/1", "end T0.0", "round_end 0 last=True",
                      "finetuning_start"]


def test_extra_loss_only_in_the_training_stage(tiny_mlp):
    model, cfg, train, val = _setup({"pretraining_epochs": 1, "epochs": 2,
                                     "fine_tuning_epochs": 1}, tiny_mlp=tiny_mlp)
    train_model(model, cfg, train, val)
    calls = model.fc1.pruning.loss_calls
    assert calls[Stage.PRETRAINING] == 0 and calls[Stage.FINETUNING] == 0
    assert calls[Stage.TRAINING] == 2 * len(train)


@pytest.mark.parametrize("policy", ["never", "post-training-stage", "every-round"])
def test_rewind_policies(tiny_mlp, policy):
    EVENTS.clear()
    snapshots = {}
    model, cfg, train, val = _setup({"pretraining_epochs": 0, "epochs": 3, "rounds": 2,
                                     "fine_tuning_epochs": 0, "rewind": policy,
                                     "save_weights_epoch": 1}, tiny_mlp=tiny_mlp)

    def on_epoch_end(metrics, step):
        if step == 0:  # end of epoch 0 of round 0 == start of epoch 1: the snapshot
            snapshots["w"] = model.fc1.weight.detach().clone()
        if step == 2:
            snapshots["end_round0"] = model.fc1.weight.detach().clone()

    result = train_model(model, cfg, train, val, on_epoch_end=on_epoch_end)
    final = model.fc1.weight.detach()
    rewinds = result.stage_order.count("rewind")
    assert "save_weights:1" in result.stage_order
    # the method's end-of-round step runs for every round, whatever the rewind policy
    assert sum(e.startswith("round_end") for e in EVENTS) == 2
    if policy == "never":
        assert rewinds == 0 and not torch.equal(final, snapshots["w"])
    elif policy == "post-training-stage":
        assert rewinds == 1 and torch.equal(final, snapshots["w"])
        assert result.stage_order.index("rewind") > result.stage_order.index("on_round_end:1")
    else:
        assert rewinds == 2 and torch.equal(final, snapshots["w"])
        assert result.stage_order.index("rewind") < result.stage_order.index("stage:training:1")


def test_pdp_reaches_its_target(tiny_mlp):
    from pquant.pruning.pdp import PDPConfig

    model, cfg, train, val = _setup({"pretraining_epochs": 1, "epochs": 4,
                                     "fine_tuning_epochs": 1},
                                    pruning=PDPConfig(sparsity=0.7, epsilon=0.5),
                                    tiny_mlp=tiny_mlp, quantize=True)
    result = train_model(model, cfg, train, val)
    assert result.warnings == []
    for layer in (model.fc1, model.fc2, model.out):
        mask = layer.pruning.mask
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert 1 - mask.mean().item() == pytest.approx(0.7, abs=0.01)
    assert result.history[-1]["sparsity/global"] == pytest.approx(0.7, abs=0.01)


def test_short_schedule_warns_before_and_after(tiny_mlp):
    from pquant.pruning.pdp import PDPConfig

    model, cfg, train, val = _setup({"pretraining_epochs": 0, "epochs": 2},
                                    pruning=PDPConfig(sparsity=0.8, epsilon=0.1),
                                    tiny_mlp=tiny_mlp)
    result = train_model(model, cfg, train, val)
    assert "training.epochs" in result.warnings[0] and "0.160" in result.warnings[0]
    assert "fc1 0.156" in result.warnings[1] and "asked for 0.800" in result.warnings[1]


def test_same_seed_same_result(tiny_mlp):
    from pquant.pruning.pdp import PDPConfig

    weights = []
    for _ in range(2):
        model, cfg, train, val = _setup({"pretraining_epochs": 1, "epochs": 2},
                                        pruning=PDPConfig(sparsity=0.5, epsilon=0.5),
                                        tiny_mlp=tiny_mlp, quantize=True)
        train_model(model, cfg, train, val)
        weights.append([p.detach().clone() for p in model.parameters()] +
                       [model.fc1.pruning.mask.clone()])
    for a, b in zip(*weights):
        assert torch.equal(a, b)


def test_quantized_training_learns(tiny_mlp):
    from pquant.metrics.accuracy import evaluate

    model, cfg, train, val = _setup({"pretraining_epochs": 0, "epochs": 30,
                                     "optimizer": {"_target_": "torch.optim.Adam",
                                                   "_partial_": True, "lr": 0.01}},
                                    pruning=None, tiny_mlp=tiny_mlp, quantize=True)
    cfg["pruning"] = {"pruning_method": "none"}
    before = evaluate(model, val)["accuracy"]
    train_model(model, cfg, train, val)
    assert evaluate(model, val)["accuracy"] > max(before, 0.6)
