"""The `ipr` command as the wheel and the image carry it: without the lab (`benchmarks/`), every
module a command imports loads, and `ipr --help` lists no lab command."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
CLI = ROOT / "streams" / "cli"
LAB_COMMANDS = {"demo", "drift", "learn", "soak", "onboard", "bench", "band", "winback"}

# No `benchmarks` package importable (as in the image), then every module the commands import.
PROBE = """
import importlib, sys
class NoLab:
    def find_spec(self, name, path=None, target=None):
        if name == "benchmarks" or name.startswith("benchmarks."):
            raise ModuleNotFoundError(f"no module named {name!r} (the lab is not installed)")
sys.meta_path.insert(0, NoLab())
for name in sys.argv[1:]:
    importlib.import_module(name)
from typer.testing import CliRunner
from streams.cli.main import app
print(CliRunner().invoke(app, ["--help"], terminal_width=200).output)
"""


def command_modules() -> list[str]:
    """Every project module the `ipr` command's files import, at any depth."""
    out: set[str] = set()
    for path in CLI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                out.add(node.module)
    return sorted(m for m in out if m.split(".")[0] in ("schemas", "ipr_model", "streams"))


def test_every_command_module_loads_without_the_lab_and_help_lists_no_lab_command() -> None:
    modules = command_modules()
    assert "streams.worker.run" in modules and "streams.router.app" in modules
    p = subprocess.run([sys.executable, "-c", PROBE, *modules], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    listed = {line.split()[1] for line in p.stdout.splitlines()
              if line.startswith("│ ") and len(line.split()) > 1}
    assert {"router", "worker", "feedback", "gateway", "train"} <= listed
    assert not listed & LAB_COMMANDS
