"""The stage-driven training loop: pretraining -> rounds x epochs -> fine-tuning.

::

    for e in pretraining epochs:      on_epoch_start, train, evaluate, on_epoch_end
    [FITCompress search]               (fitcompress=on: formats and masks applied)
    range check                        formats that cannot hold what a layer sees -> warnings
    on_pretraining_end                 (always, even with 0 pretraining epochs)
    for r in rounds:
        for e in epochs:               [snapshot weights at the start of save_weights_epoch, r=0]
                                       on_epoch_start, train, evaluate, on_epoch_end
        on_round_end(r)                (every round, the last one too)
        rewind                         every-round: after each round;
                                       post-training-stage: after the last round
    on_finetuning_start                (always: masks become binary and frozen)
    for e in fine_tuning_epochs:      on_epoch_start, train, evaluate, on_epoch_end

The loop adds the compression losses itself (pruning regularisers during the TRAINING stage, the
HGQ EBOPs and width terms after pretraining) and clamps learnable bit-widths after every epoch;
user code only supplies the model, the data and, optionally, optimizer/scheduler/loss.
The schedule itself (cursor, hooks, loss terms) is the public
:class:`pquant.training.stages.StageDriver`; this module is one loop written on it.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn
from tqdm.auto import tqdm

from pquant import distributed
from pquant.config.sections import Sections, sections
from pquant.metrics.accuracy import evaluate
from pquant.metrics.report import epoch_metrics
from pquant.nn.range_check import range_warnings
from pquant.pruning.base import Stage
from pquant.training import interrupt
from pquant.training.checkpoint import Checkpointer, rng_state, set_rng_state
from pquant.training.stages import StageDriver
from pquant.training.task import build_loss, training_task

log = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, float], int], None]

#: metrics shown next to the progress bar, with short labels
_POSTFIX = (("train/loss", "loss"), ("val/accuracy", "val_acc"), ("val/mse", "val_mse"),
            ("sparsity/global", "sparsity"))
#: without a terminal, progress is an INFO log line: first and last epoch of a stage, and at
#: most one every this many seconds in between
PROGRESS_SECONDS = 10.0


@dataclass
class TrainResult:
    """What happened during training.

    Attributes:
        history: one dict of metrics per epoch (``stage``, ``round``, ``epoch``, ``train/loss``,
            ``train/accuracy``, ``val/loss``, ``val/accuracy``, ``sparsity/global``,
            ``bits/weight/mean``, ``ebops/total``, ``lr``).
        warnings: messages about targets the schedule could not, or did not, reach.
        stage_order: the hook/stage events in the order they happened (for inspection).
        fitcompress: the applied FITCompress search (``fitcompress=on``), else None.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stage_order: list[str] = field(default_factory=list)
    fitcompress: Any = None


