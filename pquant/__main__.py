"""``python -m pquant [overrides]`` -- one run, or a sweep with ``-m``."""

from __future__ import annotations

import os
import sys

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
    main()


def _plain_overrides():
    from pquant.config.cli_check import plain_overrides

    return plain_overrides(sys.argv[1:])


if __name__ == "__main__":
    cli()
