"""The public stage machinery: where a model is in its schedule, and what to add to its loss.

:class:`StageDriver` is what :func:`pquant.train_model` is built on; a hand-written loop (or the
Lightning callback in :mod:`pquant.training.lightning`) uses the same object::

    driver = StageDriver(model, cfg, optimizer=opt, batches_per_epoch=len(train_loader))
    while not driver.finished:
        driver.start_epoch()                        # stage transitions + on_epoch_start
        for x, y in train_loader:
            model.train()
            loss = driver.add_compression_loss(loss_fn(model(x), y))
            opt.zero_grad(); loss.backward(); opt.step()
        driver.end_epoch()                          # on_epoch_end of methods and quantizers
        scheduler.step()                            # (if any)
    warnings = driver.finish()                      # trailing transitions, target check

The schedule is one flat list of steps -- epochs and transitions -- walked by a cursor::

    begin | pretraining epochs | on_pretraining_end | begin | round 0 epochs | on_round_end(0)
    [rewind] | ... | on_finetuning_start | begin | fine-tuning epochs

Transitions run lazily, at the next :meth:`StageDriver.start_epoch` (or :meth:`finish`), so that
whatever the loop does after :meth:`end_epoch` (validation, metrics, logging, a checkpoint) still
sees the epoch's own state. The hook order within a step is the one documented in
:mod:`pquant.pruning.base`; :meth:`state_dict`/:meth:`load_state_dict` save and restore the
cursor (and the rewind snapshot), which makes a run resumable between epochs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from pquant.config.schema import Rewind
from pquant.config.sections import Sections, sections
from pquant.metrics.layers import MACHINERY
from pquant.nn.weight_layer import CompressedWeightMixin
from pquant.pruning.base import EpochInfo, RoundInfo, Stage
from pquant.quant.base import Quantizer
from pquant.training.losses import CompressionLoss
from pquant.training.targets import check_targets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One step of the schedule: an epoch (``kind == "epoch"``) or a transition.

    Attributes:
        kind: ``epoch``, ``begin`` (a stage or round starts), ``pretraining_end``, ``round_end``, ``rewind`` or ``finetuning_start``.
        stage: the stage the step belongs to.
        round: round index (0 outside the main stage).
        epoch: epoch index inside its stage (inside its round for TRAINING); -1 for transitions.
        num_epochs: epochs of the stage (of one round for TRAINING).
    """

    kind: str
    stage: Stage
    round: int = 0
    epoch: int = -1
    num_epochs: int = 0


def build_schedule(training) -> list[Step]:
    """The flat step list of a ``training`` section (see the module docstring)."""
    steps = [Step("begin", Stage.PRETRAINING)]
    steps += [Step("epoch", Stage.PRETRAINING, 0, e, training.pretraining_epochs)
              for e in range(training.pretraining_epochs)]
    steps.append(Step("pretraining_end", Stage.PRETRAINING))
    for rnd in range(training.rounds):
        steps.append(Step("begin", Stage.TRAINING, rnd))
        steps += [Step("epoch", Stage.TRAINING, rnd, e, training.epochs)
                  for e in range(training.epochs)]
        steps.append(Step("round_end", Stage.TRAINING, rnd))
        last = rnd == training.rounds - 1
        if training.rewind is Rewind["every-round"] or (
                training.rewind is Rewind["post-training-stage"] and last):
            steps.append(Step("rewind", Stage.TRAINING, rnd))
    steps.append(Step("finetuning_start", Stage.FINETUNING))
    steps.append(Step("begin", Stage.FINETUNING))
    steps += [Step("epoch", Stage.FINETUNING, 0, e, training.fine_tuning_epochs)
              for e in range(training.fine_tuning_epochs)]
    return steps


def snapshot_weights(model: nn.Module) -> dict[str, torch.Tensor]:
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


