"""The SLURM recipe, checked without a cluster: the submitit launcher's config is rendered by
``python -m pquant ... --cfg hydra`` and turned into the sbatch script submitit would submit,
exactly as hydra-submitit-launcher builds its executor."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                    reason="hydra-submitit-launcher is not installed (pip install -e '.[launchers]')")

#: the README's SLURM command (here with --cfg: render, do not submit)
SLURM = ["hydra/sweeper=pquant_optuna", "hydra/launcher=submitit_slurm",
         "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=60",
         "hydra.launcher.cpus_per_task=4", "hydra.launcher.gpus_per_node=1",
         "hydra.launcher.mem_gb=16", "hydra.sweeper.n_jobs=3",
         "hydra.sweeper.storage=postgresql://pquant@db-host:5432/optuna",
         "hydra.sweeper.study_name=slurm-study"]


def _render(tmp_path) -> dict:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off")
    r = subprocess.run([sys.executable, "-m", "pquant", *SLURM,
                        f"hydra.sweep.dir={tmp_path / 'sweep'}", "--cfg", "hydra", "--resolve"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)["hydra"]


def test_submitit_slurm_renders_the_expected_sbatch_script(tmp_path, monkeypatch):
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    hydra_cfg = _render(tmp_path)
    # submitit refuses to build a SLURM executor where there is no ``srun`` (a login node has
    # one): a stand-in on PATH, never run -- the script is only written
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    launcher = dict(hydra_cfg["launcher"])
    assert launcher.pop("_target_").endswith("submitit_launcher.SlurmLauncher")
    assert hydra_cfg["sweeper"]["storage"] == "postgresql://pquant@db-host:5432/optuna"
    # hydra-submitit-launcher's BaseSubmititLauncher.launch, step by step
    folder = launcher.pop("submitit_folder")
    assert folder == f"{tmp_path / 'sweep'}/.submitit/%j"
    executor = submitit.AutoExecutor(cluster="slurm", folder=folder,
                                     slurm_max_num_timeout=launcher.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v
                                  for k, v in launcher.items()})
    slurm = executor._executor
    slurm.parameters["map_count"] = 3  # map_array over one batch of n_jobs=3 trials
    script = slurm._make_submission_file_text("python -u -m submitit.core._submit X", "uid")
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for flag in ("--partition=gpu", "--time=60", "--cpus-per-task=4", "--gpus-per-node=1",
                 "--mem=16GB", "--nodes=1", "--ntasks-per-node=1", "--array=0-2%3",
                 "--signal=USR2@120", "--job-name=pquant"):
        assert f"#SBATCH {flag}" in lines, (flag, script)
    assert any(line.startswith("srun ") and "submitit.core._submit" in line for line in lines)
