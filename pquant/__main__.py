"""``python -m pquant [overrides]`` -- one run, or a sweep with ``-m``."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import hydra
from omegaconf import DictConfig

from pquant.config.compose import CONF_DIR
from pquant.config.store import register_configs

#: exit status of ``python -m pquant`` for every configuration error (one line on stderr)
CONFIG_ERROR_EXIT = 2


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> dict:
    """One run; returns its report (sweepers read their objectives from it)."""
    from pquant.errors import ConfigError
    from pquant.runner import run

    try:
        return run(cfg)
    except ConfigError as exc:
        if _single_run() and not os.environ.get("HYDRA_FULL_ERROR"):
            _config_error(str(exc))  # one line, not Hydra's three
        raise


def _single_run() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.RUN


def _config_error(message: str) -> None:
    from pquant.distributed import env_world

    if env_world().rank0:  # (torchrun: every rank fails alike; one says why)
        sys.stderr.write(message + "\n")
    sys.exit(CONFIG_ERROR_EXIT)


def cli() -> None:
    """The command: SIGINT/SIGTERM stop it at the next batch boundary, exit status 130."""
    from pquant.training.interrupt import handle_signals

    try:
        with handle_signals():
            _cli()
    except KeyboardInterrupt as exc:  # runs and trials were ended KILLED/FAIL on the way out
        sys.stderr.write(f"pquant: {exc or 'interrupted'}; stopped (MLflow runs marked "
                         "KILLED)\n")
        sys.exit(130)


def _cli() -> None:
    from pquant.errors import ConfigError

    try:
        register_configs()  # imports the project's conf/<group>/*.py: they may be broken
    except ConfigError as exc:
        _config_error(str(exc))
    overrides = _plain_overrides()
    if overrides is not None and not os.environ.get("HYDRA_FULL_ERROR"):
        from pquant.config.cli_check import composition_error_message

        message = composition_error_message(overrides)
        if message:
            _config_error(message)
    scratch = _torchrun_overrides()
    try:
        main()
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _torchrun_overrides() -> str | None:
    """Under torchrun every rank runs this command; only rank 0 keeps Hydra's run directory
    and log file. The others get ``hydra.output_subdir=null``, Hydra's logging off (errors
    only) and, unless ``hydra.run.dir`` is given (then all ranks agree on it), a scratch run
    directory removed at exit (returned). A multirun is refused: torchrun trains one model."""
    from pquant.distributed import env_world

    world = env_world()
    if not world.distributed:
        return None
    args = sys.argv[1:]
    if any(a in ("-m", "--multirun") or a.startswith("hydra.mode=") for a in args):
        _config_error(f"-m/--multirun is not supported under torchrun (WORLD_SIZE={world.size}):"
                      f" torchrun trains one model; start sweeps with python -m pquant -m")
    if world.rank0:
        return None
    extra = ["hydra.output_subdir=null"]
    if not any(a.startswith("hydra/job_logging=") for a in args):
        extra.append("hydra/job_logging=disabled")
    scratch = None
    if not any(a.lstrip("+~").split("=", 1)[0] == "hydra.run.dir" for a in args):
        scratch = tempfile.mkdtemp(prefix=f"pquant-rank{world.rank}-")
        extra.append(f"hydra.run.dir={scratch}")
    sys.argv += extra
    return scratch


def _plain_overrides():
    from pquant.config.cli_check import plain_overrides

    return plain_overrides(sys.argv[1:])


if __name__ == "__main__":
    cli()