def restore_weights(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    """Copy a :func:`snapshot_weights` result back into ``model``."""
    current = dict(model.named_parameters())
    current.update(dict(model.named_buffers()))
    with torch.no_grad():
        for name, value in snapshot.items():
            current[name].copy_(value)


class StageDriver:
    """Walks a converted model through pretraining -> rounds -> fine-tuning.

    Args:
        model: output of :func:`pquant.add_compression_layers`.
        config: the composed config (or a dict of sections); ``training`` sets the schedule.
        optimizer: its state is cleared when the weights are rewound (stale momentum); optional.
        batches_per_epoch: lets the schedule warnings count observation windows; optional.
        before_pretraining_end: called as ``fn(driver)`` at the pretraining -> training
            transition, before the methods' ``on_pretraining_end`` (``train_model`` runs the
            FITCompress search and the format range check there); the compression loss terms
            are collected anew after it.

    Attributes:
        schedule: the flat list of :class:`Step` objects.
        cursor: index of the next step to run (of the running epoch, inside an epoch).
        global_epoch: epochs completed so far over all stages.
        events: the hook/stage events in the order they happened (``stage:training:0``,
            ``on_pretraining_end``, ``save_weights:0``, ``on_round_end:0``, ``rewind``, ...).
        warnings: schedule and target warnings collected so far.
    """

    def __init__(self, model: nn.Module, config, *, optimizer: torch.optim.Optimizer | None = None,
                 batches_per_epoch: int | None = None,
                 before_pretraining_end: Callable[[StageDriver], None] | None = None) -> None:
        self.model = model
        self.before_pretraining_end = before_pretraining_end
        self.s: Sections = config if isinstance(config, Sections) else sections(config)
        self.optimizer = optimizer
        self.layers = [m for m in model.modules()
                       if isinstance(m, CompressedWeightMixin) and m.pruning is not None]
        self.quantizers = [m for m in model.modules() if isinstance(m, Quantizer)]
        self.loss = CompressionLoss(model, self.s)
        self.schedule = build_schedule(self.s.training)
        self.cursor = 0
        self.global_epoch = 0
        self.in_epoch = False
        self.events: list[str] = []
        self.warnings: list[str] = []
        self.snapshot: dict[str, torch.Tensor] | None = None
        self._handles: list = []
        self._finished = False
        for message in self.s.pruning.schedule_warnings(self.s.training,
                                                        batches_per_epoch=batches_per_epoch):
            self._warn(message)
        self._install_observers()

    # ------------------------------------------------------------------ where we are
    @property
    def total_epochs(self) -> int:
        """Epochs in the whole schedule (pretraining + rounds x epochs + fine-tuning)."""
        return sum(step.kind == "epoch" for step in self.schedule)

    @property
    def finished(self) -> bool:
        """True once every epoch has run (call :meth:`finish` for the trailing transitions)."""
        return not any(step.kind == "epoch" for step in self.schedule[self.cursor:])

    @property
    def step(self) -> Step | None:
        """The current epoch inside an epoch, else the next step to run (None at the end)."""
        return self.schedule[self.cursor] if self.cursor < len(self.schedule) else None

    @property
    def stage(self) -> Stage:
        """The stage whose rules apply now (to the loss of the current step)."""
        step = self.step
        return step.stage if step is not None else Stage.FINETUNING

    def epoch_info(self) -> EpochInfo:
        """The :class:`EpochInfo` of the running epoch."""
        step = self._epoch_step()
        return EpochInfo(step.stage, step.epoch, step.num_epochs, step.round, self.global_epoch)

    # ------------------------------------------------------------------ advancing
    def start_epoch(self) -> EpochInfo:
        """Run the transitions before the next epoch, then its ``on_epoch_start`` hooks.

        Returns:
            The epoch's :class:`EpochInfo`.

        Raises:
            RuntimeError: when no epoch is left, or an epoch is already running.
        """
        if self.in_epoch:
            raise RuntimeError("start_epoch called twice without end_epoch")
        self._run_transitions()
        if self.step is None:
            raise RuntimeError("the schedule has no epoch left (check driver.finished)")
        step = self.step
        if (step.stage is Stage.TRAINING and step.round == 0
                and step.epoch == self.s.training.save_weights_epoch):
            self.snapshot = snapshot_weights(self.model)
            self._event(f"save_weights:{step.epoch}")
        self.in_epoch = True
        info = self.epoch_info()
        for layer in self.layers:
            layer.pruning.on_epoch_start(info)
        return info

    def end_epoch(self) -> EpochInfo:
        """``on_epoch_end`` of every pruning method, then of every quantizer (HGQ clamps its
        bit-widths); the cursor moves past the epoch. Returns the finished epoch's info."""
        info = self.epoch_info()
        for layer in self.layers:
            layer.pruning.on_epoch_end(info, layer.weight)
        for q in self.quantizers:
            q.on_epoch_end()
        self.in_epoch = False
        self.cursor += 1
        self.global_epoch += 1
        return info

    def finish(self) -> list[str]:
        """Run the remaining transitions (``on_round_end``, ``on_finetuning_start``, ...), check
        every layer's sparsity target, remove the observation hooks. Returns all warnings."""
        if self.in_epoch:
            raise RuntimeError("finish called inside an epoch (call end_epoch first)")
        if not self._finished:
            self._run_transitions()
            for message in check_targets(self.model):
                self._warn(message)
            self.close()
            self._finished = True
        return self.warnings

    def close(self) -> None:
        """Remove the forward hooks that feed data-driven methods and the loss's cost collector
        (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.loss.close()

    # ------------------------------------------------------------------ losses
    def compression_active(self) -> bool:
        """Whether the current stage adds any compression loss."""
        return self.loss.active(self.stage)

    def add_compression_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` plus the current stage's compression terms (pruning regularisers during
        TRAINING, HGQ's EBOPs/width terms after pretraining), summed in a fixed order. Call once
        per training step, after the forward."""
        if not self.loss.active(self.stage):
            return loss
        return self.loss(self.stage, loss)

    def collecting(self):
        """A context for a training step whose forward does not call the driver's model itself
        (it calls an inner module): widths and EBOPs the forward computes are then reused by
        :meth:`add_compression_loss` instead of being recomputed. Optional."""
        return self.loss.collecting()

    def compression_terms(self) -> dict[str, torch.Tensor]:
        """The current step's compression terms by name (``pruning/<layer>``, ``hgq``); their sum
        is what :meth:`add_compression_loss` adds. Call instead of it, once per step."""
        terms: dict[str, torch.Tensor] = {}
        stage = self.stage
        if stage is Stage.TRAINING:
            for method in self.loss.pruning:
                term = method.extra_loss()
                if term is not None:
                    terms[f"pruning/{method.layer_name}"] = term
        if self.loss.hgq and stage is not Stage.PRETRAINING:
            terms["hgq"] = self.loss.hgq_term()
        return terms

    # ------------------------------------------------------------------ resuming
    def state_dict(self) -> dict:
        """The position in the schedule (and the rewind snapshot): restore with
        :meth:`load_state_dict` on a driver built from the same config. Between epochs only."""
        if self.in_epoch:
            raise RuntimeError("state_dict is only defined between epochs")
        return {"cursor": self.cursor, "global_epoch": self.global_epoch,
                "events": list(self.events), "warnings": list(self.warnings),
                "snapshot": self.snapshot, "num_steps": len(self.schedule)}

    def load_state_dict(self, state: dict) -> None:
        if int(state["num_steps"]) != len(self.schedule):
            raise ValueError(f"the saved schedule has {state['num_steps']} steps, this config's "
                             f"has {len(self.schedule)}: not the same training section")
        self.cursor = int(state["cursor"])
        self.global_epoch = int(state["global_epoch"])
        self.events = list(state["events"])
        self.warnings = list(state["warnings"])
        self.snapshot = state["snapshot"]

    # ------------------------------------------------------------------ transitions
    def _run_transitions(self) -> None:
        while self.step is not None and self.step.kind != "epoch":
            step = self.step
            getattr(self, f"_{step.kind}")(step)
            self.cursor += 1

    def _begin(self, step: Step) -> None:
        self._event(f"stage:{step.stage.name.lower()}"
                    + (f":{step.round}" if step.stage is Stage.TRAINING else ""))

    def _pretraining_end(self, step: Step) -> None:
        if self.before_pretraining_end is not None:
            self.before_pretraining_end(self)
            # it may change formats or replace pruning methods (FITCompress): collect anew
            self.loss.close()
            self.loss = CompressionLoss(self.model, self.s)
        by_class: dict[type, list] = {}
        for layer in self.layers:
            by_class.setdefault(type(layer.pruning), []).append((layer.pruning, layer.weight))
        for cls, pairs in by_class.items():
            for message in cls.plan_budget(pairs) or []:
                self._warn(message)
        for layer in self.layers:
            layer.pruning.on_pretraining_end()
        self._event("on_pretraining_end")

    def _round_end(self, step: Step) -> None:
        info = RoundInfo(step.round, self.s.training.rounds)
        for layer in self.layers:
            layer.pruning.on_round_end(info, layer.weight)
        self._event(f"on_round_end:{step.round}")

    def _rewind(self, step: Step) -> None:
        if self.snapshot is None:
            raise RuntimeError("rewind requested but no weights were saved")
        restore_weights(self.model, self.snapshot)
        if self.optimizer is not None:
            self.optimizer.state.clear()  # momentum from the rewound-away trajectory is stale
        self._event("rewind")

    def _finetuning_start(self, step: Step) -> None:
        for layer in self.layers:
            layer.pruning.on_finetuning_start(layer.weight)
        self._event("on_finetuning_start")

    # ------------------------------------------------------------------ plumbing
    def _epoch_step(self) -> Step:
        step = self.step
        if not self.in_epoch or step is None:
            raise RuntimeError("no epoch is running (call start_epoch first)")
        return step

    def _event(self, name: str) -> None:
        self.events.append(name)

    def _warn(self, message: str) -> None:
        log.warning(message)
        self.warnings.append(message)

    def _install_observers(self) -> None:
        for layer in self.layers:
            method = layer.pruning
            if not method.observes:
                continue

            def hook(module, args, output, method=method):
                if module.training and method.stage is Stage.TRAINING \
                        and method.wants_observations:
                    with torch.no_grad():
                        method.observe(args[0].detach(), output.detach())

            self._handles.append(layer.register_forward_hook(hook))
