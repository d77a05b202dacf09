"""A contract every pruning method passes, run through the real training loop."""

from __future__ import annotations

import pytest
import torch

from pquant import add_compression_layers, train_model
from pquant.data.synthetic import SyntheticData
from pquant.nn.weight_layer import CompressedWeightMixin
from pquant.pruning.base import EpochInfo, PruningMethod, RoundInfo, Stage

#: settings that make each method prune within a few epochs of tiny data
METHODS = {
    "pdp": ["pruning.epsilon=0.5", "pruning.sparsity=0.5"],
    "cs": ["pruning.threshold_decay=1e-3"],
    "dst": ["pruning.alpha=1e-2", "pruning.threshold_init=0.05"],
    "wanda": ["pruning.t_start_collecting_batch=1", "pruning.t_delta=2", "pruning.sparsity=0.5",
              "pruning.calculate_pruning_budget=false"],
    "autosparse": ["pruning.threshold_init=-2.5"],
    "activation_pruning": ["pruning.t_start_collecting_batch=1", "pruning.t_delta=2",
                           "pruning.threshold=0.4"],
    "mdmm": ["pruning.target_sparsity=0.5", "pruning.epsilon=0.02", "pruning.scale=100"],
}
SHORT = ["training.pretraining_epochs=1", "training.epochs=4", "training.fine_tuning_epochs=1",
         "training.progress=false", "quantization=none", "training.optimizer.lr=0.01"]


def _run(compose, tiny_mlp, method, extra=(), seed=0):
    torch.manual_seed(seed)
    cfg = compose([f"pruning={method}", *METHODS[method], *SHORT, *extra])
    data = SyntheticData(n_samples=240, n_features=8, n_classes=3)
    model = add_compression_layers(tiny_mlp(), cfg)
    result = train_model(model, cfg, data.train_loader(32, seed=seed), data.val_loader(64))
    return model, result


def _layers(model):
    return [m for m in model.modules() if isinstance(m, CompressedWeightMixin)
            and m.pruning is not None]


@pytest.mark.parametrize("method", list(METHODS))
class TestPruningContract:
    def test_prunes_and_masks_are_binary_after_finetuning_starts(self, compose, tiny_mlp,
                                                                 method):
        model, result = _run(compose, tiny_mlp, method)
        assert result.history[-1]["sparsity/global"] > 0
        for layer in _layers(model):
            assert layer.pruning.stage is Stage.FINETUNING
            mask = layer.hard_mask()
            assert set(mask.unique().tolist()) <= {0.0, 1.0}

    def test_finetuning_forward_equals_training_hard_masked_weights(self, compose, tiny_mlp,
                                                                   method):
        model, _ = _run(compose, tiny_mlp, method, ["training.fine_tuning_epochs=0"])
        for layer in _layers(model):
            p = layer.pruning
            w = layer.weight.detach()
            p.set_stage(Stage.TRAINING)
            trained = p(w).detach()
            hard = p.hard_mask(w)
            p.set_stage(Stage.FINETUNING)
            tuned = p(w).detach()
            if method == "autosparse":  # its training forward is already exactly sparse
                assert torch.equal(tuned, trained)
            else:
                assert torch.equal(tuned, w * hard)

    def test_disabled_pruning_is_identity(self, compose, tiny_mlp, method):
        model, result = _run(compose, tiny_mlp, method, ["pruning.enable_pruning=false"])
        assert _layers(model) == []
        assert all(h["sparsity/global"] == 0 for h in result.history)

    def test_same_seed_same_masks(self, compose, tiny_mlp, method):
        a, _ = _run(compose, tiny_mlp, method, seed=3)
        b, _ = _run(compose, tiny_mlp, method, seed=3)
        for la, lb in zip(_layers(a), _layers(b)):
            assert torch.equal(la.hard_mask(), lb.hard_mask())

    def test_hooks_run_in_the_documented_order(self, compose, tiny_mlp, method, monkeypatch):
        events = []
        cls = type(_layers(add_compression_layers(
            tiny_mlp(), compose([f"pruning={method}", *METHODS[method]])))[0].pruning)

        def wrap(name):
            original = getattr(cls, name)

            def recorder(self, *args, **kwargs):
                events.append((name, self.stage))
                return original(self, *args, **kwargs)

            return recorder

        for name in ("on_pretraining_end", "on_round_end", "on_finetuning_start", "observe",
                     "extra_loss"):
            monkeypatch.setattr(cls, name, wrap(name))
        original_plan = cls.plan_budget.__func__
        monkeypatch.setattr(cls, "plan_budget", classmethod(
            lambda c, layers: (events.append(("plan_budget", None)),
                               original_plan(c, layers))[1]))
        _run(compose, tiny_mlp, method)
        names = [e[0] for e in events]
        assert names.index("plan_budget") < names.index("on_pretraining_end")
        first_ft = names.index("on_finetuning_start")
        assert names.index("on_round_end") < first_ft
        for name, stage in events:
            if name in ("observe", "extra_loss"):
                assert stage is Stage.TRAINING, (name, stage)


def _drive(method: PruningMethod, weights: list[torch.Tensor], x: torch.Tensor):
    """Feed a method a fixed sequence of training-stage steps; return its outputs."""
    outs = []
    for epoch, w in enumerate(weights):
        info = EpochInfo(Stage.TRAINING, epoch, len(weights))
        method.on_epoch_start(info)
        y = method(w)
        if method.observes and method.wants_observations:
            method.observe(x, x @ w.t())
        loss = method.extra_loss()
        outs.append((y.detach().clone(), None if loss is None else loss.detach().clone()))
        method.on_epoch_end(info, w)
    return outs


@pytest.mark.parametrize("method", list(METHODS))
def test_state_dict_round_trip_mid_training_resumes_identically(compose, method):
    from hydra.utils import get_class

    from pquant.config.sections import sections

    cfg = sections(compose([f"pruning={method}", *METHODS[method]])).pruning
    cls = get_class(cfg._target_)
    torch.manual_seed(0)
    weights = [torch.randn(6, 8) * 0.3 for _ in range(6)]
    x = torch.randn(16, 8)
    a = cls(cfg, torch.Size((6, 8)), "linear")
    a.on_pretraining_end()
    _drive(a, weights[:3], x)
    state = {k: v.clone() for k, v in a.state_dict().items()}
    rest_a = _drive(a, weights[3:], x)
    b = cls(cfg, torch.Size((6, 8)), "linear")
    b.load_state_dict(state)
    rest_b = _drive(b, weights[3:], x)
    for (ya, la), (yb, lb) in zip(rest_a, rest_b):
        assert torch.equal(ya, yb)
        assert (la is None and lb is None) or torch.equal(la, lb)
    a.on_round_end(RoundInfo(0, 1), weights[-1])
    b.on_round_end(RoundInfo(0, 1), weights[-1])
    a.on_finetuning_start(weights[-1])
    b.on_finetuning_start(weights[-1])
    assert torch.equal(a.hard_mask(weights[-1]), b.hard_mask(weights[-1]))
