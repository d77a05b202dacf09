"""Wanda -- pruning by weight magnitude times input-activation norm.

Paper: M. Sun, Z. Liu, A. Bair, J. Z. Kolter, "A Simple and Effective Pruning Approach for Large
Language Models", ICLR 2024.

The score of weight ``w[o, j]`` is ``|w[o, j]| * ||X_j||``, with ``||X_j||`` the L2 norm of input
feature (or channel) ``j`` over the calibration data. Statistics are gathered from the layer's
inputs during the TRAINING stage: the first ``t_start_collecting_batch`` batches are skipped, the
next ``t_delta`` batches are accumulated (batches, as the names say -- the reference counts epochs
for one of them). The mask is then computed once, at the next forward, and kept for the rest of
training and fine-tuning:

* unstructured: in every output row, the ``sparsity`` fraction with the lowest scores is removed
  (the paper's per-output comparison group; the layer total is exact, leftover single removals go
  to the rows where the next score is smallest);
* N:M (``N`` and ``M`` set): in every group of ``M`` consecutive weights of a row, the ``N``
  highest-scoring weights are kept (the usual N:M notation, e.g. 2:4);
* ``calculate_pruning_budget``: the per-layer sparsity comes from one global magnitude threshold
  over the pruned layers (computed at the end of pretraining) instead of ``sparsity`` everywhere.

Inputs of any rank work: ``(B, F)``, ``(B, T, F)`` for dense layers; ``(B, C, ...)`` for
convolutions, grouped ones included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from pquant.distributed import all_reduce_
from pquant.errors import ConfigError, check_range, fail
from pquant.pruning.base import PruningConfig, PruningMethod, Stage, observation_window_warning
from pquant.pruning.thresholds import budget_warnings, global_magnitude_budget


@dataclass
class WandaConfig(PruningConfig):
    """Wanda settings (reference names and defaults)."""

    _target_: str = "pquant.pruning.wanda.Wanda"
    pruning_method: str = "wanda"
    M: Optional[int] = None  #: N:M group size
    N: Optional[int] = None  #: weights kept per group of M
    sparsity: float = 0.9
    t_delta: int = 100  #: batches of input statistics
    t_start_collecting_batch: int = 100  #: batches of the training stage skipped first
    calculate_pruning_budget: bool = True  #: per-layer sparsity from a global magnitude budget

    def validate(self, path: str = "pruning") -> None:
        super().validate(path)
        check_range(f"{path}.sparsity", self.sparsity, lo=0, hi=1, hi_open=True)
        check_range(f"{path}.t_delta", self.t_delta, lo=1)
        check_range(f"{path}.t_start_collecting_batch", self.t_start_collecting_batch, lo=0)
        if (self.N is None) != (self.M is None):
            raise fail(f"{path}.N / {path}.M", "be set together (N:M sparsity) or both null",
                       f"N={self.N}, M={self.M}")
        if self.M is not None:
            check_range(f"{path}.M", self.M, lo=2)
            check_range(f"{path}.N", self.N, lo=1, hi=self.M - 1)

    def nm(self) -> bool:
        return self.M is not None

    def schedule_warnings(self, training, batches_per_epoch: int | None = None) -> list[str]:
        if not self.enable_pruning:
            return []
        return observation_window_warning("Wanda", self.t_start_collecting_batch,
                                          self.t_delta, training, batches_per_epoch)


class Wanda(PruningMethod):
    """Per-layer Wanda. Buffers: ``mask``, ``sq_sum`` (per input feature/channel), counters."""

    observes = True

    def __init__(self, config: WandaConfig, weight_shape, layer_type: str) -> None:
        super().__init__(config, weight_shape, layer_type)
        if config.nm():
            row = math.prod(self.weight_shape[1:])
            if row % config.M:
                raise ConfigError(
                    f"pruning.M must divide the row length of every pruned layer for N:M "
                    f"sparsity; a layer with weight {tuple(self.weight_shape)} has rows of {row}, "
                    f"got M={config.M}")
        in_units = self.weight_shape[1]
        self.register_buffer("mask", torch.ones(self.weight_shape))
        self.register_buffer("sq_sum", torch.zeros(in_units, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(3, dtype=torch.long))  # seen, collected, done
        self.register_buffer("target", torch.tensor(float(config.sparsity), dtype=torch.float64))
        self.register_load_state_dict_post_hook(_refresh)
        self._seen = self._collected = 0
        self._done = False
        self._target = float(config.sparsity)

    def bind(self, layer) -> None:
        """Size the statistics by the layer's real input width (grouped convolutions see
        ``groups`` times more channels than a weight row has)."""
        channels = getattr(layer, "in_channels", None) or layer.in_features
        if channels != self.sq_sum.numel():
            self.sq_sum = torch.zeros(channels, dtype=torch.float64, device=self.sq_sum.device)

    # ------------------------------------------------------------------ statistics
    @property
    def wants_observations(self) -> bool:
        return not self._done and self._collected < self.config.t_delta

    def observe(self, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        self._seen += 1
        self.counts[0] = self._seen
        if self._seen <= self.config.t_start_collecting_batch:
            return
        x = inputs.double()
        if self.layer_type == "linear":
            per_feature = x.reshape(-1, x.shape[-1]).square().sum(0)
        else:  # (B, C, ...) -> per input channel
            per_feature = x.transpose(0, 1).reshape(x.shape[1], -1).square().sum(1)
        self.sq_sum.add_(per_feature)
        self._collected += 1
        self.counts[1] = self._collected

    # ------------------------------------------------------------------ masks
    def _input_norms(self, weight: torch.Tensor) -> torch.Tensor:
        """``||X_j||`` broadcast to the weight: per input feature, or per input channel of each
        weight of a (grouped) convolution."""
        norms = self.sq_sum.sqrt().to(weight.dtype)
        out, in_per_group = weight.shape[0], weight.shape[1]
        if norms.numel() != in_per_group:  # grouped: output o sees channels of its own group
            groups = norms.numel() // in_per_group
            norms = norms.view(groups, 1, in_per_group).expand(groups, out // groups,
                                                               in_per_group)
            norms = norms.reshape(out, in_per_group)
        else:
            norms = norms.view(1, in_per_group).expand(out, in_per_group)
        return norms.reshape(out, in_per_group, *([1] * (weight.dim() - 2)))

    def compute_mask(self, weight: torch.Tensor) -> torch.Tensor:
        """The mask from the collected statistics (exact counts per row / per N:M group)."""
        w = weight.detach()
        scores = (w.abs() * self._input_norms(w)).reshape(w.shape[0], -1)
        rows, length = scores.shape
        mask = torch.zeros_like(scores)
        if self.config.nm():
            m, n = self.config.M, self.config.N
            groups = scores.reshape(rows, length // m, m)
            keep = groups.topk(n, dim=-1).indices
            mask.view(rows, length // m, m).scatter_(-1, keep, 1.0)
        else:
            # the layer removes round(target * numel) weights exactly: floor per row, and the
            # remainder goes to the rows whose next-weakest score is smallest
            total = min(int(round(self._target * rows * length)), rows * length)
            base, extra = divmod(total, rows)
            order = scores.sort(dim=1)
            n_prune = torch.full((rows,), base, dtype=torch.long, device=scores.device)
            if extra and base < length:
                n_prune[order.values[:, base].topk(extra, largest=False).indices] += 1
            ranks = torch.arange(length, device=scores.device).expand(rows, length)
            keep_sorted = (ranks >= n_prune[:, None]).to(mask.dtype)
            mask.scatter_(1, order.indices, keep_sorted)
        return mask.view_as(w)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.stage is Stage.PRETRAINING:
            return weight
        if not self._done and self._collected >= self.config.t_delta:
            with torch.no_grad():
                all_reduce_(self.sq_sum, "sum")  # torchrun: the norms over every rank's shard
                self.mask.copy_(self.compute_mask(weight))
            self._done = True
            self.counts[2] = 1
        return weight * self.mask

    def hard_mask(self, weight: torch.Tensor) -> torch.Tensor:
        return self.mask.to(weight.dtype)

    # ------------------------------------------------------------------ budget and targets
    @classmethod
    def plan_budget(cls, layers) -> list[str]:
        budgeted = [(m, w) for m, w in layers if m.config.calculate_pruning_budget
                    and not m.config.nm()]
        if not budgeted:
            return []
        sparsity = budgeted[0][0].config.sparsity
        ratios = global_magnitude_budget([w for _, w in budgeted], sparsity)
        for (method, _), ratio in zip(budgeted, ratios):
            method._target = ratio
            method.target.fill_(ratio)
        return budget_warnings([m.layer_name for m, _ in budgeted], ratios, sparsity,
                               "pruning.calculate_pruning_budget")

    def target_sparsity(self) -> float:
        if self.config.nm():
            return 1.0 - self.config.N / self.config.M
        return self._target


def _refresh(module, _incompatible_keys) -> None:
    seen, collected, done = (int(v) for v in module.counts)
    module._seen, module._collected, module._done = seen, collected, bool(done)
    module._target = float(module.target)
