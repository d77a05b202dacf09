"""``python -m pquant [overrides]`` -- one run, or a sweep with ``-m``."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from pquant.config.compose import CONF_DIR
from pquant.config.store import register_configs


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> dict:
    """One run; returns its report (sweepers read their objectives from it)."""
    from pquant.runner import run

    return run(cfg)


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
    register_configs()
    overrides = _plain_overrides()
    if overrides:
        from pquant.config.cli_check import unknown_key_message

        message = unknown_key_message(overrides)
        if message:
            sys.stderr.write(message + "\n")
            sys.exit(2)
    main()


def _plain_overrides():
    from pquant.config.cli_check import plain_overrides

    return plain_overrides(sys.argv[1:])


if __name__ == "__main__":
    cli()
