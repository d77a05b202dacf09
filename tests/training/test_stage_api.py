"""The public stage API: a hand-written loop reproduces train_model exactly."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from pquant import StageDriver, add_compression_layers, load_config, train_model
from pquant.pruning.base import Stage

OVERRIDES = ["training.pretraining_epochs=1", "training.epochs=3", "training.fine_tuning_epochs=1",
             "pruning.epsilon=0.5", "training.progress=false", "tracking=none"]


def _setup(overrides):
    cfg = load_config(overrides)
    torch.manual_seed(int(cfg.seed))
    data = instantiate(cfg.data)
    model = instantiate(cfg.model, input_size=data.num_features, output_size=data.num_classes)
    return cfg, data, add_compression_layers(model, cfg)


@pytest.mark.parametrize("extra", [[], ["quantization=hgq"],
                                   ["training.rounds=2", "training.rewind=every-round",
                                    "training.save_weights_epoch=1"]],
                         ids=["pdp-fixed", "hgq", "rewind"])
def test_hand_written_loop_reproduces_train_model(extra):
    cfg, data, reference = _setup(OVERRIDES + extra)
    result = train_model(reference, cfg, data.train_loader(64, seed=0), None)

    cfg, data, model = _setup(OVERRIDES + extra)
    loader = data.train_loader(64, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    driver = StageDriver(model, cfg, optimizer=optimizer, batches_per_epoch=len(loader))
    stages = []
    while not driver.finished:
        info = driver.start_epoch()
        stages.append((info.stage, info.round, info.epoch))
        model.train()
        for x, y in loader:
            loss = driver.add_compression_loss(loss_fn(model(x), y))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        driver.end_epoch()
    warnings = driver.finish()

    assert driver.events == result.stage_order
    assert warnings == result.warnings
    assert len(stages) == driver.total_epochs == len(result.history)
    assert stages[0][0] is Stage.PRETRAINING and stages[-1][0] is Stage.FINETUNING
    want, got = reference.state_dict(), model.state_dict()
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key


def test_compression_terms_sum_to_the_added_loss():
    cfg, data, model = _setup([o for o in OVERRIDES if "epsilon" not in o]
                              + ["data=synthetic", "pruning=dst", "quantization=hgq"])
    driver = StageDriver(model, cfg)
    x, y = next(iter(data.train_loader(32)))
    while driver.stage is not Stage.TRAINING or not driver.in_epoch:
        if driver.in_epoch:
            driver.end_epoch()
        driver.start_epoch()
    model.train()
    task = torch.nn.functional.cross_entropy(model(x), y)
    terms = driver.compression_terms()
    assert "hgq" in terms and any(k.startswith("pruning/") for k in terms)
    model(x)
    total = driver.add_compression_loss(task)
    assert torch.allclose(total, task + sum(terms.values()))


def test_driver_refuses_misuse(tiny_mlp):
    cfg = {"training": {"epochs": 1, "pretraining_epochs": 0},
           "quantization": {"enable_quantization": False}}
    model = add_compression_layers(tiny_mlp(), cfg)
    driver = StageDriver(model, cfg)
    driver.start_epoch()
    with pytest.raises(RuntimeError, match="twice"):
        driver.start_epoch()
    driver.end_epoch()
    assert driver.finished
    with pytest.raises(RuntimeError, match="no epoch left"):
        driver.start_epoch()
    driver.finish()
