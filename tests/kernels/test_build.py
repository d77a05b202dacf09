"""Building the kernels between processes: a killed build, concurrent builds, no compiler, a
remembered failure, and no build where the kernels cannot be used (real subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pquant import add_compression_layers, kernels, load_config
from pquant.kernels import build
from pquant.models.mlp import mlp
from pquant.training.loop import train_model
from tests.conftest import FAST
from tests.kernels.test_fused import outer_off

ROOT = Path(__file__).resolve().parents[2]
#: a generous bound on a tiny run that never waits for a build (it takes seconds)
RUN_BOUND_S = 300


def _env(ext_dir: Path, **extra) -> dict:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", TORCH_EXTENSIONS_DIR=str(ext_dir),
               PYTHONPATH=str(ROOT))
    for key in ("PQUANT_KERNELS", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    env.update(extra)
    return env


def _pquant(env: dict, cwd: Path, *args: str, timeout: float = RUN_BOUND_S):
    return subprocess.run([sys.executable, "-m", "pquant", *FAST, "training.epochs=2", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _kernel_lines(done) -> list[str]:
    return [line for line in (done.stdout + done.stderr).splitlines()
            if "kernels" in line and line.startswith("pquant:")]


def _report(cwd: Path) -> dict:
    (report,) = (cwd / "outputs" / "runs").rglob("report.json")
    return json.loads(report.read_text())


def _counting_compiler(tmp_path: Path) -> Path:
    """A "compiler" that fails and counts its calls (one line per call in ``calls``)."""
    script = tmp_path / "cxx"
    script.write_text(f"#!/bin/sh\necho called >> {tmp_path / 'calls'}\nexit 1\n")
    script.chmod(0o755)
    return script


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """An empty kernel cache for this process too (kernels.* look there)."""
    ext = tmp_path / "ext"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(ext))
    monkeypatch.setattr(kernels, "_built", None)
    kernels.reset()
    yield ext
    monkeypatch.undo()
    kernels.reset()


def _stop_builder(paths: build.Paths) -> None:
    """End a background build this test started (found by its lock), if one still runs."""
    lock = build.BuildLock(paths)
    if lock.busy():
        pid = int(paths.lock.read_text().split()[0])
        os.killpg(pid, signal.SIGKILL)


@pytest.mark.slow
def test_no_compiler_one_line_torch_path_and_no_retry(tmp_path, cache):
    cxx = _counting_compiler(tmp_path)
    env = _env(cache, CXX=str(cxx), CC="false")
    for _ in range(2):
        done = _pquant(env, tmp_path)
        assert done.returncode == 0, done.stderr
        lines = _kernel_lines(done)
        assert len(lines) == 1, lines
        assert "fused CPU kernels unavailable (no working C++ compiler" in lines[0]
        assert "python -m pquant.kernels" in lines[0]
    # the failure was remembered: the compiler was tried once, not by the second run
    assert (tmp_path / "calls").read_text().count("called") == 1
    for report in (tmp_path / "outputs" / "runs").rglob("report.json"):
        assert json.loads(report.read_text())["kernels"] == "torch"
    # python -m pquant.kernels retries (and fails again, clearly)
    done = subprocess.run([sys.executable, "-m", "pquant.kernels"], env=env, capture_output=True,
                          text=True, timeout=RUN_BOUND_S)
    assert done.returncode == 1 and "fused CPU kernels: unavailable" in done.stdout
    assert (tmp_path / "calls").read_text().count("called") >= 2


def test_float64_and_cuda_never_build(tmp_path, cache, monkeypatch):
    cxx = _counting_compiler(tmp_path)
    monkeypatch.setenv("CXX", str(cxx))
    for setting in ("auto", "on"):
        monkeypatch.setenv("PQUANT_KERNELS", setting)
        assert kernels.prepare(torch.device("cuda"), torch.float32) == "torch"
        assert kernels.prepare(torch.device("cuda:1"), torch.float32) == "torch"
        assert kernels.prepare(torch.device("cpu"), torch.float64) == "torch"
        assert kernels.get() is None
        kernels.reset()  # a library user: no prepare(), float64 layers ask nothing
        for quantization in ("fixed", "hgq"):
            cfg = load_config([*FAST, "pruning=pdp", f"quantization={quantization}",
                               "training.epochs=2"])
            torch.manual_seed(0)
            model = add_compression_layers(mlp(8, 3, (16, 8), "relu").double(), cfg)
            x = torch.randn(64, 8, dtype=torch.float64)
            batches = [(x[:32], torch.randint(0, 3, (32,))), (x[32:], torch.randint(0, 3, (32,)))]
            train_model(model, cfg, batches, batches[:1], progress=False)
        assert not kernels._loaded
    assert not (tmp_path / "calls").exists()
    assert not cache.exists() or not any(cache.rglob("*"))


@pytest.mark.slow
def test_killed_build_never_blocks_later_runs(tmp_path, cache):
    if outer_off():
        pytest.skip("PQUANT_KERNELS=off pass")
    env = _env(cache)
    paths = build.Paths()
    first = subprocess.Popen([sys.executable, "-m", "pquant.kernels"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not any(paths.dir.glob("tmp-*/build.ninja")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert any(paths.dir.glob("tmp-*/build.ninja")), "the build never started"
        time.sleep(3)  # compiling now
        assert first.poll() is None
        os.killpg(first.pid, signal.SIGKILL)  # as Ctrl-C, an OOM kill or scancel would
        first.wait()
        assert paths.lock.exists() and not paths.so.exists()  # left behind, as torch's lock was

        start = time.monotonic()
        done = _pquant(env, tmp_path)  # never waits: torch path, building in the background
        assert done.returncode == 0, done.stderr
        lines = _kernel_lines(done)
        assert len(lines) == 1 and "not built yet: this run uses the torch path" in lines[0]
        assert _report(tmp_path)["kernels"] == "torch"
        assert time.monotonic() - start < RUN_BOUND_S

        deadline = time.monotonic() + 900  # the background build finishes for later runs
        while (not paths.so.exists() or build.BuildLock(paths).busy()) \
                and time.monotonic() < deadline:
            time.sleep(1)
        assert paths.so.exists(), paths.log.read_text()
        assert not list(paths.dir.glob("tmp-*"))  # the killed build's folder was cleaned up
        for old in (tmp_path / "outputs").iterdir():
            os.rename(old, tmp_path / f"old-{old.name}")
        done = _pquant(env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert _kernel_lines(done) == []
        assert _report(tmp_path)["kernels"] == "fused"
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        _stop_builder(paths)


@pytest.mark.slow
def test_two_builds_at_once_on_an_empty_cache_both_finish(tmp_path, cache):
    if outer_off():
        pytest.skip("PQUANT_KERNELS=off pass")
    env = _env(cache)
    procs = [subprocess.Popen([sys.executable, "-m", "pquant.kernels"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=build.WAIT_S + 300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.startswith("fused CPU kernels: on"), (out, err)
    waited = [err for _, err in outs if "waiting for the kernel build of process" in err]
    assert len(waited) == 1  # one built, the other waited for it (and said so) and loaded it
