"""data=files and data=jets from the command line (subprocesses): a tracked run, clear errors
with no MLflow run, the offline message of data=jets, the jet tagger on a local copy."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.data.make_files import JET_CLASSES, blobs, jets_csv, write

SHORT = ["training.epochs=2", "training.pretraining_epochs=1", "training.progress=false",
         "pruning.epsilon=0.5"]


def _pquant(args, cwd: Path, env_extra=None, timeout=600):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "pquant", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=timeout)


def _runs(db: Path):
    if not db.exists():
        return []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_csv_with_string_labels_trains_and_is_tracked(tmp_path):
    x, y = blobs(300, 5, 3)
    path = write("csv", tmp_path, x, [("low", "mid", "high")[i] for i in y])
    db = tmp_path / "mlflow.db"
    r = _pquant(["data=files", f"data.path={path}", *SHORT, f"tracking.uri=sqlite:///{db}"],
                tmp_path)
    assert r.returncode == 0, r.stderr
    assert "data=files" in r.stdout and "accuracy" in r.stdout
    (run,) = _runs(db)
    assert run.info.status == "FINISHED"
    assert "test/accuracy" in run.data.metrics
    (report,) = (tmp_path / "outputs" / "runs").rglob("report.json")
    assert json.loads(report.read_text())["classes"] == ["high", "low", "mid"]


@pytest.mark.parametrize("args, message", [
    (["data.path=missing.parquet"], "data.path: no such file: missing.parquet"),
    (["data.path={csv}", "data.features=[f0,nope]"], "data.features: 'nope' is not in"),
    (["data.path={csv}", "data.label=target"], "data.label: 'target' is not in"),
])
def test_bad_file_is_one_clear_line_and_no_run(tmp_path, args, message):
    x, y = blobs(60, 3, 3)
    csv = write("csv", tmp_path, x, y)
    db = tmp_path / "mlflow.db"
    r = _pquant(["data=files", *(a.format(csv=csv) for a in args), *SHORT,
                 f"tracking.uri=sqlite:///{db}"], tmp_path)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert _runs(db) == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jets_offline_says_how_to_use_a_local_copy(tmp_path):
    db = tmp_path / "mlflow.db"
    proxy = f"http://127.0.0.1:{_closed_port()}"  # nothing listens: refused at once
    r = _pquant(["data=jets", f"data.cache_dir={tmp_path / 'cache'}", *SHORT,
                 f"tracking.uri=sqlite:///{db}"], tmp_path,
                {"https_proxy": proxy, "http_proxy": proxy, "HTTPS_PROXY": proxy,
                 "HTTP_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""})
    assert r.returncode != 0
    assert "data=jets: could not download OpenML 'hls4ml_lhc_jets_hlf'" in r.stderr
    assert "python -m pquant data=jets data.path=" in r.stderr
    assert "Traceback" not in r.stderr
    assert _runs(db) == []


def test_jets_download_that_never_answers_gives_up_in_bounded_time(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    stop = threading.Event()

    def accept():  # accept connections and never answer
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    proxy = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        start = time.monotonic()
        r = _pquant(["data=jets", f"data.cache_dir={tmp_path / 'cache'}",
                     "data.download_timeout=3", *SHORT, "tracking=none"], tmp_path,
                    {"https_proxy": proxy, "http_proxy": proxy, "HTTPS_PROXY": proxy,
                     "HTTP_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""}, timeout=300)
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()
    assert r.returncode != 0
    assert held, "the download never reached the silent server"
    assert "no answer within data.download_timeout=3 s" in r.stderr
    assert elapsed < 250  # the interpreter start dominates; a hang would hit the timeout


def test_jet_tagger_trains_on_a_local_copy_of_the_table(tmp_path):
    path = jets_csv(tmp_path)
    r = _pquant(["data=jets", f"data.path={path}", "model=jet_tagger", *SHORT, "tracking=none",
                 "training.optimizer.lr=0.01"],
                tmp_path)
    assert r.returncode == 0, r.stderr
    assert "data=jets / model=jet_tagger" in r.stdout
    (report,) = (tmp_path / "outputs" / "runs").rglob("report.json")
    rep = json.loads(report.read_text())
    assert rep["classes"] == JET_CLASSES
    # 16-64-32-32-5: (16*64+64) + (64*32+32) + (32*32+32) + (32*5+5)
    assert rep["params/total"] == 4389
    assert rep["test/accuracy"] > 0.5
