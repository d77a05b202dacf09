"""Costs reported through the per-step collector (no state left on modules), and caches keyed per
module (no process-global counters)."""

from __future__ import annotations

import copy
import pickle

import torch
from torch import nn

from pquant.config.compose import load_config
from pquant.config.sections import sections
from pquant.nn.chain import elide_redundant_quantizers
from pquant.nn.replace import add_compression_layers
from pquant.pruning.base import Stage
from pquant.quant.base import Quantizer
from pquant.quant.costs import StepCosts, collecting
from pquant.quant.hgq import HGQQuantizer
from pquant.quant.quantizer import FixedPointQuantizer
from pquant.training.losses import CompressionLoss
from pquant.training.stages import StageDriver


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def _hgq_model():
    return add_compression_layers(_mlp(), load_config(["quantization=hgq"]))


def test_hgq_model_deep_copies_after_a_training_forward():
    """The step's widths (tensors with a graph) used to stay on the quantizers
    (``HGQQuantizer._step_bits``): ``copy.deepcopy`` then failed on them."""
    model = _hgq_model().train()
    model(torch.randn(5, 8)).sum().backward()
    clone = copy.deepcopy(model)
    pickle.dumps(model)
    x = torch.randn(3, 8)
    torch.testing.assert_close(clone.eval()(x), model.eval()(x))


def test_deep_copy_between_the_forward_and_the_loss_of_a_driven_step():
    model = _hgq_model()
    driver = StageDriver(model, load_config(["quantization=hgq", "training.pretraining_epochs=0",
                                             "training.epochs=1"]))
    driver.start_epoch()
    model.train()
    x, y = torch.randn(6, 8), torch.randint(0, 4, (6,))
    out = model(x)
    assert len(driver.loss.costs) > 0  # the forward reported its widths to the loss's collector
    copy.deepcopy(model)  # nothing of the step lives on the model
    loss = driver.add_compression_loss(nn.functional.cross_entropy(out, y))
    assert len(driver.loss.costs) == 0  # the loss used and cleared the step
    loss.backward()
    bits = [q for q in model.modules() if isinstance(q, HGQQuantizer)]
    assert all(q.bit_grads()[1] is not None for q in bits)
    driver.end_epoch()
    driver.finish()
    assert not model._forward_pre_hooks and not model._forward_hooks  # the collector's, removed


def test_reported_widths_are_the_recomputed_ones():
    """The loss terms are the same whether the forward reported its widths or not."""
    model = _hgq_model().train()
    s = sections(load_config(["quantization=hgq"]))
    x = torch.randn(7, 8)
    loss = CompressionLoss(model, s)
    model(x)
    assert len(loss.costs) > 0
    reported = [t.detach() for t in loss.hgq_terms()]
    loss.close()
    model(x)  # (no collector: nothing reported, everything recomputed)
    recomputed = [t.detach() for t in CompressionLoss(model, s).hgq_terms()]
    for a, b in zip(reported, recomputed):
        torch.testing.assert_close(a, b)


def test_reports_go_nowhere_outside_a_collected_forward():
    q = HGQQuantizer(1, 3, 4, "RND", "SAT", (8,)).train()
    costs = StepCosts()
    q(torch.randn(4, 8))
    assert not collecting() and len(costs) == 0
    with costs.collecting():
        q(torch.randn(4, 8))
    assert costs.bits_of(q) is not None and costs.bits_of(q).requires_grad
    with costs.collecting():
        with torch.no_grad():
            other = HGQQuantizer(1, 3, 4, "RND", "SAT")
            other(torch.randn(3))
    assert costs.bits_of(other) is None  # (no graph: nothing to keep)
    assert "_step_bits" not in vars(q)


def test_no_process_global_counters():
    assert not hasattr(Quantizer, "format_epoch") and not hasattr(Quantizer, "mode_epoch")


def test_a_format_change_lapses_only_the_skips_that_depend_on_it():
    """Skips granted by the chain analysis lapse when a quantizer they depend on changes -- in
    the same model only (the process-global epoch used to lapse every model's skips)."""
    cfg = load_config([])
    a, b = (add_compression_layers(_mlp(), cfg) for _ in range(2))
    assert elide_redundant_quantizers(a) and elide_redundant_quantizers(b)
    skipped_b = [q for q in b.modules() if isinstance(q, FixedPointQuantizer) and q.bypass]
    skipped_a = [q for q in a.modules() if isinstance(q, FixedPointQuantizer) and q.bypass]
    assert skipped_a and skipped_b
    a[0].output_quantizer.set_format(f=6)  # upstream of a's skipped ReLU quantizers
    assert not any(q.bypass for q in skipped_a)
    assert all(q.bypass for q in skipped_b)
    b[0].output_quantizer.enabled = False
    assert not any(q.bypass for q in skipped_b)
    b[0].output_quantizer.enabled = True
    assert not any(q.bypass for q in skipped_b)  # (a lapsed skip stays lapsed)
    assert elide_redundant_quantizers(b) == elide_redundant_quantizers(
        add_compression_layers(_mlp(), cfg))


def test_train_eval_switch_keys_fused_specs_per_module():
    """The dense layer's cached specs follow its own quantizers' mode, not a global counter."""
    layer = add_compression_layers(_mlp(), load_config([]))[0]
    q = layer.input_quantizer
    key_train = q.train().cache_key()
    key_eval = q.eval().cache_key()
    assert key_train != key_eval
    version = q.format_version
    q.set_format(i=2)
    assert q.format_version == version + 1
    q.set_format(i=2)  # (no change: no new version)
    assert q.format_version == version + 1


def test_compression_loss_is_used_in_the_order_documented(tmp_path):
    """A step: forward (reports), loss (reads, clears); the fused and generic HGQ loss agree."""
    model = _hgq_model().train()
    loss = CompressionLoss(model, sections(load_config(["quantization=hgq"])))
    model(torch.randn(4, 8))
    term = loss(Stage.FINETUNING, torch.zeros(()))
    assert term.requires_grad and len(loss.costs) == 0
    loss.close()
