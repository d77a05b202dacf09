"""``compression_report``: one flat dict with sparsity, bits, BOPs/EBOPs, parameters and size."""

from __future__ import annotations

import torch
from torch import nn

from pquant.metrics.ebops import layer_cost
from pquant.metrics.layers import FLOAT_BITS, own_parameters, weight_layers
from pquant.metrics.sparsity import sparsity_metrics


def _input_shapes(model: nn.Module, example_input: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Per-sample input shape of every module, recorded by one eval forward."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in model.named_modules():
        def hook(_mod, args, name=name):
            if args and isinstance(args[0], torch.Tensor):
                shapes.setdefault(name, tuple(args[0].shape[1:]))
        handles.append(module.register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return shapes


def compression_report(model: nn.Module, example_input: torch.Tensor) -> dict[str, float]:
    """Sparsity, bit-widths, BOPs/EBOPs, parameter counts and size of ``model``.

    Args:
        model: a (converted) model.
        example_input: a batch of inputs (any batch size; costs are per sample).

    Returns:
        Flat dict with slash keys: ``sparsity/global``, ``sparsity/<layer>``,
        ``bits/weight/mean``, ``bits/weight/<layer>``, ``bits/activation/mean``,
        ``bits/input/<layer>``, ``bops/total``, ``bops/<layer>``, ``ebops/total``,
        ``ebops/<layer>``, ``params/total``, ``params/nonzero``, ``params/<layer>/total``,
        ``params/<layer>/nonzero``, ``size/bits``.
    """
    shapes = _input_shapes(model, example_input)
    out: dict[str, float] = dict(sparsity_metrics(model))
    wbits_sum = wbits_n = abits_sum = abits_n = 0.0
    bops_total = ebops_total = size_bits = 0.0
    layer_names = set()
    for view in weight_layers(model):
        layer_names.add(view.name)
        kept = view.weight != 0
        n_kept = int(kept.sum())
        wb = view.weight_bits.expand_as(view.weight)
        kept_bits = float(wb[kept].sum())
        out[f"bits/weight/{view.name}"] = kept_bits / n_kept if n_kept else 0.0
        wbits_sum += kept_bits
        wbits_n += n_kept
        bias_bits = 0.0
        n_bias = n_bias_nz = 0
        if view.bias is not None:
            n_bias = view.bias.numel()
            n_bias_nz = int(torch.count_nonzero(view.bias))
            bias_bits = float(view.bias_bits.expand_as(view.bias)[view.bias != 0].sum())
        size_bits += kept_bits + bias_bits
        out[f"params/{view.name}/total"] = float(view.weight.numel() + n_bias)
        out[f"params/{view.name}/nonzero"] = float(n_kept + n_bias_nz)
        if view.name not in shapes:
            continue  # the layer did not run for this input
        shape = shapes[view.name]
        in_bits = float(view.input_bits.float().mean())
        out[f"bits/input/{view.name}"] = in_bits
        numel = 1
        for d in shape:
            numel *= d
        abits_sum += in_bits * numel
        abits_n += numel
        bops, ebops = layer_cost(view, shape)
        out[f"bops/{view.name}"] = bops
        out[f"ebops/{view.name}"] = ebops
        bops_total += bops
        ebops_total += ebops
    total = nonzero = 0
    for name, _module, pname, p in own_parameters(model):
        total += p.numel()
        if name in layer_names and pname in ("weight", "bias"):
            continue  # counted with the effective tensors below
        nz = int(torch.count_nonzero(p))
        nonzero += nz
        size_bits += FLOAT_BITS * nz
    nonzero += sum(int(out[f"params/{n}/nonzero"]) for n in layer_names)
    out["params/total"] = float(total)
    out["params/nonzero"] = float(nonzero)
    out["bits/weight/mean"] = wbits_sum / wbits_n if wbits_n else 0.0
    out["bits/activation/mean"] = abits_sum / abits_n if abits_n else 0.0
    out["bops/total"] = bops_total
    out["ebops/total"] = ebops_total
    out["size/bits"] = size_bits
    return out
