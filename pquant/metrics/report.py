"""``compression_report``: one flat dict with sparsity, bits, BOPs/EBOPs, parameters and size."""

from __future__ import annotations

import torch
from torch import nn

from pquant.metrics.layers import FLOAT_BITS, own_parameters, weight_layers
from pquant.metrics.sparsity import sparsity_metrics
from pquant.nn.base import PQModule
from pquant.nn.registry import float_cost, is_weight_layer


def _forward_shapes(model: nn.Module, example_input: torch.Tensor) -> dict[str, tuple]:
    """One eval forward: PQ layers record their shapes; plain weight layers through hooks."""
    shapes: dict[str, tuple] = {}
    handles = []
    for name, module in model.named_modules():
        if is_weight_layer(module, pq=False):
            def hook(_mod, args, out, name=name):
                shapes.setdefault(name, (tuple(args[0].shape[1:]), tuple(out.shape[1:])))
            handles.append(module.register_forward_hook(hook))
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
        ``ebops/<layer>`` (every PQ layer: dense, conv, pool, norm, activation),
        ``params/total``, ``params/nonzero``, ``params/<layer>/total``,
        ``params/<layer>/nonzero``, ``size/bits``.
    """
    plain_shapes = _forward_shapes(model, example_input)
    views = weight_layers(model)
    out: dict[str, float] = dict(sparsity_metrics(model, views))
    wbits_sum = wbits_n = abits_sum = abits_n = 0.0
    size_bits = 0.0
    layer_names = {v.name for v in views}
    for view in views:
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
        shapes = (view.module.sample_shapes if isinstance(view.module, PQModule)
                  else plain_shapes.get(view.name))
        if shapes is None:
            continue  # the layer did not run for this input
        in_bits = view.input_bits.expand(shapes[0]) if view.input_bits.dim() == 0 else \
            torch.broadcast_to(view.input_bits, shapes[0])
        out[f"bits/input/{view.name}"] = float(in_bits.float().mean())
        abits_sum += float(in_bits.float().sum())
        abits_n += in_bits.numel()
    bops_total = ebops_total = 0.0
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, PQModule):
                if module.sample_shapes is None:
                    continue
                bops, ebops = module.cost()
            else:
                costs = float_cost(module, plain_shapes[name]) if name in plain_shapes else None
                if costs is None:
                    continue
                bops, ebops = costs
            out[f"bops/{name}"] = float(bops)
            out[f"ebops/{name}"] = float(ebops)
            bops_total += float(bops)
            ebops_total += float(ebops)
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


def epoch_metrics(model: nn.Module) -> dict[str, float]:
    """Cheap per-epoch figures, no extra forward: global sparsity, mean kept-weight bits, and
    EBOPs for the shapes of the last forward."""
    views = weight_layers(model)
    out = {"sparsity/global": sparsity_metrics(model, views)["sparsity/global"]}
    bits_sum = kept_n = 0.0
    for view in views:
        kept = view.weight != 0
        bits_sum += float(view.weight_bits.expand_as(view.weight)[kept].sum())
        kept_n += int(kept.sum())
    out["bits/weight/mean"] = bits_sum / kept_n if kept_n else 0.0
    ebops = 0.0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, PQModule) and module.sample_shapes is not None:
                ebops += float(module.cost()[1])
    out["ebops/total"] = ebops
    return out
