"""Models and inputs shared by the export tests."""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from torch import nn

import pquant
from pquant.nn.dense import PQDense
from pquant.quant.hgq import HGQQuantizer
from pquant.quant.modes import RoundMode
from pquant.quant.quantizer import FixedPointQuantizer

ROUND_MODES = [m.name for m in RoundMode]


def built_model(overrides: list[str], n_in: int = 64, n_out: int = 10, seed: int = 0,
                jitter_hgq: bool = True) -> nn.Module:
    """A finalised model from the config overrides, with BN statistics and (HGQ) varied bits."""
    cfg = pquant.load_config(overrides)
    torch.manual_seed(seed)
    model = instantiate(cfg.model, input_size=n_in, output_size=n_out)
    model = pquant.add_compression_layers(model, cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, HGQQuantizer) and jitter_hgq:
                m.f.add_(torch.randint(-2, 3, m.f.shape).float())
                if m.learn_i:
                    m.i.add_(torch.randint(-1, 2, m.i.shape).float())
        model.train()
        model(torch.randn(256, n_in) * 2)  # batch-norm statistics
    model.eval()
    return pquant.finalize(model)


def edge_inputs(n_features: int, lo: float = -10.0, hi: float = 10.0, step: float = 2.0**-6,
                n: int = 64, seed: int = 1) -> torch.Tensor:
    """Inputs on a fine grid: exact ties of 4- and 5-fractional-bit quantizers, values just
    inside and outside the 8-bit ranges (+-8, 7.9375, 15.96875), and random ones."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.arange(lo, hi + step, step)
    edges = torch.tensor([-8.0, -8.03125, -7.96875, 7.9375, 7.96875, 8.0, 15.96875, 16.0,
                          -16.0, 0.03125, -0.03125, 0.09375, -0.09375, 0.0])
    rows = [grid[torch.randint(len(grid), (n, n_features), generator=g)]]
    rows.append(edges[torch.randint(len(edges), (n, n_features), generator=g)])
    rows.append(torch.randn(n, n_features, generator=g) * 4)
    return torch.cat(rows)


def modes_chain(round_modes: list[str], overflows: list[str], width: int = 6) -> nn.Sequential:
    """Square PQDense layers, weights 1.5*I / 0.5*I alternating (ties and growth), each with an
    output quantizer of the next (round, overflow) mode -- one model covers every mode."""
    layers = []
    for n, (rnd, ovf) in enumerate(zip(round_modes, overflows)):
        q_in = FixedPointQuantizer(1, 3, 4, "RND", "SAT") if n == 0 else None
        layer = PQDense(width, width, input_quantizer=q_in,
                        output_quantizer=FixedPointQuantizer(1, 3, 4, rnd, ovf))
        with torch.no_grad():
            layer.weight.copy_(torch.eye(width) * (1.5 if n % 2 == 0 else 0.5))
            layer.bias.copy_((torch.arange(width) - width // 2) * 2.0**-5)
        layers.append(layer)
    return pquant.finalize(nn.Sequential(*layers).eval())
