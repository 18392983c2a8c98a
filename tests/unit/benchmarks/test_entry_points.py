"""The lab's commands start (what the ``make`` targets run is not run by the tests): each one's
``--help``, through typer's runner, names its options, and ``python -m benchmarks --help`` lists
every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from benchmarks.cli import app

ROOT = Path(__file__).resolve().parents[3]

# Each command with options its make target, or its docs, pass.
COMMANDS = {
    "demo": ["--artifacts", "--dataset", "--tolerance", "--rate", "--report", "--gateway-share"],
    "drift": ["--artifacts", "--dataset", "--rounds", "--min-labels"],
    "learn": ["--artifacts", "--dataset", "--json"],
    "soak": ["--artifacts", "--dataset", "--minutes", "--rate", "--min-labels", "--json"],
    "onboard": ["--artifacts", "--dataset", "--out", "--live"],
    "bench": ["--artifacts", "--dataset", "--prompts", "--batch-size", "--rounds",
              "--exactly-once", "--routers", "--json"],
    "model-bench": ["--artifacts", "--dataset", "--json", "--train", "--recalibrate"],
    "scaling": ["--artifacts", "--dataset", "--json", "--plot"],
    "knn-index": ["--artifacts", "--dataset", "--rows", "--json"],
    "startup": ["--artifacts", "--dataset", "--rate", "--restarts", "--json"],
    "shadow-bench": ["--artifacts", "--dataset", "--prompts", "--batch-size", "--rounds",
                     "--json"],
    "band": ["--artifacts", "--dataset", "--json"],
    "winback": ["--artifacts", "--dataset", "--share", "--json"],
    "gateway-bench": ["--artifacts", "--dataset", "--prompts", "--rate", "--concurrency",
                      "--json"],
    "views": ["--artifacts", "--dataset", "--json"],
    "budget": ["--artifacts", "--dataset", "--rate", "--latency-s", "--routers", "--compare",
               "--json"],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_lab_command_parses_its_arguments(name: str) -> None:
    r = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for option in COMMANDS[name]:
        assert option in r.output, (name, option)


def test_the_lab_lists_its_commands() -> None:
    assert set(typer.main.get_command(app).commands) == set(COMMANDS)
    p = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], capture_output=True,
                       text=True, timeout=60, cwd=ROOT, env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    listed = p.stdout.split("Commands", 1)[1]
    assert all(f" {name} " in listed for name in COMMANDS), listed
