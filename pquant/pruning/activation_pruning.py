"""Activation pruning -- remove output units that are rarely active.

Idea: APoZ ("Average Percentage of Zeros"), H. Hu, R. Peng, Y.-W. Tai, C.-K. Tang, "Network
Trimming: A Data-Driven Neuron Pruning Approach towards Efficient Deep Architectures", 2016.

During the TRAINING stage the layer's outputs are observed: the first
``t_start_collecting_batch`` batches are skipped, then over ``t_delta`` batches the fraction of
samples (and positions) in which each output unit / filter is positive is averaged. Units whose
rate is not above ``threshold`` are removed -- their weights and their bias (a removed unit must
not keep emitting its bias). The decision is made once per round and kept through fine-tuning.

"Active" means "positive", which is what a following ReLU lets through. Layers whose output does
not go into a ReLU (such as the logits layer) are left unpruned -- pruning their units by sign
would remove classes -- and listed by the runner.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pquant.distributed import all_reduce_, world
from pquant.errors import check_range
from pquant.pruning.base import (
    PruningConfig,
    PruningMethod,
    RoundInfo,
    Stage,
    observation_window_warning,
)


@dataclass
class ActivationPruningConfig(PruningConfig):
    """Activation-pruning settings (reference names and defaults)."""

    _target_: str = "pquant.pruning.activation_pruning.ActivationPruning"
    pruning_method: str = "activation_pruning"
    threshold: float = 0.3  #: minimum fraction of positive outputs for a unit to stay
    t_delta: int = 50  #: batches of statistics
    t_start_collecting_batch: int = 50  #: batches of each training round skipped first

    def validate(self, path: str = "pruning") -> None:
        super().validate(path)
        check_range(f"{path}.threshold", self.threshold, lo=0, hi=1)
        check_range(f"{path}.t_delta", self.t_delta, lo=1)
        check_range(f"{path}.t_start_collecting_batch", self.t_start_collecting_batch, lo=0)

    def schedule_warnings(self, training, batches_per_epoch: int | None = None) -> list[str]:
        if not self.enable_pruning:
            return []
        return observation_window_warning("activation pruning", self.t_start_collecting_batch,
                                          self.t_delta, training, batches_per_epoch)


class ActivationPruning(PruningMethod):
    """Per-layer structured mask ``(O, 1, ...)``; buffers ``active_sum`` and counters."""

    observes = True
    masks_bias = True

    def __init__(self, config: ActivationPruningConfig, weight_shape, layer_type: str) -> None:
        super().__init__(config, weight_shape, layer_type)
        out = self.weight_shape[0]
        self.register_buffer("mask", torch.ones((out,) + (1,) * (len(self.weight_shape) - 1)))
        self.register_buffer("active_sum", torch.zeros(out, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(3, dtype=torch.long))  # seen, collected, done
        self.register_load_state_dict_post_hook(_refresh)
        self._seen = self._collected = 0
        self._done = False
        #: set by the layer factory: does a ReLU consume this layer's output?
        self.feeds_relu: bool | None = None

    @property
    def wants_observations(self) -> bool:
        return self.feeds_relu is not False and not self._done

    def observe(self, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        self._seen += 1
        if self._seen > self.config.t_start_collecting_batch:
            channel = -1 if self.layer_type == "linear" else 1
            y = outputs.movedim(channel, -1).reshape(-1, outputs.shape[channel])
            self.active_sum.add_(_positive_rate(y > 0))
            self._collected += 1
            if self._collected >= self.config.t_delta:
                rate = self.active_sum / self._collected
                # a new tensor, not an in-place update: this batch's graph saved the old mask
                self.mask = (rate > self.config.threshold).to(self.mask.dtype).view_as(self.mask)
                self._done = True
        self.counts.copy_(torch.tensor([self._seen, self._collected, int(self._done)]))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.stage is Stage.PRETRAINING:
            return weight
        return weight * self.mask

    def prune_bias(self, bias: torch.Tensor) -> torch.Tensor:
        if self.stage is Stage.PRETRAINING:
            return bias
        return bias * self.mask.reshape(-1)

    def hard_mask(self, weight: torch.Tensor) -> torch.Tensor:
        return self.mask.to(weight.dtype).expand_as(weight)

    def on_round_end(self, info: RoundInfo, weight: torch.Tensor) -> None:
        if not info.is_last:  # the next round collects afresh (removed units stay removed)
            self.active_sum.zero_()
            self._seen = self._collected = 0
            self._done = False
            self.counts.zero_()


def _positive_rate(positive: torch.Tensor) -> torch.Tensor:
    """Per-unit fraction of positive outputs ``(N, O) -> (O,)`` -- over every rank's shard of
    the batch under torchrun (counts summed, then divided), so that all ranks decide alike."""
    if not world().distributed:
        return positive.double().mean(0)
    counts = torch.cat([positive.double().sum(0), positive.new_full((1,), len(positive),
                                                                    dtype=torch.float64)])
    all_reduce_(counts, "sum")
    return counts[:-1] / counts[-1]


def _refresh(module, _incompatible_keys) -> None:
    seen, collected, done = (int(v) for v in module.counts)
    module._seen, module._collected, module._done = seen, collected, bool(done)
