"""The layout rules the codebase keeps: dependencies point one way (schemas <- ipr_model <-
streams), production code never imports a harness, and modules and functions stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "ipr_model", "streams")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth (imports inside functions count)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize(("lower", "higher"), [
    ("schemas", "ipr_model"), ("schemas", "streams"), ("ipr_model", "streams"),
])
def test_a_lower_package_never_imports_a_higher_one(lower: str, higher: str) -> None:
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in sources(lower) for m in imported(p)
           if _under(m, higher)]
    assert not bad


def test_production_code_never_imports_a_harness() -> None:
    production = [p for p in sources(*PACKAGES) if "harness" not in p.parts
                  and p.name != "cli.py"]  # the command line mounts the harness commands
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in production for m in imported(p)
           if _under(m, "streams.harness")]
    assert not bad


def test_modules_and_functions_stay_small() -> None:
    too_long = []
    for p in sources(*PACKAGES) + sorted((ROOT / "tests").rglob("*.py")):
        text = p.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{p.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not too_long


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from streams.harness import demo\n")
    assert "streams.harness" in imported(bad)


def test_nothing_refers_to_a_folder_beside_the_repository() -> None:
    """A fresh clone runs on its own: no file reads the datasets (or anything) from beside it."""
    beside = "../" + "shared"
    files = [p for p in ROOT.rglob("*") if p.is_file() and p.suffix in
             {".py", ".md", ".toml", ".yaml", ".yml", ".txt", ".cfg", ""}
             and not {".git", ".venv", "build", "artifacts"} & set(p.relative_to(ROOT).parts)]
    assert not [str(p.relative_to(ROOT)) for p in files if beside in p.read_text(errors="ignore")]
