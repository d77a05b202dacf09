"""The stage-driven training loop: pretraining -> rounds x epochs -> fine-tuning.

::

    for e in pretraining epochs:      on_epoch_start, train, evaluate, on_epoch_end
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
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn
from tqdm.auto import tqdm

from pquant.config.schema import Rewind
from pquant.config.sections import Sections, sections
from pquant.metrics.accuracy import evaluate
from pquant.metrics.layers import MACHINERY
from pquant.metrics.report import epoch_metrics
from pquant.nn.weight_layer import CompressedWeightMixin
from pquant.pruning.base import EpochInfo, RoundInfo, Stage
from pquant.quant.base import Quantizer
from pquant.quant.range_check import range_warnings
from pquant.training import interrupt
from pquant.training.losses import CompressionLoss
from pquant.training.targets import check_targets
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


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the model's own parameters and buffers (not masks or quantizer state)."""
    state = {}
    for mod_name, module in model.named_modules():
        if isinstance(module, MACHINERY):
            continue
        tensors = list(module.named_parameters(recurse=False))
        tensors += list(module.named_buffers(recurse=False))
        for name, t in tensors:
            state[f"{mod_name}.{name}" if mod_name else name] = t.detach().clone()
    return state


def _restore(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    current = dict(model.named_parameters())
    current.update(dict(model.named_buffers()))
    with torch.no_grad():
        for name, value in snapshot.items():
            current[name].copy_(value)


class _Trainer:
    def __init__(self, model, s: Sections, train_loader, val_loader, optimizer, scheduler,
                 loss_fn, device, on_epoch_end, progress):
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
        self._log_lines = False  # progress as log lines (no terminal), set per stage
        self._label = ""
        self._last_line = 0.0
        self.layers = [m for m in model.modules()
                       if isinstance(m, CompressedWeightMixin) and m.pruning is not None]
        self.quantizers = [m for m in model.modules() if isinstance(m, Quantizer)]
        self.compression_loss = CompressionLoss(model, s)
        self.result = TrainResult()
        self.global_epoch = 0
        self.snapshot: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ pieces
    def _event(self, name: str) -> None:
        self.result.stage_order.append(name)

    def _train_epoch(self, stage: Stage) -> dict[str, float]:
        model, opt, loss_fn, device = self.model, self.optimizer, self.loss_fn, self.device
        model.train()
        compression = self.compression_loss if self.compression_loss.active(stage) else None
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        n = 0
        regression = False
        for x, y in self.train_loader:
            interrupt.check()  # SIGINT/SIGTERM stop here, at a batch boundary
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            out = model(x)
            regression = y.is_floating_point()
            loss = loss_fn(out, y)
            if compression is not None:
                loss = compression(stage, loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                loss_sum += loss.detach() * len(y)
                if out.dim() == 2 and y.dim() == 1:
                    correct += (out.argmax(dim=1) == y).sum()
            n += len(y)
        metrics = {"train/loss": float(loss_sum) / max(n, 1)}
        if not regression:  # regression reports the loss only
            metrics["train/accuracy"] = float(correct) / max(n, 1)
        return metrics

    def _epoch(self, stage: Stage, epoch: int, num_epochs: int, rnd: int, bar) -> None:
        interrupt.check()
        info = EpochInfo(stage, epoch, num_epochs, rnd, self.global_epoch)
        for layer in self.layers:
            layer.pruning.on_epoch_start(info)
        metrics = self._train_epoch(stage)
        if self.val_loader is not None:
            val = evaluate(self.model, self.val_loader, self.loss_fn, self.device)
            metrics.update({f"val/{k}": v for k, v in val.items()})
        for layer in self.layers:
            layer.pruning.on_epoch_end(info, layer.weight)
        for q in self.quantizers:
            q.on_epoch_end()
        if self.scheduler is not None:
            self.scheduler.step()
        metrics.update(epoch_metrics(self.model))
        metrics["lr"] = float(self.optimizer.param_groups[0]["lr"])
        metrics.update(stage=float(stage), round=float(rnd), epoch=float(epoch))
        self.result.history.append(metrics)
        if self.on_epoch_end is not None:
            self.on_epoch_end(metrics, self.global_epoch)
        self.global_epoch += 1
        bar.update(1)
        bar.set_postfix({short: f"{metrics[k]:.3f}" for k, short in _POSTFIX if k in metrics})
        now = time.monotonic()
        if self._log_lines and (epoch in (0, num_epochs - 1)
                                or now - self._last_line >= PROGRESS_SECONDS):
            self._last_line = now
            log.info("%s epoch %d/%d  %s", self._label, epoch + 1, num_epochs, "  ".join(
                f"{short} {metrics[k]:.3f}" for k, short in _POSTFIX if k in metrics))

    def _stage(self, stage: Stage, num_epochs: int, rnd: int = 0, label: str | None = None):
        self._event(f"stage:{stage.name.lower()}" + (f":{rnd}" if stage is Stage.TRAINING else ""))
        disable = not self.progress or not sys.stderr.isatty() or num_epochs == 0
        self._log_lines = bool(self.progress) and disable
        self._label = label or stage.name.lower()
        with tqdm(total=num_epochs, desc=label or stage.name.lower(), disable=disable,
                  leave=False, dynamic_ncols=True) as bar:
            for epoch in range(num_epochs):
                if (stage is Stage.TRAINING and rnd == 0
                        and epoch == self.s.training.save_weights_epoch):
                    self.snapshot = _snapshot(self.model)
                    self._event(f"save_weights:{epoch}")
                self._epoch(stage, epoch, num_epochs, rnd, bar)

    def _fitcompress(self) -> None:
        """FITCompress search at the pretraining -> training transition; the result (formats,
        frozen masks) is applied to the model, so the compression losses are collected anew."""
        from pquant.fitcompress import run_fitcompress

        outcome = run_fitcompress(self.model, self.s, self.train_loader, self.loss_fn,
                                  self.device)
        self.result.fitcompress = outcome
        self.result.warnings.extend(outcome.warnings)
        self.compression_loss = CompressionLoss(self.model, self.s)
        self._event("fitcompress")

    def _rewind(self) -> None:
        if self.snapshot is None:
            raise RuntimeError("rewind requested but no weights were saved")
        _restore(self.model, self.snapshot)
        self.optimizer.state.clear()  # momentum from the rewound-away trajectory is stale
        self._event("rewind")

    # ------------------------------------------------------------------ schedule
    def _install_observers(self) -> list:
        handles = []
        for layer in self.layers:
            method = layer.pruning
            if not method.observes:
                continue

            def hook(module, args, output, method=method):
                if module.training and method.stage is Stage.TRAINING \
                        and method.wants_observations:
                    with torch.no_grad():
                        method.observe(args[0].detach(), output.detach())

            handles.append(layer.register_forward_hook(hook))
        return handles

    def run(self) -> TrainResult:
        handles = self._install_observers()
        try:
            return self._run()
        finally:
            for h in handles:
                h.remove()

    def _example_batch(self) -> torch.Tensor | None:
        """The first validation batch (no shuffling, no RNG consumed), for the range check."""
        if self.val_loader is None:
            return None
        batch = next(iter(self.val_loader), None)
        x = batch[0] if isinstance(batch, (tuple, list)) else None
        return x.to(self.device) if isinstance(x, torch.Tensor) else None

    def _run(self) -> TrainResult:
        t = self.s.training
        try:
            batches = len(self.train_loader)
        except TypeError:
            batches = None
        for message in self.s.pruning.schedule_warnings(t, batches_per_epoch=batches):
            log.warning(message)
            self.result.warnings.append(message)
        self.model.to(self.device)
        self._stage(Stage.PRETRAINING, t.pretraining_epochs)
        if self.s.fitcompress.enable_fitcompress:
            self._fitcompress()
        for message in range_warnings(self.model, self._example_batch()):
            log.warning(message)
            self.result.warnings.append(message)
        by_class: dict[type, list] = {}
        for layer in self.layers:
            by_class.setdefault(type(layer.pruning), []).append((layer.pruning, layer.weight))
        for cls, pairs in by_class.items():
            for message in cls.plan_budget(pairs) or []:
                log.warning(message)
                self.result.warnings.append(message)
        for layer in self.layers:
            layer.pruning.on_pretraining_end()
        self._event("on_pretraining_end")
        for rnd in range(t.rounds):
            label = "training" if t.rounds == 1 else f"training round {rnd + 1}/{t.rounds}"
            self._stage(Stage.TRAINING, t.epochs, rnd, label)
            info = RoundInfo(rnd, t.rounds)
            for layer in self.layers:
                layer.pruning.on_round_end(info, layer.weight)
            self._event(f"on_round_end:{rnd}")
            if t.rewind is Rewind["every-round"] or (
                t.rewind is Rewind["post-training-stage"] and info.is_last
            ):
                self._rewind()
        for layer in self.layers:
            layer.pruning.on_finetuning_start(layer.weight)
        self._event("on_finetuning_start")
        self._stage(Stage.FINETUNING, t.fine_tuning_epochs, label="fine-tuning")
        for message in check_targets(self.model):
            log.warning(message)
            self.result.warnings.append(message)
        return self.result


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
        progress: show a progress bar per stage (default ``training.progress``); when stderr
            is not a terminal, an INFO log line per epoch instead (the first and last of each
            stage, and at most one every ``PROGRESS_SECONDS`` in between).

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
                       on_epoch_end, s.training.progress if progress is None else progress)
    return trainer.run()
