"""The layer registry: one entry per torch type, and a new layer type added in one user file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from torch import nn

from pquant.nn.registry import Role, converted_types, entries, entry_for, entry_for_type

#: A user's file: a PQ max-pooling layer, registered for nn.MaxPool1d, and a model builder.
TOY_LAYER = '''
"""A toy PQ layer (max pooling between two quantizers) and a model that uses it."""
from collections import OrderedDict

from torch import nn

from pquant.nn.base import PQModule
from pquant.nn.ebops import pool_cost
from pquant.nn.registry import register_layer


@register_layer(nn.MaxPool1d, grid=True)
class PQMaxPool1d(PQModule, nn.MaxPool1d):
    def __init__(self, kernel_size, stride=None, *, input_quantizer=None,
                 output_quantizer=None):
        nn.MaxPool1d.__init__(self, kernel_size, stride)
        self._init_io(input_quantizer, output_quantizer)

    @classmethod
    def from_torch(cls, layer, **quantizers):
        return cls(layer.kernel_size, layer.stride, **quantizers)

    def forward(self, x):
        return self._quantize_out(x, nn.MaxPool1d.forward(self, self._quantize_in(x)))

    def cost(self, for_loss=False):
        shapes = self.sample_shapes
        if shapes is None:
            return super().cost(for_loss)
        (channels, _), (_, length) = shapes
        ebops = pool_cost(self.input_bits(for_loss), channels, length, self.kernel_size - 1)
        return ebops, ebops


def build(input_size, output_size, channels=4):
    return nn.Sequential(OrderedDict(
        unflatten=nn.Unflatten(1, (1, input_size)),
        conv=nn.Conv1d(1, channels, 3, padding=1),
        act=nn.ReLU(),
        pool=nn.MaxPool1d(2),
        flatten=nn.Flatten(),
        out=nn.Linear(channels * (input_size // 2), output_size),
    ))
'''


def test_every_converted_type_has_one_complete_entry():
    for torch_type in converted_types():
        entry = entry_for_type(torch_type)
        assert entry.pq_class is not None and entry.build is not None
        assert entry.export_rule is entry.pq_class.export_body
    weight = {e.torch_type for e in entries() if e.role is Role.weight}
    assert {nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d} <= weight
    assert entry_for_type(nn.Flatten).value_preserving and entry_for_type(nn.Flatten).grid
    assert entry_for_type(nn.Dropout).keeps_features


def test_a_pq_layer_is_described_by_its_own_entry():
    from pquant.nn.dense import PQDense

    layer = PQDense(4, 2)
    assert entry_for(layer).pq_class is PQDense and entry_for(layer).role is Role.weight

    class MyLinear(nn.Linear):  # an unconverted subclass still counts as a weight layer
        pass

    assert entry_for(MyLinear(2, 2)).role is Role.weight
    assert entry_for_type(MyLinear) is None  # (and is not converted: exact type)


@pytest.mark.slow
def test_a_toy_layer_in_one_user_file_is_trained_and_reported(tmp_path):
    (tmp_path / "toylayer.py").write_text(TOY_LAYER)
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "toy.yaml").write_text(textwrap.dedent("""\
        _target_: toylayer.build
        channels: 4
        """))
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off")
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(
        [sys.executable, "-m", "pquant", "model=toy", "data=synthetic", "training.epochs=2",
         "training.pretraining_epochs=1", "training.fine_tuning_epochs=1",
         "training.progress=false", "tracking=none", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["conversion"]["converted"]["pool"] == "MaxPool1d -> PQMaxPool1d"
    assert "pool" not in report["conversion"]["unsupported"]
    # the metrics count it: per-layer cost in the report and in the totals
    assert report["ebops/pool"] > 0 and report["bops/pool"] == report["ebops/pool"]
    parts = sum(v for k, v in report.items() if k.startswith("ebops/") and k != "ebops/total")
    assert report["ebops/total"] == pytest.approx(parts)
    # its input quantizer is per feature along the conv's channels (4 of them), and the pooled
    # values (already on the ReLU's grid) are not quantized again when the format covers them
    assert "sparsity/conv" in report and "bits/input/out" in report
    rows = [line.split() for line in result.stdout.splitlines()]
    pool_row = next(r for r in rows if r and r[0] == "pool")
    assert pool_row[1:4] == ["-", "-", "-"]  # no weights: no sparsity, weight or input bits
    assert any(r and r[0] == "conv" for r in rows)
    assert not any("dataflow" in line and "pool" in line for line in result.stderr.splitlines())


def test_nn_does_not_import_metrics():
    """``nn`` sits below ``metrics`` (the EBOPs formulas live in ``pquant.nn.ebops``)."""
    import ast
    from pathlib import Path

    import pquant.nn

    for path in Path(pquant.nn.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith("pquant.metrics") for n in names), path.name
