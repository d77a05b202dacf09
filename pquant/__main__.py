"""``python -m pquant [overrides]`` -- one run, or a sweep with ``-m``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from pquant.config.compose import CONF_DIR
from pquant.config.store import register_configs


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    from pquant.runner import run

    report = run(cfg)
    return report["val/accuracy"]


if __name__ == "__main__":
    register_configs()
    main()