class _Trainer:
    def __init__(self, model, s: Sections, train_loader, val_loader, optimizer, scheduler,
                 loss_fn, device, on_epoch_end, progress, distiller=None, checkpointer=None):
        self.model, self.s = model, s
        self.train_loader, self.val_loader = train_loader, val_loader
        self.device = device
        if loss_fn is None:
            loss_fn = build_loss(s.training, training_task(s.training))
        self.loss_fn = loss_fn
        if optimizer is None:
            optimizer = instantiate(s.training.optimizer)(model.parameters())
        self.optimizer = optimizer
        if scheduler is None and s.training.scheduler is not None:
            scheduler = instantiate(s.training.scheduler)(optimizer)
        self.scheduler = scheduler
        self.on_epoch_end = on_epoch_end
        self.progress = progress
        self.distiller = distiller
        self.checkpointer = checkpointer
        self.result = TrainResult()
        self._batch_norm = distributed.world().distributed and distributed.has_batch_norm(model)
        self._log_lines = False  # progress as log lines (no terminal)
        self._last_line = 0.0
        try:
            batches = len(train_loader)
        except TypeError:
            batches = None
        self.driver = StageDriver(model, s, optimizer=optimizer, batches_per_epoch=batches,
                                  before_pretraining_end=self._before_pretraining_end)

    # ------------------------------------------------------------------ pieces
    def _train_epoch(self) -> dict[str, float]:
        model, opt, loss_fn, device = self.model, self.optimizer, self.loss_fn, self.device
        driver = self.driver
        w = distributed.world()
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        n = 0
        regression = False
        for x, y in self.train_loader:
            if not w.distributed:
                interrupt.check()  # SIGINT/SIGTERM stop here, at a batch boundary
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            out = model(x)
            regression = y.is_floating_point()
            if self.distiller is None:
                task = loss_fn(out, y)
            else:
                task = self.distiller(x, out, y)
            loss = driver.add_compression_loss(task)
            opt.zero_grad(set_to_none=True)
            if w.distributed:
                self._distributed_backward(loss, task, len(y))
            else:
                loss.backward()
                opt.step()
            with torch.no_grad():
                loss_sum += loss.detach() * len(y)
                if out.dim() == 2 and y.dim() == 1:
                    correct += (out.argmax(dim=1) == y).sum()
            n += len(y)
        if w.distributed:  # the epoch's metrics over the global batches
            totals = torch.stack([loss_sum.double(), correct.double(),
                                  torch.tensor(float(n), dtype=torch.float64, device=device)])
            distributed.all_reduce_(totals, "sum")
            loss_sum, correct, n = totals[0], totals[1], int(totals[2])
        metrics = {"train/loss": float(loss_sum) / max(n, 1)}
        if not regression:  # regression reports the loss only
            metrics["train/accuracy"] = float(correct) / max(n, 1)
        return metrics

    def _distributed_backward(self, loss: torch.Tensor, task: torch.Tensor, n: int) -> None:
        """Backward, gradients averaged over the ranks, step; all ranks stop after the same step
        on SIGINT/SIGTERM. The task loss (a mean over this rank's shard) is weighted by
        ``W * n / n_global`` when the global batch split unevenly (its last batch), so that the
        average is the gradient of the global-batch mean."""
        size = distributed.world().size
        global_n = getattr(self.train_loader, "global_batch", 0) or n * size
        if n * size != global_n:
            loss = loss + (n * size / global_n - 1.0) * task
        loss.backward()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        stop = distributed.average_gradients(params, interrupt.pending() is not None)
        self.optimizer.step()
        if self._batch_norm:
            distributed.average_norm_statistics(self.model)
        if stop:
            raise interrupt.Interrupted(interrupt.pending() or signal.SIGTERM)

    def _epoch(self, bar) -> None:
        interrupt.check()
        info = self.driver.start_epoch()
        if info.epoch == 0 or bar.desc == "":
            bar.set_description(_label(info.stage, info.round, self.s.training.rounds))
        metrics = self._train_epoch()
        if self.val_loader is not None:
            val = evaluate(self.model, self.val_loader, self.loss_fn, self.device)
            metrics.update({f"val/{k}": v for k, v in val.items()})
        self.driver.end_epoch()
        if self.scheduler is not None:
            self.scheduler.step()
        metrics.update(epoch_metrics(self.model))
        metrics["lr"] = float(self.optimizer.param_groups[0]["lr"])
        metrics.update(stage=float(info.stage), round=float(info.round), epoch=float(info.epoch))
        self.result.history.append(metrics)
        if self.on_epoch_end is not None:
            self.on_epoch_end(metrics, info.global_epoch)
        bar.update(1)
        bar.set_postfix({short: f"{metrics[k]:.3f}" for k, short in _POSTFIX if k in metrics})
        now = time.monotonic()
        if self._log_lines and (info.epoch in (0, info.num_epochs - 1)
                                or now - self._last_line >= PROGRESS_SECONDS):
            self._last_line = now
            log.info("%s epoch %d/%d  %s", _label(info.stage, info.round, self.s.training.rounds),
                     info.epoch + 1, info.num_epochs, "  ".join(
                         f"{short} {metrics[k]:.3f}" for k, short in _POSTFIX if k in metrics))
        if self.checkpointer is not None and self.checkpointer.due(self.driver.global_epoch):
            self.checkpointer.save(self.state_dict())

    # ------------------------------------------------------------------ pretraining end
    def _before_pretraining_end(self, driver: StageDriver) -> None:
        """FITCompress (its formats and frozen masks applied to the model), then the range
        check -- both before the methods' ``on_pretraining_end``."""
        if self.s.fitcompress.enable_fitcompress:
            from pquant.fitcompress import run_fitcompress

            outcome = run_fitcompress(self.model, self.s, self.train_loader, self.loss_fn,
                                      self.device)
            self.result.fitcompress = outcome
            driver.warnings.extend(outcome.warnings)
            driver.events.append("fitcompress")
        for message in range_warnings(self.model, self._example_batch()):
            log.warning(message)
            driver.warnings.append(message)

    def _example_batch(self) -> torch.Tensor | None:
        """The first validation batch (no shuffling, no RNG consumed), for the range check."""
        if self.val_loader is None:
            return None
        batch = next(iter(self.val_loader), None)
        x = batch[0] if isinstance(batch, (tuple, list)) else None
        return x.to(self.device) if isinstance(x, torch.Tensor) else None

    # ------------------------------------------------------------------ resuming
    def state_dict(self) -> dict:
        """Everything needed to continue between epochs (see :mod:`pquant.training.checkpoint`)."""
        generator = getattr(self.train_loader, "generator", None)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "driver": self.driver.state_dict(),
            "history": list(self.result.history),
            "rng": rng_state(),
            "loader_generator": (generator.get_state()
                                 if isinstance(generator, torch.Generator) else None),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.driver.load_state_dict(state["driver"])
        self.result.history = list(state["history"])
        generator = getattr(self.train_loader, "generator", None)
        if isinstance(generator, torch.Generator) and state.get("loader_generator") is not None:
            generator.set_state(state["loader_generator"])
        set_rng_state(state["rng"])

    # ------------------------------------------------------------------ schedule
    def run(self, resume: dict | None = None) -> TrainResult:
        driver = self.driver
        try:
            self.model.to(self.device)
            if resume is not None:
                self.load_state_dict(resume)
                log.info("resumed at epoch %d of %d", driver.global_epoch, driver.total_epochs)
            disable = not self.progress or not sys.stderr.isatty() or driver.total_epochs == 0
            self._log_lines = bool(self.progress) and disable
            with tqdm(total=driver.total_epochs, initial=driver.global_epoch, desc="",
                      disable=disable, leave=False, dynamic_ncols=True) as bar:
                while not driver.finished:
                    self._epoch(bar)
            driver.finish()
        finally:
            driver.close()
        self.result.warnings = list(driver.warnings)
        self.result.stage_order = list(driver.events)
        return self.result


