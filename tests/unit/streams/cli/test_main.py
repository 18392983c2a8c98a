"""The `ipr` command's service commands refuse a user's mistake in one line, before connecting."""

from __future__ import annotations

import subprocess
import sys


def ipr(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_a_worker_for_a_model_its_artifacts_do_not_have_is_refused(small_artifacts):
    p = ipr("worker", "--backend", "openai", "--model", "gpt-4o-2024-08-6",
            "--artifacts", str(small_artifacts))
    assert p.returncode == 2
    [line] = p.stderr.strip().splitlines()
    assert line.startswith("error: model(s) gpt-4o-2024-08-6 not in artifacts ")
    assert "gpt-4o-2024-08-06" in line  # what it has


def test_a_router_without_artifacts_is_refused(tmp_path):
    p = ipr("router", "--artifacts", str(tmp_path / "none"))
    assert p.returncode == 2
    assert p.stderr.strip() == f"error: {tmp_path / 'none'}: not a directory (expected an " \
                               "artifact directory)"


def test_a_bad_policy_is_refused_in_one_line_naming_the_field():
    env = {**__import__("os").environ, "IPR_KAFKA_BOOTSTRAP": "127.0.0.1:1"}  # never reached
    for args, field in [(["--budget", "1"], "budget_usd and period go together"),
                        (["--budget", "-1", "--period", "day"], "budget_usd"),
                        (["--tolerance", "1.5"], "tolerance"),
                        (["--budget", "1", "--period", "week"], "period"),
                        (["--on-exhausted", "pray"], "on_exhausted")]:
        p = ipr("policy", "set", "acme", *args, env=env)
        assert p.returncode == 2, p.stderr
        [line] = p.stderr.strip().splitlines()
        assert line.startswith("error: ") and field in line
