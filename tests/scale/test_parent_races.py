"""Workers of one study update its MLflow parent run at the same moment (real MLflow server on
PostgreSQL, real processes): no update may fail because another worker made the same one."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from pquant.tracking.process import ProcessId

#: one worker: joins every parent, then leaves them all at the same instants as the others
WORKER = r"""
import pathlib, sys, time
from mlflow.tracking import MlflowClient
from pquant.tracking import stale
uri, folder, parents = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3].split(",")
client = MlflowClient(tracking_uri=uri)
for run_id in parents:
    stale.join_parent(client, run_id)
(folder / f"ready-{sys.argv[4]}").touch()
while not (folder / "go").exists():
    time.sleep(0.01)
start = float((folder / "go").read_text())
for i, run_id in enumerate(parents):
    while time.time() < start + 0.4 * i:
        time.sleep(0.0005)
    stale.leave_parent(client, run_id, "FINISHED")
"""


def test_workers_leaving_together_end_the_parent_once(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    from pquant.tracking import stale

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    exp = client.create_experiment(f"races-{os.getpid()}-{time.time_ns()}")
    parents = [client.create_run(exp, tags={"pquant.kind": "sweep"}).info.run_id
               for _ in range(12)]
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, mlflow_server.uri, str(tmp_path),
                               ",".join(parents), str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    deadline = time.monotonic() + 300
    while len(list(tmp_path.glob("ready-*"))) < 4:  # every worker joined every parent
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.1)
    gone = ProcessId(ProcessId.current().host, 1, "0")  # PID 1, another start time: gone
    for run_id in parents:  # a worker of this epoch that was SIGKILLed
        epoch = client.get_run(run_id).data.tags[stale.EPOCH_TAG]
        client.set_tag(run_id, stale.worker_key(gone), f"{epoch} RUNNING {time.time():.0f}")
    (tmp_path / "go.tmp").write_text(str(time.time() + 2))
    (tmp_path / "go.tmp").rename(tmp_path / "go")  # they leave together, one parent at a time
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err
    for run_id in parents:
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert "every sweep worker of this study was gone" in run.data.tags[stale.KILLED_TAG]
