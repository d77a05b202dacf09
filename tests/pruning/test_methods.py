"""Per-method formulas on tiny tensors with hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from pquant.pruning.activation_pruning import ActivationPruning, ActivationPruningConfig
from pquant.pruning.autosparse import AutoSparse, AutoSparseConfig, alpha_schedule
from pquant.pruning.base import EpochInfo, RoundInfo, Stage
from pquant.pruning.cs import ContinuousSparsification, CSConfig
from pquant.pruning.dst import DSTConfig, DynamicSparseTraining, long_tailed_step
from pquant.pruning.mdmm import MDMM, MDMMConfig
from pquant.pruning.thresholds import ThresholdType, global_magnitude_budget
from pquant.pruning.wanda import Wanda, WandaConfig


# ----------------------------------------------------------------------------- CS
def test_cs_anneals_only_in_the_training_stage():
    cs = ContinuousSparsification(CSConfig(final_temp=100.0), torch.Size((2, 2)), "linear")
    for e in range(3):  # pretraining epochs: the reference would reach 2828 here
        cs.on_epoch_end(EpochInfo(Stage.PRETRAINING, e, 3), torch.zeros(2, 2))
    assert float(cs.beta) == 1.0
    cs.on_pretraining_end()
    for e in range(5):
        cs.on_epoch_end(EpochInfo(Stage.TRAINING, e, 5), torch.zeros(2, 2))
    assert float(cs.beta) == pytest.approx(100.0)  # final_temp at the last epoch, no overshoot
    cs.on_finetuning_start(torch.zeros(2, 2))
    cs.on_epoch_end(EpochInfo(Stage.FINETUNING, 0, 2), torch.zeros(2, 2))
    assert float(cs.beta) == pytest.approx(100.0)


def test_cs_mask_reset_between_rounds_and_hard_mask():
    cs = ContinuousSparsification(CSConfig(threshold_init=0.5), torch.Size((1, 3)), "linear")
    cs.on_pretraining_end()
    with torch.no_grad():
        cs.s.copy_(torch.tensor([[-1.0, 0.2, 2.0]]))
        cs.beta.fill_(4.0)
    w = torch.ones(1, 3)
    assert torch.allclose(cs(w), torch.sigmoid(torch.tensor([[-4.0, 0.8, 8.0]])))
    cs.on_round_end(RoundInfo(0, 2), w)  # s <- min(beta * s, s0), beta <- 1
    assert cs.s.tolist() == [[-4.0, 0.5, 0.5]] and float(cs.beta) == 1.0
    cs.on_round_end(RoundInfo(1, 2), w)  # last round: no reset
    assert cs.s.tolist() == [[-4.0, 0.5, 0.5]]
    cs.on_finetuning_start(w)
    assert cs(w).tolist() == [[0.0, 1.0, 1.0]]  # no 2x scale on kept weights


def test_cs_penalty_is_threshold_decay_times_mask_l1():
    cs = ContinuousSparsification(CSConfig(threshold_decay=0.1), torch.Size((1, 2)), "linear")
    cs.on_pretraining_end()
    assert cs.extra_loss().item() == pytest.approx(0.1 * 2 * 0.5)


# ----------------------------------------------------------------------------- DST
def test_dst_long_tailed_surrogate_gradient():
    u = torch.tensor([-1.5, -0.8, -0.3, 0.0, 0.1, 0.4, 0.7, 1.0, 2.0], requires_grad=True)
    m = long_tailed_step(u)
    assert m.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    m.sum().backward()
    expected = [0.0, 0.4, 2 - 1.2, 2.0, 2 - 0.4, 2 - 1.6, 0.4, 0.4, 0.0]
    assert torch.allclose(u.grad, torch.tensor(expected))


def test_dst_threshold_shapes_init_and_penalty():
    for kind, shape in (("layerwise", (1, 1)), ("channelwise", (4, 1)), ("weightwise", (4, 6))):
        cfg = DSTConfig(threshold_type=ThresholdType[kind], threshold_init=0.2, alpha=0.5)
        dst = DynamicSparseTraining(cfg, torch.Size((4, 2, 3)), "conv")
        assert tuple(dst.threshold.shape) == shape
        assert torch.all(dst.threshold == 0.2)  # threshold_init honoured (reference: always 0)
        assert dst.extra_loss().item() == pytest.approx(0.5 * math.exp(-0.2) * math.prod(shape))


def test_dst_collapse_guard_resets_thresholds():
    dst = DynamicSparseTraining(DSTConfig(threshold_init=5.0, max_pruning_pct=0.5),
                                torch.Size((2, 2)), "linear")
    dst.on_pretraining_end()
    w = torch.tensor([[0.1, -0.2], [0.3, 0.0]])
    out = dst(w)  # everything would be pruned: thresholds reset, mask = (w != 0)
    assert torch.equal(out, w)
    assert torch.all(dst.threshold == 0)


# ----------------------------------------------------------------------------- Wanda
def _wanda(cfg, shape=(2, 8), layer="linear"):
    w = Wanda(cfg, torch.Size(shape), layer)
    w.on_pretraining_end()
    return w


def test_wanda_unstructured_per_row_uses_input_norms():
    wanda = _wanda(WandaConfig(sparsity=0.5, t_delta=1, t_start_collecting_batch=0,
                               calculate_pruning_budget=False), (2, 4))
    x = torch.tensor([[1.0, 10.0, 0.1, 1.0]])  # ||x_j|| = 1, 10, 0.1, 1
    wanda.observe(x, None)
    w = torch.tensor([[1.0, 0.2, 5.0, 0.5], [1.0, 1.0, 1.0, 1.0]])
    # scores row 0: 1, 2, 0.5, 0.5 -> keep 1 and 2; row 1: 1, 10, 0.1, 1 -> keep 10 and one 1
    mask = wanda.compute_mask(w)
    assert mask[0].tolist() == [1, 1, 0, 0]
    assert mask[1, 1] == 1 and mask[1, 2] == 0 and mask.sum() == 4


def test_wanda_n_m_keeps_n_of_every_m():
    wanda = _wanda(WandaConfig(N=2, M=4, t_delta=1, t_start_collecting_batch=0))
    wanda.observe(torch.ones(3, 8), None)
    w = torch.tensor([[0.1, 0.9, 0.5, 0.2, 0.3, 0.1, 0.8, 0.7],
                      [4.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0, 4.0]])
    assert wanda.compute_mask(w).tolist() == [[0, 1, 1, 0, 0, 0, 1, 1],
                                              [1, 1, 0, 0, 0, 0, 1, 1]]
    assert wanda.target_sparsity() == 0.5


def test_wanda_counts_batches_and_handles_3d_inputs():
    wanda = _wanda(WandaConfig(sparsity=0.5, t_delta=2, t_start_collecting_batch=3,
                               calculate_pruning_budget=False), (2, 4))
    for _ in range(3):
        wanda.observe(torch.randn(5, 7, 4), None)  # (batch, sequence, features)
    assert float(wanda.sq_sum.sum()) == 0  # skipped batches
    x = torch.randn(5, 7, 4)
    wanda.observe(x, None)
    assert torch.allclose(wanda.sq_sum, x.double().reshape(-1, 4).square().sum(0))
    assert wanda.wants_observations
    wanda.observe(x, None)
    assert not wanda.wants_observations
    w = torch.randn(2, 4)
    out = wanda(w)  # the mask is computed at the next forward
    assert (out != 0).sum() == 4


def test_wanda_grouped_convolution():
    from torch import nn

    from pquant.nn.conv import PQConv1d

    conv = PQConv1d.from_torch(nn.Conv1d(4, 4, 1, groups=2, bias=False))
    cfg = WandaConfig(sparsity=0.5, t_delta=1, t_start_collecting_batch=0,
                      calculate_pruning_budget=False)
    wanda = Wanda(cfg, conv.weight.shape, "conv")
    wanda.bind(conv)
    wanda.on_pretraining_end()
    x = torch.zeros(1, 4, 3)
    x[:, 1] = 1.0  # group 0 sees channels 0, 1; group 1 sees channels 2, 3
    x[:, 3] = 1.0
    wanda.observe(x, None)
    mask = wanda.compute_mask(torch.ones(4, 2, 1))
    assert mask.view(4, 2).tolist() == [[0, 1], [0, 1], [0, 1], [0, 1]]


def test_global_budget_excludes_nothing_but_the_given_layers():
    a = torch.tensor([0.01, 0.02, 0.03, 0.04])
    b = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert global_magnitude_budget([a, b], 0.5) == [1.0, 0.0]


# ----------------------------------------------------------------------------- AutoSparse
def test_autosparse_alpha_schedule_and_reset():
    assert alpha_schedule(0.5, 0, 100, 90) == pytest.approx(0.5)
    mid = alpha_schedule(0.5, 50, 100, 90)
    assert mid == pytest.approx(0.5 * max(0.5, 0.5))
    assert alpha_schedule(0.5, 90, 100, 90) == 0.0


def test_autosparse_soft_threshold_and_annealed_gradient():
    cfg = AutoSparseConfig(threshold_init=math.log(0.25 / 0.75), alpha=0.5,
                           threshold_type=ThresholdType.layerwise, autotune_epochs=0)
    a = AutoSparse(cfg, torch.Size((1, 4)), "linear")
    a.on_pretraining_end()
    w = torch.tensor([[0.5, -0.3, 0.1, -0.2]], requires_grad=True)  # sigmoid(t) = 0.25
    out = a(w)
    assert torch.allclose(out, torch.tensor([[0.25, -0.05, 0.0, 0.0]]))
    out.sum().backward()
    # kept: d/dw sign(w) * (|w| - c) = 1; pruned: alpha * d|w|/dw * sign(w) = alpha
    assert torch.allclose(w.grad, torch.tensor([[1.0, 1.0, 0.5, 0.5]]))
    a.on_finetuning_start(w.detach())
    assert torch.equal(a(w.detach()), out.detach())  # the same weights in fine-tuning


def test_autosparse_autotune_window_freezes_the_threshold():
    a = AutoSparse(AutoSparseConfig(autotune_epochs=1), torch.Size((2, 2)), "linear")
    a.on_pretraining_end()
    w = torch.full((2, 2), 0.5, requires_grad=True)
    a.on_epoch_start(EpochInfo(Stage.TRAINING, 0, 5))
    a(w).sum().backward()
    assert a.threshold.grad is not None
    a.threshold.grad = None
    a.on_epoch_start(EpochInfo(Stage.TRAINING, 1, 5))
    a(w).sum().backward()
    assert a.threshold.grad is None and w.grad is not None


# ----------------------------------------------------------------------------- activation
def test_activation_pruning_removes_rarely_active_units_and_their_bias():
    ap = ActivationPruning(ActivationPruningConfig(threshold=0.3, t_delta=2,
                                                   t_start_collecting_batch=1),
                           torch.Size((3, 2)), "linear")
    ap.on_pretraining_end()
    ys = [torch.tensor([[1.0, -1.0, 1.0], [1.0, -1.0, -1.0]]),  # skipped
          torch.tensor([[1.0, -1.0, -1.0], [1.0, -1.0, -1.0]]),
          torch.tensor([[1.0, 1.0, -1.0], [1.0, -1.0, 1.0]])]
    for y in ys:
        ap.observe(None, y)
    # rates: unit 0: 1.0, unit 1: 0.25, unit 2: 0.25 -> only unit 0 stays
    assert ap.mask.view(-1).tolist() == [1.0, 0.0, 0.0]
    assert ap.prune_bias(torch.tensor([0.5, 0.5, 0.5])).tolist() == [0.5, 0.0, 0.0]


def test_activation_pruning_leaves_layers_without_relu_alone():
    ap = ActivationPruning(ActivationPruningConfig(), torch.Size((3, 2)), "linear")
    ap.feeds_relu = False
    ap.on_pretraining_end()
    assert not ap.wants_observations


# ----------------------------------------------------------------------------- MDMM
def test_mdmm_metric_penalty_and_multiplier_step():
    cfg = MDMMConfig(target_sparsity=0.5, epsilon=0.1, scale=2.0, damping=1.0,
                     constraint_lr=0.1, scale_mode="mean")
    from pquant.pruning.mdmm import ScaleMode

    cfg.scale_mode = ScaleMode.mean
    m = MDMM(cfg, torch.Size((1, 4)), "linear")
    m.on_pretraining_end()
    w = torch.tensor([[0.0, 0.05, 1.0, -1.0]], requires_grad=True)
    out = m(w)
    assert out.tolist() == [[0.0, 0.0, 1.0, -1.0]]  # mask |w| > epsilon in training
    # L0 = 2/4, L1 = mean |w| = 0.5125 -> metric (0.25 - 0.25) * L1 = 0, feasible
    assert float(m.extra_loss()) == 0.0
    w2 = torch.tensor([[0.5, 0.05, 1.0, -1.0]])
    m(w2)
    # L0 = 1/4: metric = (0.25 - 0.0625) * 0.6375 = 0.11953; h = 0.11953
    h = (0.25 - 0.0625) * 0.6375
    assert float(m.extra_loss()) == pytest.approx(2.0 * (0.0 * h + h * h / 2))
    assert float(m.multiplier) == pytest.approx(0.1 * 2.0 * h)


def test_mdmm_structured_metric_has_a_gradient():
    from pquant.pruning.mdmm import MetricType

    cfg = MDMMConfig(metric_type=MetricType.StructuredSparsity, rf=2, target_sparsity=0.5)
    m = MDMM(cfg, torch.Size((2, 4)), "linear")
    w = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]], requires_grad=True)
    m.metric(w).backward()
    assert w.grad.abs().sum() > 0
    assert m._hard(w).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_budget_warns_when_it_empties_a_layer():
    from pquant.pruning.thresholds import budget_warnings

    small, large = torch.full((8,), 0.001), torch.linspace(0.1, 1.0, 8)
    ratios = global_magnitude_budget([small, large], 0.5)
    assert ratios == [1.0, 0.0]
    (message,) = budget_warnings(["conv2", "fc"], ratios, 0.5, "pruning.calculate_pruning_budget")
    assert "conv2 1.000" in message and "pruning.calculate_pruning_budget=false" in message
    assert budget_warnings(["a"], [0.8], 0.8, "x") == []


@pytest.mark.parametrize("kind", list(ThresholdType))
@pytest.mark.parametrize(("init", "collapse"), [(0.05, False), (5.0, True)])
def test_dst_fused_forward_and_gradients_match_the_formula(kind, init, collapse):
    torch.manual_seed(0)
    cfg = DSTConfig(threshold_type=kind, threshold_init=init, max_pruning_pct=0.5)
    dst = DynamicSparseTraining(cfg, torch.Size((6, 4)), "linear")
    dst.on_pretraining_end()
    w = (torch.randn(6, 4) * 0.3).requires_grad_()
    g = torch.randn(6, 4)
    t0 = dst.threshold.detach().clone()
    out = dst(w)
    out.backward(g)
    t = t0.clone().requires_grad_()
    w2 = w.detach().clone().requires_grad_()
    m = long_tailed_step(w2.abs() - t)
    keep = (1 - m.mean()) < 0.5
    assert bool(keep) is not collapse
    ref = w2 * torch.where(keep, m, (w2 != 0).float())
    ref.backward(g)
    assert torch.equal(out, ref)
    assert torch.allclose(w.grad, w2.grad, atol=1e-6)
    expected_t = t.grad if t.grad is not None and not collapse else torch.zeros_like(t0)
    assert torch.allclose(dst.threshold.grad, expected_t, atol=1e-6)
    assert torch.all(dst.threshold == (0.0 if collapse else init))
