"""Empirical Fisher information of weight tensors and the FIT distance between parameter sets.

Zandonati et al., "FIT: A Metric for Model Sensitivity", ICLR 2023 (arXiv 2210.08502).

For weight tensor ``l`` and a fixed set of ``T`` training batches (mean loss ``L_t`` over ``B_t``
samples), the element-wise empirical Fisher is estimated as

    F_l = (1 / T) * sum_t B_t * (dL_t / dtheta_l) ** 2

(``B_t`` times the squared mean gradient is the per-sample scale of the squared gradient). The
batches are drawn once and kept on the run's device, so every estimate in a search sees the same
data; all accumulation stays on that device. The estimate stops early once its trace has
converged: after ``min_batches``, every 4 batches the relative change of the running trace over
those 4 batches is compared with ``tolerance``.

``fit(a, b, F) = sum_l sum_j F_lj (a_lj - b_lj) ** 2`` is the FIT distance between parameter sets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

#: batches between two convergence checks (each check is one device -> host sync)
CHECK_EVERY = 4


def take_batches(loader: Iterable, count: int, device: torch.device) -> list[tuple]:
    """The first ``count`` batches of ``loader`` (cycled if shorter), moved to ``device``."""
    batches: list[tuple] = []
    while len(batches) < count:
        before = len(batches)
        for x, y in loader:
            batches.append((x.to(device), y.to(device)))
            if len(batches) == count:
                break
        if len(batches) == before:
            raise ValueError("the training loader yielded no batches for the Fisher estimate")
    return batches


class FisherEstimator:
    """Estimates the Fisher of ``weights`` for the model's current parameters.

    Args:
        model: the model (run in eval mode during an estimate, mode restored after).
        weights: the weight Parameters of interest.
        batches: ``(x, y)`` pairs on the model's device (see :func:`take_batches`).
        loss_fn: the run's task loss (mean over the batch).
        min_batches: batches before the convergence test may stop the estimate.
        tolerance: relative change of the trace below which the estimate has converged.
    """

    def __init__(self, model: nn.Module, weights: Sequence[torch.Tensor], batches: list[tuple],
                 loss_fn: Callable, min_batches: int, tolerance: float) -> None:
        self.model = model
        self.weights = list(weights)
        self.batches = batches
        self.loss_fn = loss_fn
        self.min_batches = min(min_batches, len(batches))
        self.tolerance = float(tolerance)
        self.evaluations = 0
        self.batches_used = 0

    def __call__(self) -> list[torch.Tensor]:
        """One estimate: a list of tensors shaped like ``weights`` (float32)."""
        was_training = self.model.training
        self.model.eval()
        sums = [torch.zeros_like(w, dtype=torch.float32) for w in self.weights]
        previous = None
        used = 0
        try:
            with torch.enable_grad():
                for x, y in self.batches:
                    loss = self.loss_fn(self.model(x), y)
                    grads = torch.autograd.grad(loss, self.weights, allow_unused=True)
                    scale = float(len(y))
                    for acc, g in zip(sums, grads):
                        if g is not None:
                            acc.addcmul_(g.float(), g.float(), value=scale)
                    used += 1
                    if used >= self.min_batches and used % CHECK_EVERY == 0:
                        trace = float(sum(acc.sum() for acc in sums)) / used
                        if previous is not None and abs(trace - previous) <= (
                                self.tolerance * abs(trace)):
                            break
                        previous = trace
        finally:
            self.model.train(was_training)
        self.evaluations += 1
        self.batches_used += used
        return [acc.div_(used) for acc in sums]


def fit(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor],
        fisher: Sequence[torch.Tensor]) -> torch.Tensor:
    """FIT distance ``sum_l sum_j F_lj (a_lj - b_lj)**2`` (0-dim tensor, no host sync)."""
    total = torch.zeros((), device=fisher[0].device)
    for x, y, f in zip(a, b, fisher):
        total = total + (f * (x - y).square()).sum()
    return total


def sensitivity(theta: torch.Tensor, fisher: torch.Tensor) -> torch.Tensor:
    """``sum_j F_j theta_j**2`` of one tensor: its FIT distance to zero."""
    return (fisher * theta.square()).sum()
