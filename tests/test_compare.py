"""The comparison table and plot, from a tiny MLflow store."""

from __future__ import annotations

import pytest

from pquant.compare import compare, pareto


def test_pareto_front():
    points = [(100.0, 0.9), (50.0, 0.9), (200.0, 0.95), (60.0, 0.8), (50.0, 0.85)]
    assert sorted(pareto(points)) == [1, 2]


@pytest.fixture
def store(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("cmp", artifact_location=(tmp_path / "art").as_uri())
    values = {"pdp": [(0.95, 1000.0), (0.96, 1100.0)], "wanda": [(0.93, 500.0)],
              "cs": [(0.90, 2000.0)]}
    for method, results in values.items():
        for seed, (acc, ebops) in enumerate(results):
            run = client.create_run(exp, tags={"choice.pruning": method})
            client.log_param(run.info.run_id, "seed", str(seed))
            for key, value in (("test/accuracy", acc), ("ebops/total", ebops),
                               ("sparsity/global", 0.8), ("bits/weight/mean", 8.0)):
                client.log_metric(run.info.run_id, key, value)
            client.set_terminated(run.info.run_id, "FINISHED")
    failed = client.create_run(exp, tags={"choice.pruning": "dst"})
    client.set_terminated(failed.info.run_id, "FAILED")
    return uri


def test_compare_writes_table_and_plot(store, tmp_path):
    table, image = compare("cmp", tmp_path / "out", tracking_uri=store)
    text = table.read_text()
    assert "| pruning | runs | test/accuracy" in text
    assert "| pdp | 2 | 0.9550 ± 0.0071" in text
    assert "dst" not in text  # failed runs are left out
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("|")}
    assert rows["wanda"].rstrip().endswith("yes |") and rows["pdp"].rstrip().endswith("yes |")
    assert not rows["cs"].rstrip().endswith("yes |")
    assert image.stat().st_size > 10_000
    assert image.read_bytes()[:4] == b"\x89PNG"


def test_per_run_rows(store, tmp_path):
    table, _ = compare("cmp", tmp_path / "out2", tracking_uri=store, per_run=True)
    rows = [line for line in table.read_text().splitlines() if line.startswith("| pdp")]
    assert len(rows) == 2


def test_plot_front_through_runs_and_bars_clipped(tmp_path):
    """Group means would put 'b' on the front; the runs say 'a' (one run at 0.99, 100 EBOPs)
    dominates. The std bar of 'a' (mean 0.895, std 0.134) would pass 1.0: clipped."""
    from pquant.compare import Row, clipped_error, plot

    a = Row(("a",), [{"test/accuracy": 0.99, "ebops/total": 100.0},
                     {"test/accuracy": 0.80, "ebops/total": 120.0}])
    b = Row(("b",), [{"test/accuracy": 0.92, "ebops/total": 105.0}])
    c = Row(("c",), [{"test/accuracy": 0.995, "ebops/total": 400.0}])
    drawn = plot([a, b, c], True, tmp_path / "p.png", "t")
    assert drawn["front"] == [(100.0, 0.99), (400.0, 0.995)]
    mean, below, above = drawn["bars"]["a"]
    assert mean == pytest.approx(0.895)
    assert below == pytest.approx(a.std("test/accuracy")) and mean + above == pytest.approx(1.0)
    assert drawn["bars"]["b"] == (0.92, 0.0, 0.0)
    assert clipped_error(0.02, 0.05, "val/accuracy") == pytest.approx((0.02, 0.05))
    assert clipped_error(5e3, 7e3, "ebops/total") == (7e3, 7e3)  # unbounded metric
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_table_pareto_marks_groups_with_a_front_run(tmp_path):
    from pquant.compare import Row, markdown_table

    a = Row(("a",), [{"test/accuracy": 0.99, "ebops/total": 100.0},
                     {"test/accuracy": 0.80, "ebops/total": 120.0}])
    b = Row(("b",), [{"test/accuracy": 0.92, "ebops/total": 105.0}])
    lines = markdown_table([a, b], ["pruning"]).splitlines()
    assert lines[2].rstrip().endswith("yes |") and not lines[3].rstrip().endswith("yes |")
