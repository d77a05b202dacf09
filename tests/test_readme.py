"""The README, executed: the Library-use program, the error examples (exact output), and the Run
and sweep sections' commands typed top to bottom in a fresh directory (short epochs appended)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

#: everything here runs in subprocesses pinned to the torch path (PQUANT_KERNELS=off), so it is
#: the same work on both CI passes: the pass with the kernels leaves it to the torch-path pass
pytestmark = pytest.mark.torch_path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

#: appended to every ``python -m pquant`` command (later overrides win)
SHORT = ["training.epochs=2", "training.pretraining_epochs=1", "training.fine_tuning_epochs=0"]
#: appended to sweeps with the Optuna sweeper
FEW_TRIALS = ["hydra.sweeper.n_trials=2"]


def section(title: str, level: int = 2) -> str:
    """The README text under ``title`` up to the next heading of the same or a higher level."""
    lines = README.splitlines(keepends=True)
    start = lines.index(f"{'#' * level} {title}\n") + 1
    fenced = False
    for end in range(start, len(lines)):
        fenced ^= lines[end].startswith("```")
        if not fenced and re.match("#{1," + str(level) + "} ", lines[end]):
            return "".join(lines[start:end])
    return "".join(lines[start:])


def blocks(text: str, lang: str = "bash") -> list[str]:
    return re.findall("```" + lang + r"\n(.*?)```", text, re.S)


def commands(block: str) -> list[list[str]]:
    """Shell commands of a block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def _env():
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off")
    for name in ("HYDRA_FULL_ERROR", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    return env


def _python(argv: list[str]) -> list[str]:
    assert argv[0] == "python", argv
    return [sys.executable, *argv[1:]]


# ----------------------------------------------------------------------------- library use
def test_library_use_snippet_is_the_example_program():
    snippet = blocks(section("Library use"), "python")[0]  # (then the load_run one-liner)
    assert snippet == (ROOT / "examples" / "library_use.py").read_text()


def test_library_use_example_runs_and_logs_progress_without_a_terminal(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "library_use.py"),
                             "training.epochs=2", "training.pretraining_epochs=1"],
                            cwd=tmp_path, capture_output=True, text=True, env=_env(),
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert "val accuracy" in result.stdout
    assert "quantize([0.3, -1.7, 9.0]) = [0.3125, -1.6875, 7.9375]" in result.stdout
    for line in ("INFO pretraining epoch 1/1  loss", "INFO training epoch 1/2  loss",
                 "INFO training epoch 2/2  loss"):
        assert line in result.stderr, result.stderr


# ----------------------------------------------------------------------------- errors
def error_examples() -> list[tuple[str, str]]:
    """``($ command, expected output)`` pairs of the README's error examples."""
    text = section("Configuration")
    block = re.search(r"Bad input stops.*?```\n(.*?)```", text, re.S).group(1)
    pairs, current = [], None
    for line in block.splitlines():
        if line.startswith("$ "):
            current = [line[2:], []]
            pairs.append(current)
        else:
            current[1].append(line)
    return [(cmd, "\n".join(out)) for cmd, out in pairs]


def test_error_examples_match_real_output(tmp_path):
    examples = error_examples()
    assert len(examples) >= 4 and examples[-1][0] == "echo $?"
    last_rc = None
    for command, expected in examples:
        if command == "echo $?":
            assert str(last_rc) == expected
            continue
        result = subprocess.run(_python(shlex.split(command)), cwd=tmp_path,
                                capture_output=True, text=True, env=_env(), timeout=300)
        assert result.stdout == ""
        assert result.stderr == expected + "\n", (command, result.stderr)
        assert result.returncode == 2, command
        last_rc = result.returncode
    from tests.config.test_cli_errors import mlflow_run_count

    assert mlflow_run_count(tmp_path / "outputs" / "mlflow.db") == 0  # no run left behind


# ----------------------------------------------------------------------------- run and sweep
def readme_commands() -> list[list[str]]:
    """The Run section's and the sweep section's commands (not the cluster subsection, which
    needs launchers, a database server and several nodes), in README order."""
    found = []
    for title in ("Run", "Hyper-parameter search and comparison"):
        text = section(title)
        text = text.split("### Parallel and cluster runs")[0]
        for block in blocks(text):
            found += commands(block)
    return found


def test_readme_commands_are_found():
    cmds = [" ".join(c) for c in readme_commands()]
    assert cmds[0] == "python -m pquant"
    assert any("finetuning=pdp_sparsity" in c for c in cmds)
    assert any(c.startswith("python -m pquant.compare --experiment pdp_sparsity") for c in cmds)


@pytest.mark.slow
def test_readme_run_and_sweep_commands_in_order(tmp_path):
    """Every command exits 0 in one fresh directory. ``mlflow ui`` is a server that runs until
    stopped, so it is started and must answer instead."""
    failed = []
    for argv in readme_commands():
        if argv[:2] == ["mlflow", "ui"]:
            _check_mlflow_ui(argv, tmp_path)
            continue
        cmd = _python(argv)
        if argv[1:3] == ["-m", "pquant"]:
            cmd += SHORT
            if any(a.startswith(("hydra/sweeper=", "finetuning=")) for a in argv):
                cmd += FEW_TRIALS
        result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=_env(),
                                timeout=900)
        if result.returncode != 0:  # go on: a later command may depend on nothing it made
            failed.append((" ".join(argv), result.returncode, result.stderr[-2000:]))
    assert not failed, failed


def _check_mlflow_ui(argv, cwd):
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([*argv, "--host", "127.0.0.1", "--port", str(port)], cwd=cwd,
                              env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)  # its own group: the workers stop with it
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "mlflow ui did not answer"
                time.sleep(1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the group this test started
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
