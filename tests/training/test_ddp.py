"""Data-parallel training under torchrun: 2 CPU processes (gloo) train the model one process
trains on the same global batches.

Each comparison runs ``python -m pquant <overrides>`` and ``torchrun --nproc_per_node=2 -m pquant
<same overrides>`` (as ``python -m torch.distributed.run``, on a free 127.0.0.1 port) as real
subprocesses. Both see the same global batches: every rank draws the one-process permutation
and keeps rows ``rank::2`` of each global batch of ``training.batch_size`` (see
:class:`pquant.distributed.ShardedLoader`), so the union of the two shards of a step is the
one-process batch. The final weights then agree up to float reduction order, and masks,
formats and every report value exactly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from pquant import distributed
from pquant.data.loader import TensorLoader
from pquant.distributed import ShardedLoader, World, check_batches

SHORT = ["training.pretraining_epochs=1", "training.epochs=2", "training.fine_tuning_epochs=1",
         "training.progress=false"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, PQUANT_KERNELS="off", MLFLOW_DISABLE_TELEMETRY="true",
               OMP_NUM_THREADS="1", TMPDIR=str(tmp))
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _pquant(cwd: Path, overrides: list[str], nproc: int = 1) -> subprocess.CompletedProcess:
    tmp = cwd / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                     "--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
    return subprocess.run([*launcher, "-m", "pquant", *overrides], cwd=cwd, env=_env(tmp),
                          capture_output=True, text=True, timeout=300)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _run_dir(cwd: Path) -> Path:
    """The one run directory a command created under ``cwd/outputs/runs``."""
    dirs = [p for p in (cwd / "outputs" / "runs").glob("*/*") if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def _assert_same_model(one: Path, two: Path) -> None:
    r1, r2 = (json.loads((d / "report.json").read_text()) for d in (one, two))
    assert r1.keys() == r2.keys()
    for key in r1:  # accuracies, sparsities, bits, EBOPs, warnings: exactly the same
        if key.endswith("/loss"):  # (sums of float losses)
            assert r1[key] == pytest.approx(r2[key], rel=1e-6), key
        else:
            assert r1[key] == r2[key], key
    for name in ("model.pt", "model_final.pt"):
        s1, s2 = (torch.load(d / name) for d in (one, two))
        assert s1.keys() == s2.keys()
        for key in s1:
            if "mask" in key or not s1[key].is_floating_point() or name == "model_final.pt":
                # masks, counters, formats and the finalised (quantized) model: exact
                torch.testing.assert_close(s1[key], s2[key], rtol=0, atol=0, msg=key)
            else:  # trained floats: up to the order of the gradient sums
                torch.testing.assert_close(s1[key], s2[key], rtol=1e-4, atol=1e-5, msg=key)


def _assert_target_reached(run: Path, target: float) -> None:
    report = json.loads((run / "report.json").read_text())
    assert abs(report["sparsity/global"] - target) <= 0.01, report
    assert not any("did not reach" in w for w in report["warnings"])


def _mlflow_runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids)


# ----------------------------------------------------------------------------- in process
def test_single_process_is_not_distributed():
    """Without torchrun nothing is set up and every helper is a no-op."""
    assert distributed.env_world() == World() or "WORLD_SIZE" in os.environ
    assert distributed.world() == World() and distributed.is_rank0()
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_(t, "sum") is t and t.tolist() == [1.0, 2.0]
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    assert distributed.average_gradients([p], stop_flag=True) is True
    assert p.grad.tolist() == [2.0, 2.0, 2.0]
    assert distributed.divergence(torch.nn.Linear(2, 2)) == 0.0


def test_env_world(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    w = distributed.env_world()
    assert (w.rank, w.size, w.local_rank, w.distributed, w.rank0) == (3, 4, 1, True, False)
    assert distributed.device_for(torch.device("cuda"), w) == torch.device("cuda", 1)
    assert distributed.device_for(torch.device("cpu"), w) == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.env_world() == World()


def test_shards_make_up_the_global_batches():
    """The shards of every step, put together, are the one-process batch (same order of steps,
    same global batch sizes, the uneven last batch included)."""
    x = torch.arange(54.0).reshape(27, 2)
    y = torch.arange(27)
    one = list(TensorLoader(x, y, 8, shuffle=True, seed=3))
    shards = [list(ShardedLoader(TensorLoader(x, y, 8, shuffle=True, seed=3), World(r, 2, r)))
              for r in range(2)]
    assert len(one) == len(shards[0]) == len(shards[1]) == 4
    for step, (_, yb) in enumerate(one):
        union = torch.cat([shards[0][step][1], shards[1][step][1]])
        assert sorted(union.tolist()) == sorted(yb.tolist())
        assert len(shards[0][step][1]) - len(shards[1][step][1]) in (0, 1)
    too_small = ShardedLoader(TensorLoader(x[:25], y[:25], 8), World(0, 2, 0))  # last batch: 1
    with pytest.raises(RuntimeError, match="global batch of 1 sample"):
        list(too_small)


def test_batch_checks():
    w = World(0, 2, 0)
    assert check_batches(1257, 64, World()) is None
    assert check_batches(1257, 64, w) is None
    message = check_batches(1257, 33, w)
    assert message.startswith("training.batch_size must be divisible by the number of torchrun "
                              "processes (2)") and "got 33" in message
    assert "last global batch of an epoch has 1 sample" in check_batches(1281, 64, w)


# ----------------------------------------------------------------------------- torchrun
@pytest.mark.slow
def test_pdp_fixed_two_processes_equal_one(tmp_path):
    """Default pruning (PDP) and fixed-point quantization, tracked in MLflow: the same model and
    report; rank 0 alone makes the MLflow run and the run directory (Hydra's included).

    ``pruning.temperature=0.01``: PDP's default soft mask (temperature 1e-5) has a slope of 1e5
    at the threshold, so float-order differences of 1e-7 in the weights next to the threshold
    grow into different keep/prune decisions within a few epochs -- as they would between two
    machines with different BLAS kernels. With a softer mask the comparison is exact."""
    overrides = ["training.pretraining_epochs=1", "training.epochs=3",
                 "training.fine_tuning_epochs=1", "training.progress=false",
                 "pruning.epsilon=0.34", "pruning.sparsity=0.5", "pruning.temperature=0.01"]
    runs = {}
    for nproc in (1, 2):
        cwd = tmp_path / f"p{nproc}"
        cwd.mkdir()
        uri = f"sqlite:///{cwd / 'mlflow.db'}"
        proc = _ok(_pquant(cwd, [*overrides, f"tracking.uri={uri}"], nproc))
        runs[nproc] = _run_dir(cwd)
        assert (runs[nproc] / ".hydra" / "config.yaml").exists()
        assert proc.stdout.count("pquant summary") == 1
        mlflow_runs = _mlflow_runs(uri)
        assert len(mlflow_runs) == 1 and mlflow_runs[0].info.status == "FINISHED"
        assert not list((cwd / "tmp").glob("pquant-rank*"))  # rank 1's scratch run dir: gone
        assert "differ after training" not in proc.stderr
    _assert_same_model(runs[1], runs[2])
    _assert_target_reached(runs[2], 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    # Wanda's input norms all-reduced; HGQ's EBOPs/width loss on every rank
    ["pruning=wanda", "pruning.t_start_collecting_batch=2", "pruning.t_delta=5",
     "pruning.sparsity=0.7", "quantization=hgq"],
    # dynamic data ranges (max over ranks) and activation-pruning rates (counts summed)
    ["pruning=activation_pruning", "pruning.t_start_collecting_batch=2", "pruning.t_delta=5",
     "quantization.dynamic_data_quantization=true"],
], ids=["wanda-hgq", "activation-dynamic"])
def test_data_dependent_statistics_two_processes_equal_one(tmp_path, overrides):
    overrides = [*SHORT, "tracking=none", *overrides]
    runs = {}
    for nproc in (1, 2):
        runs[nproc] = tmp_path / f"run{nproc}"
        proc = _ok(_pquant(tmp_path, [*overrides, f"hydra.run.dir={runs[nproc]}"], nproc))
        assert "differ after training" not in proc.stderr
    _assert_same_model(runs[1], runs[2])
    if "pruning=wanda" in overrides:
        _assert_target_reached(runs[2], 0.7)


@pytest.mark.slow
def test_bad_combination_is_refused(tmp_path):
    """A global batch that does not split over the processes: one clear line, no MLflow run,
    no run directory."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = _pquant(tmp_path, [*SHORT, "training.batch_size=33", f"tracking.uri={uri}"], 2)
    assert proc.returncode != 0
    line = ("training.batch_size must be divisible by the number of torchrun processes (2) -- "
            "each takes batch_size / 2 samples of every global batch; got 33")
    assert proc.stderr.count(line) == 1, proc.stderr[-3000:]
    assert "pquant/runner.py" not in proc.stderr  # no traceback of ours
    assert not (tmp_path / "outputs" / "runs").exists() or not any(
        (tmp_path / "outputs" / "runs").glob("*/*/report.json"))
    assert not (tmp_path / "mlflow.db").exists() or _mlflow_runs(uri) == []


def test_multirun_refused_under_torchrun(monkeypatch, capsys):
    from pquant import __main__ as cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(sys, "argv", ["pquant", "-m", "pruning=pdp,wanda"])
    with pytest.raises(SystemExit) as exc:
        cli._torchrun_overrides()
    assert exc.value.code == cli.CONFIG_ERROR_EXIT
    assert capsys.readouterr().err.startswith("-m/--multirun is not supported under torchrun "
                                              "(WORLD_SIZE=2)")


def test_other_ranks_write_no_hydra_output(monkeypatch, tmp_path):
    """Rank 1 runs Hydra without an output subfolder or log file, in a scratch run dir (unless
    hydra.run.dir is given: then every rank agrees on it)."""
    from pquant import __main__ as cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["pquant", "pruning=wanda"])
    scratch = cli._torchrun_overrides()
    assert scratch is not None and Path(scratch).parent == tmp_path and Path(scratch).is_dir()
    assert sys.argv[2:] == ["hydra.output_subdir=null", "hydra/job_logging=disabled",
                            f"hydra.run.dir={scratch}"]
    monkeypatch.setattr(sys, "argv", ["pquant", "hydra.run.dir=/x"])
    assert cli._torchrun_overrides() is None
    assert sys.argv[2:] == ["hydra.output_subdir=null", "hydra/job_logging=disabled"]
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(sys, "argv", ["pquant"])
    assert cli._torchrun_overrides() is None and sys.argv == ["pquant"]
