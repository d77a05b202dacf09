"""pquant as a library: compose a config, convert a plain torch model, train it, report.

Run: ``python examples/library_use.py [overrides]``, e.g. ``training.epochs=2`` for a quick look.
"""

import logging
import sys

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pquant import add_compression_layers, compression_report, load_config, train_model
from pquant.quant.fixed_point import quantize

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
torch.manual_seed(0)

# data: scikit-learn's 8x8 digits, standardised, as ordinary torch DataLoaders
x, y = load_digits(return_X_y=True)
x = torch.tensor((x - x.mean(0)) / (x.std(0) + 1e-6), dtype=torch.float32)
y = torch.tensor(y)
order = torch.randperm(len(x))
train, val = order[:1400], order[1400:]
train_loader = DataLoader(TensorDataset(x[train], y[train]), batch_size=64, shuffle=True)
val_loader = DataLoader(TensorDataset(x[val], y[val]), batch_size=512)

# any torch model: supported layers are swapped for compressed ones
torch_model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                            nn.Linear(32, 10))

cfg = load_config(["pruning.sparsity=0.9", "training.epochs=100", *sys.argv[1:]])  # as the CLI
model = add_compression_layers(torch_model, cfg)  # a converted copy; inplace=True to modify
result = train_model(model, cfg, train_loader, val_loader)
report = compression_report(model, x[:1])  # flat dict: sparsity/..., bits/..., ebops/...
y_q = quantize(torch.tensor([0.3, -1.7, 9.0]), k=1, i=3, f=4, round_mode="RND",
               overflow_mode="SAT", training=False)  # the pure fixed-point op

print(f"val accuracy {result.history[-1]['val/accuracy']:.3f}, "
      f"sparsity {report['sparsity/global']:.3f}, EBOPs {report['ebops/total']:.0f}, "
      f"quantize([0.3, -1.7, 9.0]) = {y_q.tolist()}")
