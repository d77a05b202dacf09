"""FITCompress: joint per-layer weight bit-widths and pruning chosen by Fisher-trace sensitivity.

Zandonati et al., "FIT: A Metric for Model Sensitivity" (ICLR 2023, arXiv 2210.08502) and
"Towards Optimal Compression: Joint Pruning and Quantization" (arXiv 2302.07612).

``fitcompress=on`` runs :func:`run_fitcompress` once, at the end of pretraining: the search
(:mod:`.search`) over the layers (:mod:`.space`) with the Fisher of :mod:`.fisher`, then the
result applied to the model (:mod:`.apply`). The training stage then trains under it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from pquant.errors import ConfigError
from pquant.fitcompress.apply import apply_result, metrics, overrides_yaml, summary_lines
from pquant.fitcompress.fisher import FisherEstimator, take_batches
from pquant.fitcompress.ladders import pruning_ladder, weight_compression
from pquant.fitcompress.search import Search, SearchResult
from pquant.fitcompress.space import layer_spaces, workspace
from pquant.nn.chain import elide_redundant_quantizers

__all__ = ["FitCompressOutcome", "SearchResult", "run_fitcompress", "weight_compression"]

log = logging.getLogger(__name__)


@dataclass
class FitCompressOutcome:
    """The search result as applied to the model.

    Attributes:
        result: the search's choice and trace.
        layer_specific: the chosen weight formats as ``quantization.layer_specific`` entries.
        warnings: messages for the run summary (goal not reached, ...).
    """

    result: SearchResult
    layer_specific: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return metrics(self.result)

    def overrides_yaml(self) -> str:
        return overrides_yaml(self.result, self.layer_specific)

    def summary_lines(self) -> list[str]:
        return summary_lines(self.result)


def run_fitcompress(model: nn.Module, s, train_loader, loss_fn, device: torch.device
                    ) -> FitCompressOutcome:
    """Search at the end of pretraining and apply the result to ``model``.

    Args:
        model: the converted model, its pruning methods still in the pretraining stage.
        s: the validated config sections (``s.fitcompress`` drives the search).
        train_loader: iterable of ``(x, y)``; the Fisher uses its first batches.
        loss_fn: the run's task loss.
        device: the run's device (the model is there).

    Returns:
        The applied result; a goal that cannot be reached gives the closest node and a warning.
    """
    cfg = s.fitcompress
    spaces = layer_spaces(model, cfg.quantization_schedule, cfg.optimize_quantization,
                          s.training.pruning_first)
    if not spaces:
        raise ConfigError("fitcompress.enable_fitcompress=true needs dense or convolution layers "
                          "(PQDense, PQConv1d, PQConv2d) to compress; the model has none, got "
                          "enable_fitcompress=true")
    ladder = pruning_ladder(cfg.pruning_schedule.start, cfg.pruning_schedule.end,
                            cfg.pruning_schedule.steps)
    batches = take_batches(train_loader, cfg.fisher_batches, device)
    weights = [sp.layer.weight for sp in spaces]
    estimator = FisherEstimator(model, weights, batches, loss_fn, cfg.fisher_min_batches,
                                cfg.fisher_tolerance)
    log.info("fitcompress: searching %d layers toward size %.3g of float32 (%s%s)",
             len(spaces), cfg.compression_goal,
             "quantization" if cfg.optimize_quantization else "",
             " + pruning" if cfg.optimize_pruning else "")
    with workspace(spaces) as load:
        result = Search(spaces, load, estimator, ladder, cfg).run()
    entries = apply_result(result, spaces, s.pruning)
    elide_redundant_quantizers(model)
    outcome = FitCompressOutcome(result, entries)
    if not result.reached:
        outcome.warnings.append(
            f"fitcompress.compression_goal={cfg.compression_goal:g} cannot be reached with these "
            f"ladders (quantization_schedule={list(cfg.quantization_schedule)}, optimize_pruning="
            f"{cfg.optimize_pruning}); continuing with the closest node: size "
            f"{result.compression:.4f} of float32 after {result.nodes_expanded} expansions. Add "
            f"lower widths, set fitcompress.optimize_pruning=true, or raise the goal.")
    for line in outcome.summary_lines():
        log.info(line)
    for message in outcome.warnings:
        log.warning(message)
    return outcome
