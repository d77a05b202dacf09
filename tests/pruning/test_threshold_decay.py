"""``pruning.threshold_decay``: a decay term per method that has thresholds or scores, refused
(non-zero) by the others. The terms are the ones documented in each config's THRESHOLD_DECAY."""

from __future__ import annotations

import pytest
import torch

from pquant import ConfigError, add_compression_layers, train_model
from pquant.config.sections import pruning_schemas, sections
from pquant.data.synthetic import SyntheticData
from pquant.nn.weight_layer import CompressedWeightMixin
from pquant.pruning.autosparse import AutoSparse, AutoSparseConfig
from pquant.pruning.base import EpochInfo, Stage
from pquant.pruning.dst import DSTConfig, DynamicSparseTraining
from pquant.pruning.mdmm import MDMM, MDMMConfig
from pquant.pruning.pdp import PDP, PDPConfig

READERS = {"cs", "dst", "autosparse", "pdp", "mdmm"}


def test_every_method_documents_or_refuses_threshold_decay():
    schemas = pruning_schemas()
    assert {name for name, cls in schemas.items() if cls.THRESHOLD_DECAY} == READERS
    for name in set(schemas) - READERS:
        assert schemas[name].THRESHOLD_DECAY == ""


@pytest.mark.parametrize("method", ["wanda", "activation_pruning", "none"])
def test_non_zero_is_refused_where_it_cannot_apply(compose, method):
    with pytest.raises(ConfigError) as err:
        sections(compose([f"pruning={method}", "pruning.threshold_decay=0.01"]))
    message = str(err.value)
    assert f"pruning.threshold_decay must be 0 with pruning={method}" in message
    assert "autosparse, cs, dst, mdmm, pdp" in message and message.endswith("got 0.01")
    sections(compose([f"pruning={method}", "pruning.threshold_decay=0"]))  # 0 is fine


def test_pdp_decays_the_scores_being_pruned():
    torch.manual_seed(0)
    pdp = PDP(PDPConfig(sparsity=0.5, threshold_decay=0.1), torch.Size((4, 5)), "linear")
    pdp.on_pretraining_end()
    pdp.on_epoch_start(EpochInfo(Stage.TRAINING, 0, 1))
    pdp._set_ratio(0.5)
    w = torch.randn(4, 5, requires_grad=True)
    pdp(w)
    term = pdp.extra_loss()
    pruned = w.detach().square().flatten().sort().values[:10]
    assert term.item() == pytest.approx(0.1 * pruned.sum().item(), rel=1e-5)
    term.backward()
    small = w.detach().abs() <= w.detach().abs().flatten().sort().values[9]
    assert torch.allclose(w.grad[small], 0.2 * w.detach()[small], rtol=1e-5)
    assert torch.all(w.grad[~small].abs() < 1e-6)
    assert pdp.extra_loss() is None  # one term per training forward
    plain = PDP(PDPConfig(sparsity=0.5), torch.Size((4, 5)), "linear")
    plain.on_pretraining_end()
    plain(w)
    assert plain.extra_loss() is None


def test_dst_adds_l2_decay_of_thresholds():
    cfg = DSTConfig(alpha=0.5, threshold_decay=0.2, threshold_init=0.3)
    dst = DynamicSparseTraining(cfg, torch.Size((4, 6)), "linear")
    t = dst.threshold.detach()
    expected = 0.5 * torch.exp(-t).sum() + 0.2 * t.square().sum()
    assert dst.extra_loss().item() == pytest.approx(expected.item())
    only_decay = DynamicSparseTraining(DSTConfig(alpha=0.0, threshold_decay=0.2,
                                                 threshold_init=0.3), torch.Size((4, 6)),
                                       "linear")
    only_decay.extra_loss().backward()
    assert torch.allclose(only_decay.threshold.grad, torch.full_like(t, 0.4 * 0.3))


def test_autosparse_decays_the_cut_while_it_learns():
    cfg = AutoSparseConfig(threshold_decay=0.3, threshold_init=-1.0, autotune_epochs=1)
    auto = AutoSparse(cfg, torch.Size((4, 6)), "linear")
    auto.on_pretraining_end()
    auto.on_epoch_start(EpochInfo(Stage.TRAINING, 0, 3))
    cut = torch.sigmoid(torch.tensor(-1.0))
    assert auto.extra_loss().item() == pytest.approx(0.3 * 4 * cut.item() ** 2, rel=1e-6)
    auto.on_epoch_start(EpochInfo(Stage.TRAINING, 1, 3))  # threshold frozen: no term
    assert auto.extra_loss() is None


def test_mdmm_decays_the_pruned_weights():
    cfg = MDMMConfig(threshold_decay=0.5, epsilon=0.1, scale=0.0)
    mdmm = MDMM(cfg, torch.Size((1, 4)), "linear")
    mdmm.on_pretraining_end()
    w = torch.tensor([[0.05, -0.08, 0.5, -2.0]], requires_grad=True)
    mdmm(w)
    term = mdmm.extra_loss()
    assert term.item() == pytest.approx(0.5 * (0.05**2 + 0.08**2))
    term.backward()
    assert torch.allclose(w.grad, torch.tensor([[0.05, -0.08, 0.0, 0.0]]))


def _pruned_energy(compose, tiny_mlp, decay):
    torch.manual_seed(0)
    cfg = compose(["pruning=pdp", "pruning.epsilon=0.5", "pruning.sparsity=0.5",
                   f"pruning.threshold_decay={decay}", "quantization=none",
                   "training.pretraining_epochs=1", "training.epochs=4",
                   "training.fine_tuning_epochs=0", "training.progress=false",
                   "training.optimizer.lr=0.02"])
    data = SyntheticData(n_samples=240, n_features=8, n_classes=3)
    model = add_compression_layers(tiny_mlp(), cfg)
    train_model(model, cfg, data.train_loader(32, seed=0), data.val_loader(64))
    energy = 0.0
    for layer in model.modules():
        if isinstance(layer, CompressedWeightMixin) and layer.pruning is not None:
            dropped = 1 - layer.pruning.hard_mask(layer.weight)
            energy += float((layer.weight.detach().square() * dropped).sum())
    return energy


def test_the_training_loop_applies_the_decay(compose, tiny_mlp):
    """Through the real loop: the pruned weights end much smaller with a strong decay."""
    assert _pruned_energy(compose, tiny_mlp, 5.0) < 0.5 * _pruned_energy(compose, tiny_mlp, 0.0)
