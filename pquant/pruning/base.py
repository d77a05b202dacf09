"""The pruning contract: a config dataclass and a per-layer module per method.

A method lives in one file of this package: a dataclass derived from :class:`PruningConfig`
(fields, defaults, ``validate``) whose ``_target_`` names a :class:`PruningMethod` subclass. The
runner discovers the dataclasses, registers them as Hydra schemas, and builds one method module
per prunable layer with ``method_cls(config, weight_shape, layer_type)``.

Stages (:class:`Stage`): ``PRETRAINING`` (dense warm-up, masks are ones), ``TRAINING`` (masks are
learned; extra losses apply) and ``FINETUNING`` (masks frozen and binary). Only the training loop
calls the hooks, in this order::

    on_epoch_start / on_epoch_end         around every epoch of every stage
    plan_budget (classmethod)             once per method class, with every pruned layer,
                                          before on_pretraining_end (cross-layer budgets)
    on_pretraining_end                    once, after the last pretraining epoch (even if none)
    observe(inputs, outputs)              after the forward of each training-mode batch of the
                                          TRAINING stage, while ``wants_observations``
    extra_loss                            once per TRAINING-stage batch, added to the loss
    on_round_end                          after every round of the main stage (last one included)
    on_finetuning_start                   once, before the fine-tuning epochs (even if none)

Structured methods also mask the bias of removed units (``prune_bias``): a removed neuron must not
keep emitting its bias.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import ClassVar

import torch
from omegaconf import MISSING
from torch import nn

from pquant.config.registry import register_base, register_schema, schemas
from pquant.errors import fail


class Stage(IntEnum):
    PRETRAINING = 0
    TRAINING = 1
    FINETUNING = 2


@dataclass
class EpochInfo:
    """Where the loop stands when an epoch hook is called.

    Attributes:
        stage: the current stage.
        epoch: epoch index inside the current stage (inside the current round for TRAINING).
        num_epochs: number of epochs of the current stage (of one round for TRAINING).
        round: round index (0 outside the main stage).
        global_epoch: epochs run so far over all stages.
    """

    stage: Stage
    epoch: int
    num_epochs: int
    round: int = 0
    global_epoch: int = 0


@dataclass
class RoundInfo:
    round: int
    num_rounds: int

    @property
    def is_last(self) -> bool:
        return self.round == self.num_rounds - 1


@register_base("pruning")
@dataclass
class PruningConfig:
    """Fields shared by every pruning method (reference names and defaults).

    ``threshold_decay`` weighs a decay term on the method's thresholds or scores, added to the
    loss in the TRAINING stage; each method documents its term in :attr:`THRESHOLD_DECAY`.
    Methods without thresholds or scores that train (``THRESHOLD_DECAY`` empty) refuse a
    non-zero value.
    """

    #: what ``threshold_decay`` does for this method ("" : nothing, a non-zero value is refused)
    THRESHOLD_DECAY: ClassVar[str] = ""

    _target_: str = MISSING  #: the per-layer PruningMethod class
    pruning_method: str = MISSING  #: must equal the method's own name (the group option)
    enable_pruning: bool = True
    disable_pruning_for_layers: list[str] = field(default_factory=list)
    threshold_decay: float = 0.0  #: weight of the method's decay term (see THRESHOLD_DECAY)

    def __init_subclass__(cls, **kwargs) -> None:
        """A subclass that names its own method (``pruning_method = "<name>"`` in its body) is
        the schema of option ``pruning=<name>`` (found by :mod:`pquant.config.registry`)."""
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("pruning_method")
        if isinstance(name, str) and name != MISSING:
            register_schema("pruning", name)(cls)

    @classmethod
    def method_name(cls) -> str:
        """The method's own name: the default of ``pruning_method`` in this dataclass."""
        return next(f.default for f in fields(cls) if f.name == "pruning_method")

    def validate(self, path: str = "pruning") -> None:
        own = self.method_name()
        if self.pruning_method != own:
            raise fail(
                f"{path}.pruning_method",
                f"match the chosen group 'pruning={own}' (select another method with "
                f"pruning=<name>, not by editing pruning_method), i.e. be '{own}'",
                self.pruning_method,
            )
        if self.threshold_decay < 0:
            raise fail(f"{path}.threshold_decay", "be >= 0", self.threshold_decay)
        if self.threshold_decay != 0 and not self.THRESHOLD_DECAY:
            readers = sorted(name for name, cls in _config_classes().items()
                             if cls.THRESHOLD_DECAY)
            raise fail(f"{path}.threshold_decay",
                       f"be 0 with pruning={own}: it has no thresholds or scores that train, "
                       f"so there is nothing to decay (methods that read it: "
                       f"{', '.join(readers)})", self.threshold_decay)

    def schedule_warnings(self, training, batches_per_epoch: int | None = None) -> list[str]:
        """Human-readable reasons why the schedule in ``training`` cannot meet the target."""
        return []


def _config_classes() -> dict[str, type[PruningConfig]]:
    return schemas("pruning")


