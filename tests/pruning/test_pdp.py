"""PDP: threshold, soft mask and its gradient, schedule, hardening, structured mode."""

from __future__ import annotations

import pytest
import torch

from pquant.pruning.base import EpochInfo, RoundInfo, Stage
from pquant.pruning.pdp import PDP, PDPConfig


def make(shape=(4, 5), **kw):
    return PDP(PDPConfig(**kw), torch.Size(shape), "linear")


def to_training(p, epoch, num_epochs=100):
    if p.stage is Stage.PRETRAINING:
        p.on_pretraining_end()
    p.on_epoch_start(EpochInfo(Stage.TRAINING, epoch, num_epochs))


def test_threshold_is_midpoint_between_pruned_and_kept():
    p = make((2, 5), sparsity=0.5, epsilon=1.0)
    to_training(p, 0)
    w = torch.tensor([[0.1, -0.2, 0.3, -0.4, 0.5], [0.6, -0.7, 0.8, -0.9, 1.0]])
    # 5 of 10 pruned: largest pruned |w| = 0.5, smallest kept 0.6; squared midpoint 0.305
    assert p._threshold(w.square()) == pytest.approx(0.5 * (0.25 + 0.36))
    mask = p.hard_mask(w)
    assert mask.tolist() == [[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    soft = p.soft_mask(w)
    assert ((soft < 1e-6) | (soft > 1 - 1e-6)).all()  # temperature 1e-5: practically binary


def test_schedule_ramps_by_epsilon_and_restarts_each_round():
    p = make(sparsity=0.8, epsilon=0.015)
    to_training(p, 0)
    assert p._ratio == pytest.approx(0.015 * 0.8)
    to_training(p, 9)
    assert p._ratio == pytest.approx(0.15 * 0.8)
    to_training(p, 70)
    assert p._ratio == pytest.approx(0.8)
    to_training(p, 0)  # next round: epoch index restarts
    assert p._ratio == pytest.approx(0.015 * 0.8)


def test_zero_ratio_prunes_nothing():
    p = make(sparsity=0.0)
    to_training(p, 5)
    w = torch.randn(4, 5)
    assert torch.equal(p(w), w)
    assert p.hard_mask(w).all()


def test_pretraining_is_identity_and_finetuning_freezes_a_binary_mask():
    torch.manual_seed(0)
    p = make((8, 8), sparsity=0.75, epsilon=1.0)
    w = torch.randn(8, 8)
    assert torch.equal(p(w), w)
    to_training(p, 0)
    p.on_epoch_end(EpochInfo(Stage.TRAINING, 0, 1), w)
    p.on_round_end(RoundInfo(0, 1), w)
    p.on_finetuning_start(w)
    assert set(p.mask.unique().tolist()) <= {0.0, 1.0}
    assert int(p.mask.sum()) == 16
    frozen = p.mask.clone()
    w2 = torch.randn(8, 8)  # weights move; the mask does not
    assert torch.equal(p(w2), w2 * frozen)
    # the fine-tuning forward equals the training forward's hard-masked weights
    assert torch.equal(p(w), w * p.hard_mask(w))


def test_custom_gradient_matches_autograd_of_the_formula():
    torch.manual_seed(1)
    p = make((16, 16), sparsity=0.6, epsilon=1.0, temperature=1e-3)
    to_training(p, 0)
    w = (torch.randn(16, 16) * 0.1).requires_grad_()
    g = torch.randn(16, 16)
    p(w).backward(g)
    fast = w.grad.clone()
    w.grad = None
    # reference: autograd through w * sigmoid((w^2 - t) / tau), t constant
    t = p._threshold(w.detach().square())
    (w * torch.sigmoid((w.square() - t) / 1e-3)).backward(g)
    assert torch.allclose(fast, w.grad, rtol=1e-5, atol=1e-6)


def test_structured_masks_whole_output_units():
    torch.manual_seed(2)
    p = make((6, 4), sparsity=0.5, epsilon=1.0, structured_pruning=True)
    to_training(p, 0)
    w = torch.randn(6, 4)
    w[1] *= 0.01
    w[4] *= 0.01
    mask = p.hard_mask(w)
    rows = mask.all(dim=1) | (~mask.bool()).all(dim=1)
    assert rows.all()  # every row is entirely kept or entirely removed
    assert mask[:, 0].sum() == 3
    assert mask[1].sum() == 0 and mask[4].sum() == 0
    assert p.mask.shape == (6, 1)


def test_exact_sparsity_at_target():
    torch.manual_seed(3)
    p = make((64, 64), sparsity=0.8, epsilon=1.0)
    to_training(p, 0)
    w = torch.randn(64, 64)
    kept = int(p.hard_mask(w).sum())
    assert kept == 4096 - round(0.8 * 4096)


def test_state_dict_round_trip_restores_stage_and_ratio():
    p = make(sparsity=0.5, epsilon=0.25)
    to_training(p, 1)
    q = make(sparsity=0.5, epsilon=0.25)
    q.load_state_dict(p.state_dict())
    assert q.stage is Stage.TRAINING and q._ratio == p._ratio
    w = torch.randn(4, 5)
    assert torch.equal(q(w), p(w))


def test_schedule_warning_names_the_settings():
    cfg = PDPConfig(sparsity=0.8, epsilon=0.015)

    class T:
        epochs = 20

    (message,) = cfg.schedule_warnings(T)
    assert "training.epochs" in message and "67" in message and "pruning.epsilon" in message
    T.epochs = 67
    assert cfg.schedule_warnings(T) == []


def test_no_host_sync_free_path_on_cpu_uses_numpy_sort():
    from pquant.pruning.select import midpoint_threshold

    values = torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0])
    assert midpoint_threshold(values, 2) == 2.5
    assert midpoint_threshold(values, 4) == 4.5
