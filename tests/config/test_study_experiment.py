"""A study preset names the MLflow experiment its runs go to (tracking composes before it)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("preset", ["pdp_sparsity", "wanda_sparsity", "hgq_beta"])
def test_study_preset_sets_the_experiment(compose, preset):
    cfg = compose([f"finetuning={preset}"])
    assert cfg.tracking.experiment_name == preset == cfg.finetuning.experiment_name
    assert compose([f"finetuning={preset}", "tracking.experiment_name=mine"]) \
        .tracking.experiment_name == "mine"
    assert compose([f"finetuning={preset}", "tracking=none"]).tracking._target_.endswith(
        "NullTracker")


def test_plain_runs_keep_the_default_experiment(compose):
    assert compose([]).tracking.experiment_name == "pquant"
