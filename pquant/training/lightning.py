"""Pruning + quantization for Lightning users: one callback (optional extra ``lightning``).

::

    model = add_compression_layers(torch_model, cfg)        # inside your LightningModule
    callback = PQuantCallback(cfg)
    trainer = lightning.Trainer(max_epochs=callback.total_epochs, callbacks=[callback])
    trainer.fit(module, train_loader, val_loader)

The callback drives a :class:`~pquant.training.stages.StageDriver` over the module: the stage
transitions and epoch hooks run around every training epoch, and the loss your
``training_step`` returns gets the current stage's compression terms added (pruning regularisers,
HGQ's EBOPs/width terms) before Lightning back-propagates it. ``callback.warnings`` holds the
schedule/target warnings after ``fit``.
"""

from __future__ import annotations

import functools
import logging

try:
    from lightning.pytorch import Callback
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError("pquant.training.lightning needs Lightning: pip install "
                      "'pquant[lightning]' (or pip install lightning)") from exc

from pquant.config.sections import sections
from pquant.training.stages import StageDriver, build_schedule

log = logging.getLogger(__name__)


class PQuantCallback(Callback):
    """Runs pquant's stage schedule inside ``lightning.Trainer.fit``.

    Args:
        config: the composed config (or a dict of sections); ``training`` sets the schedule
            (its optimizer/loss settings are not used: the LightningModule owns those).
    """

    def __init__(self, config) -> None:
        super().__init__()
        self.s = sections(config)
        self.driver: StageDriver | None = None
        self.warnings: list[str] = []
        self._original_step = None

    @property
    def total_epochs(self) -> int:
        """Epochs of the whole schedule: pass it as ``Trainer(max_epochs=...)``."""
        return sum(step.kind == "epoch" for step in build_schedule(self.s.training))

    # ------------------------------------------------------------------ Lightning hooks
    def on_fit_start(self, trainer, pl_module) -> None:
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        batches = trainer.num_training_batches
        self.driver = StageDriver(pl_module, self.s, optimizer=optimizer,
                                  batches_per_epoch=batches if isinstance(batches, int) else None)
        if trainer.max_epochs != self.driver.total_epochs:
            log.warning("Trainer(max_epochs=%s) but the pquant schedule has %d epochs; epochs "
                        "past the schedule are fine-tuning epochs without hooks",
                        trainer.max_epochs, self.driver.total_epochs)
        self._original_step = pl_module.training_step
        driver = self.driver

        @functools.wraps(self._original_step)
        def training_step(*args, **kwargs):
            with driver.collecting():  # (the forward runs inside training_step)
                out = self._original_step(*args, **kwargs)
            if not driver.in_epoch:
                return out
            if isinstance(out, dict):
                return {**out, "loss": driver.add_compression_loss(out["loss"])}
            return driver.add_compression_loss(out)

        pl_module.training_step = training_step

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if not self.driver.finished:
            self.driver.start_epoch()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.driver.in_epoch:
            self.driver.end_epoch()

    def on_fit_end(self, trainer, pl_module) -> None:
        self._restore(pl_module)
        if self.driver is not None:
            if self.driver.in_epoch:
                self.driver.end_epoch()
            self.warnings = self.driver.finish()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore(pl_module)
        if self.driver is not None:
            self.driver.close()

    def _restore(self, pl_module) -> None:
        if self._original_step is not None:
            pl_module.training_step = self._original_step
            self._original_step = None
