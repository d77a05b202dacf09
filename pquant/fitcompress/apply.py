"""Apply a :class:`~pquant.fitcompress.search.SearchResult` to the model, and describe it.

* Weight formats: a layer moved down its ladder gets the per-tensor format ``(k, i, f)`` of its
  width (the rule of :mod:`pquant.fitcompress.space`) with its own rounding and overflow modes --
  set in place on fixed-point quantizers, as a new range-split quantizer of that width for
  per-channel/per-weight granularity, or as the starting point of HGQ's learned bits.
  The same formats are returned as ``quantization.layer_specific`` entries.
* Masks (``optimize_pruning``): every pruned layer's method is replaced by a
  :class:`~pquant.fitcompress.mask.SearchedMask` -- frozen, so the training stage trains under
  the chosen masks. Layers without a pruning method (``disable_pruning_for_layers``) are never
  masked.
"""

from __future__ import annotations

import torch
import yaml

from pquant.fitcompress.mask import SearchedMask
from pquant.fitcompress.search import SearchResult
from pquant.fitcompress.space import LayerSpace
from pquant.quant.adaptive import RangeSplitQuantizer
from pquant.quant.hgq import HGQQuantizer
from pquant.quant.quantizer import FixedPointQuantizer


def _set_format(space: LayerSpace, k: int, i: int, f: int) -> None:
    q = space.quantizer
    layer = space.layer
    if isinstance(q, FixedPointQuantizer):
        q.set_format(k=k, i=i, f=f)
    elif isinstance(q, RangeSplitQuantizer):
        new = RangeSplitQuantizer(k, k + i + f, q.round_mode, q.overflow_mode, q.granularity)
        layer.weight_quantizer = new.to(q.k.device)  # (a new module: caches start afresh)
    elif isinstance(q, HGQQuantizer):
        with torch.no_grad():
            q.i.fill_(float(i))
            q.f.fill_(float(f))
        q.format_changed()
    else:  # pragma: no cover - every weight quantizer pquant builds is one of the above
        raise TypeError(f"FITCompress cannot set the weight format of {space.name}: "
                        f"{type(q).__name__}")


def apply_result(result: SearchResult, spaces: list[LayerSpace], pruning_config) -> dict:
    """Set the chosen formats and masks on the layers; return the ``layer_specific`` entries."""
    entries: dict[str, dict] = {}
    for space, bits, mask in zip(spaces, result.bits, result.masks):
        if bits is not None:
            k, i, f = space.format(bits, mask)
            _set_format(space, k, i, f)
            entries[space.name] = {"weight": {"keep_negatives": k, "integer_bits": i,
                                              "fractional_bits": f}}
        if mask is not None and space.prunable:
            old = space.layer.pruning
            space.layer.pruning = SearchedMask(pruning_config, mask, old.layer_type).to(
                space.master.device)
            space.layer.pruning.layer_name = space.name
    return entries


def metrics(result: SearchResult) -> dict[str, float]:
    """The search trace and choice as flat ``fitcompress/*`` metrics."""
    out = {
        "fitcompress/nodes_expanded": float(result.nodes_expanded),
        "fitcompress/nodes_generated": float(result.nodes_generated),
        "fitcompress/duplicates_skipped": float(result.duplicates),
        "fitcompress/fisher_evaluations": float(result.fisher_evaluations),
        "fitcompress/fisher_batches": float(result.fisher_batches),
        "fitcompress/path_cost": float(result.path_cost),
        "fitcompress/compression": float(result.compression),
        "fitcompress/goal": float(result.goal),
        "fitcompress/reached": float(result.reached),
        "fitcompress/search_time_s": float(result.search_time_s),
        "fitcompress/sparsity/global": float(result.global_sparsity),
    }
    for name, bits, sparsity in zip(result.layers, result.bits, result.sparsity):
        if bits is not None:
            out[f"fitcompress/bits/{name}"] = float(bits)
        out[f"fitcompress/sparsity/{name}"] = float(sparsity)
    return out


def overrides_yaml(result: SearchResult, entries: dict) -> str:
    """The chosen configuration as a ``# @package _global_`` config (usable as overrides)."""
    lines = [
        "# @package _global_",
        "# FITCompress choice (weight formats per layer). Reuse: save as <dir>/experiment/<name>.yaml",
        "# and run python -m pquant --config-dir <dir> +experiment=<name>, or pass the overrides",
        "# below.",
        f"# goal {result.goal:g}, reached {result.compression:.4f} "
        f"({'reached' if result.reached else 'NOT reached: closest node'}), "
        f"path cost {result.path_cost:.4g}, moves: {' '.join(result.moves) or '(none)'}",
        "# per-layer sparsity of the searched masks (the masks themselves are in model.pt): "
        + ", ".join(f"{n} {s:.4f}" for n, s in zip(result.layers, result.sparsity)),
    ]
    for name, entry in entries.items():
        w = entry["weight"]
        lines.append(f"#   '+quantization.layer_specific.{name}.weight={{keep_negatives:"
                     f"{w['keep_negatives']},integer_bits:{w['integer_bits']},"
                     f"fractional_bits:{w['fractional_bits']}}}'")
    body = yaml.safe_dump({"quantization": {"layer_specific": entries}}, sort_keys=False)
    return "\n".join(lines) + "\n" + body


def summary_lines(result: SearchResult) -> list[str]:
    """Footer lines for the run summary."""
    chosen = ", ".join(
        f"{n} {'cfg' if b is None else b}b/{s:.2f}"
        for n, b, s in zip(result.layers, result.bits, result.sparsity))
    state = "reached" if result.reached else "NOT reached (closest node)"
    return [
        f"fitcompress goal {result.goal:g} {state}: size {result.compression:.4f} of float32; "
        f"bits/sparsity {chosen}",
        f"fitcompress {result.nodes_expanded} nodes expanded, {result.fisher_evaluations} Fisher "
        f"evaluations, path cost {result.path_cost:.4g}, {result.search_time_s:.2f} s",
    ]