def observation_window_warning(what: str, t_start: int, t_delta: int, training,
                               batches_per_epoch: int | None) -> list[str]:
    """Warning for data-driven methods whose statistics window does not fit in a round."""
    if batches_per_epoch is None:
        return []
    needed = t_start + t_delta
    available = training.epochs * batches_per_epoch
    if available >= needed:
        return []
    return [
        f"{what} skips pruning.t_start_collecting_batch={t_start} batches and then collects "
        f"pruning.t_delta={t_delta}, {needed} in all, but a training round has "
        f"{training.epochs} epochs x {batches_per_epoch} batches = {available}: nothing would be "
        f"pruned. Lower those settings or raise training.epochs to at least "
        f"{-(-needed // max(batches_per_epoch, 1))}."
    ]


def _refresh_stage(module, _incompatible_keys) -> None:
    module._stage_cache = Stage(int(module._stage))


class PruningMethod(nn.Module):
    """Per-layer pruning module. ``forward(weight)`` returns the (soft- or hard-) masked weight.

    Args:
        config: the method's config dataclass.
        weight_shape: shape of the layer's weight, output dimension first.
        layer_type: ``"linear"`` or ``"conv"``.
    """

    #: True for methods that may need ``observe`` calls (the loop installs hooks for them);
    #: ``wants_observations`` says whether they need them right now.
    observes: bool = False
    #: True if ``prune_bias`` masks the bias (structured methods).
    masks_bias: bool = False

    def __init__(self, config: PruningConfig, weight_shape: torch.Size, layer_type: str) -> None:
        super().__init__()
        self.config = config
        self.weight_shape = torch.Size(weight_shape)
        self.layer_type = layer_type
        self.layer_name = "?"  # the dotted name of the pruned layer (set by the layer factory)
        self.register_buffer("_stage", torch.tensor(int(Stage.PRETRAINING)))
        self._stage_cache = Stage.PRETRAINING
        self.register_load_state_dict_post_hook(_refresh_stage)

    # ------------------------------------------------------------------ stage
    @property
    def stage(self) -> Stage:
        return self._stage_cache

    def set_stage(self, stage: Stage) -> None:
        self._stage.fill_(int(stage))
        self._stage_cache = Stage(stage)

    # ------------------------------------------------------------------ masks
    def forward(self, weight: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def fused_weight(self, weight: torch.Tensor) -> tuple:
        """``(w, mask, soft)`` for the fused kernels (:mod:`pquant.kernels`), which apply the mask
        themselves: ``forward(weight) == w * mask`` (``mask`` None: ``w`` itself), or with
        ``soft = (n_prune, 1 / temperature, clip)`` PDP's soft mask computed by the kernel.
        The default hands over the method's own (differentiable) forward."""
        return self.forward(weight), None, None

    def hard_mask(self, weight: torch.Tensor) -> torch.Tensor:
        """Binary mask (broadcastable to the weight) of the weights this method keeps."""
        raise NotImplementedError  # pragma: no cover - abstract

    def extra_loss(self) -> torch.Tensor | None:
        """Regulariser added to the task loss by the loop during the TRAINING stage."""
        return None

    # ------------------------------------------------------------------ hooks
    def on_epoch_start(self, info: EpochInfo) -> None:
        pass

    def on_epoch_end(self, info: EpochInfo, weight: torch.Tensor) -> None:
        pass

    def on_pretraining_end(self) -> None:
        self.set_stage(Stage.TRAINING)

    def on_round_end(self, info: RoundInfo, weight: torch.Tensor) -> None:
        pass

    def on_finetuning_start(self, weight: torch.Tensor) -> None:
        self.set_stage(Stage.FINETUNING)

    @property
    def wants_observations(self) -> bool:
        return False

    def observe(self, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        """Statistics of one training batch: the layer's input and output tensors."""

    def prune_bias(self, bias: torch.Tensor) -> torch.Tensor:
        """The bias with removed output units zeroed (structured methods)."""
        return bias

    def bind(self, layer: nn.Module) -> None:
        """Called once by the layer factory with the PQ layer this method prunes (read facts
        such as the number of convolution groups; do not keep the layer)."""

    @classmethod
    def plan_budget(cls, layers: list[tuple[PruningMethod, torch.Tensor]]) -> list[str]:
        """Cross-layer planning at the end of pretraining, given ``(method, weight)`` pairs of
        every layer this class prunes (e.g. a global magnitude budget). Returns warnings."""
        return []

    # ------------------------------------------------------------------ reporting
    def target_sparsity(self) -> float | None:
        """The sparsity this method was asked to reach in this layer, if it has a target."""
        return None

    def extra_repr(self) -> str:
        return f"{self.layer_type}, shape={tuple(self.weight_shape)}, stage={self.stage.name}"


class NoPruning(PruningMethod):
    """Identity: keeps every weight. Used by ``pruning=none``."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight

    def hard_mask(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(weight)


@dataclass
class NoPruningConfig(PruningConfig):
    """``pruning=none``: no method; the layers keep every weight."""

    _target_: str = "pquant.pruning.base.NoPruning"
    pruning_method: str = "none"
    enable_pruning: bool = False
