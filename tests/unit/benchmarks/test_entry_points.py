"""The harnesses' own entry points start (what `make bench` runs is not run by the tests)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["benchmarks.bench", "benchmarks.model_bench"])
def test_the_benchmarks_parse_their_arguments(module: str) -> None:
    p = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert "--artifacts" in p.stdout and "--json" in p.stdout