def _label(stage: Stage, rnd: int, rounds: int) -> str:
    if stage is Stage.TRAINING:
        return "training" if rounds == 1 else f"training round {rnd + 1}/{rounds}"
    return "fine-tuning" if stage is Stage.FINETUNING else "pretraining"


def train_model(
    model: nn.Module,
    config,
    train_loader,
    val_loader=None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    loss_fn: nn.Module | None = None,
    device: torch.device | str | None = None,
    on_epoch_end: EpochCallback | None = None,
    progress: bool | None = None,
    distiller: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    checkpointer: Checkpointer | None = None,
    resume: dict | None = None,
) -> TrainResult:
    """Train a converted model through the stages its pruning method needs.

    Args:
        model: output of :func:`pquant.add_compression_layers`.
        config: the composed config (or a dict of sections); ``training`` sets the schedule.
        train_loader: iterable of ``(x, y)`` batches, re-iterated every epoch.
        val_loader: optional iterable evaluated after every epoch (``val/*`` metrics).
        optimizer: defaults to ``training.optimizer`` instantiated on ``model.parameters()``.
        scheduler: defaults to ``training.scheduler`` (stepped once per epoch), if set.
        loss_fn: defaults to ``training.loss`` (null: the ``training.task``'s default loss).
        device: where to train; defaults to the device of the model's first parameter.
        on_epoch_end: called as ``fn(metrics, global_epoch)`` after every epoch.
        progress: show a progress bar (default ``training.progress``); when stderr is not a
            terminal, an INFO log line per epoch instead (the first and last of each stage, and
            at most one every ``PROGRESS_SECONDS`` in between).
        distiller: replaces the task loss in training: ``distiller(x, outputs, targets)``
            (:class:`pquant.distill.Distiller`); validation keeps ``loss_fn``.
        checkpointer: writes a resumable checkpoint every N epochs
            (:class:`pquant.training.checkpoint.Checkpointer`).
        resume: a loaded checkpoint to continue from (model, optimizer, scheduler, schedule
            position, RNG states); the run then ends exactly as an uninterrupted one.

    Returns:
        :class:`TrainResult` with the per-epoch history and any target warnings.
    """
    s = sections(config)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    model.to(device)
    trainer = _Trainer(model, s, train_loader, val_loader, optimizer, scheduler, loss_fn, device,
                       on_epoch_end, s.training.progress if progress is None else progress,
                       distiller=distiller, checkpointer=checkpointer)
    return trainer.run(resume)
