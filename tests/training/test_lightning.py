"""The Lightning callback trains a PDP + fixed-point model to its target sparsity (CPU)."""

from __future__ import annotations

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

from pquant import add_compression_layers, compression_report, load_config  # noqa: E402
from pquant.data.synthetic import SyntheticData  # noqa: E402
from pquant.nn.dense import PQDense  # noqa: E402
from pquant.training.lightning import PQuantCallback  # noqa: E402


class TinyModule(pl.LightningModule):
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.val_accuracy = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_accuracy.append(float((self.net(x).argmax(1) == y).float().mean()))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _loader(data, split, shuffle):
    x, y = data.splits[split]
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32,
                                       shuffle=shuffle)


def test_callback_reaches_the_target_sparsity(tiny_mlp):
    torch.manual_seed(0)
    cfg = load_config(["pruning=pdp", "pruning.sparsity=0.75", "pruning.epsilon=0.5",
                       "quantization=fixed", "training.pretraining_epochs=1",
                       "training.epochs=3", "training.fine_tuning_epochs=1"])
    data = SyntheticData(n_samples=320, n_features=8, n_classes=3)
    module = TinyModule(add_compression_layers(tiny_mlp(), cfg))
    callback = PQuantCallback(cfg)
    assert callback.total_epochs == 5
    trainer = pl.Trainer(accelerator="cpu", max_epochs=callback.total_epochs,
                         callbacks=[callback], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, _loader(data, "train", True), _loader(data, "val", False))

    assert callback.warnings == []  # every layer reached its target
    assert callback.driver.events[:3] == ["stage:pretraining", "on_pretraining_end",
                                          "stage:training:0"]
    assert callback.driver.events[-2:] == ["on_finetuning_start", "stage:finetuning"]
    report = compression_report(module.net, data.example_input(1))
    assert report["sparsity/global"] == pytest.approx(0.75, abs=0.01)
    assert report["bits/weight/mean"] == 8.0
    assert isinstance(module.net.fc1, PQDense)
    assert module.training_step.__func__ is TinyModule.training_step  # restored after fit
    assert module.val_accuracy[-1] > 0.5
