"""The layout rules the codebase keeps: dependencies point one way, between the packages and
between the subpackages of each, no module imports another that imports it back, the product
never imports the lab (``benchmarks/``), modules and functions stay small, and the code map in
docs/design.md names every package and module there is."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("schemas", "ipr_model", "streams")
LAB = "benchmarks"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80

# Each list runs from the bottom up: a part may import those before it, never those after it.
# Parts not listed inside a package (its __init__, errors.py) sit below all of its subpackages.
LAYERS = [
    ["schemas", "ipr_model", "streams", "benchmarks"],
    # training selects its blend by the evaluation's measures; evaluate.py trains folds to evaluate
    ["ipr_model.artifacts", "ipr_model.serving", "ipr_model.evaluation", "ipr_model.training",
     "ipr_model.evaluation.evaluate"],
    ["streams.kafka", "streams.control",
     "streams.router|streams.worker|streams.feedback|streams.gateway", "streams.cli"],
]


def sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth (imports inside functions count); for
    ``from pkg import name`` both ``pkg`` and ``pkg.name`` (a submodule, if it is one)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _rank(module: str, layer: list[str]) -> int | None:
    """The index of the part a module is under (the most specific part that names it)."""
    parts = [(len(p), i) for i, part in enumerate(layer) for p in part.split("|")
             if _under(module, p)]
    return max(parts)[1] if parts else None


def layer_violations(imports: dict[str, set[str]], layer: list[str]) -> list[str]:
    bad = []
    for module, names in imports.items():
        mine = _rank(module, layer)
        for name in names:
            theirs = _rank(name, layer)
            if mine is not None and theirs is not None and theirs > mine:
                bad.append(f"{module} imports {name}")
            # a part's peers (a|b) are apart: the router never imports the worker
            elif (mine is not None and theirs == mine and "|" in layer[mine]
                  and not any(_under(module, p) and _under(name, p)
                              for p in layer[mine].split("|"))):
                bad.append(f"{module} imports its peer {name}")
    return sorted(bad)


def module_imports(*packages: str) -> dict[str, set[str]]:
    known = {module_name(p) for p in sources(*packages)}
    return {module_name(p): {m for m in imported(p) if m in known} for p in sources(*packages)}


def circles(imports: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in imports.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(imports):
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer[0].split(".")[0])
def test_dependencies_point_one_way(layer: list[str]) -> None:
    assert layer_violations(module_imports(*PRODUCT, LAB), layer) == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    imports = module_imports(*PRODUCT, LAB)
    # a package's __init__ importing its own modules is not a circle of the code
    for module, names in imports.items():
        names -= {n for n in names if n.startswith(module + ".")}
    assert circles(imports) == []


def test_the_product_never_imports_the_lab() -> None:
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in sources(*PRODUCT) for m in imported(p)
           if _under(m, LAB)]
    assert not bad


def test_modules_and_functions_stay_small() -> None:
    too_long = []
    for p in sources(*PRODUCT, LAB) + sorted((ROOT / "tests").rglob("*.py")):
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
    bad.write_text("def f():\n    from benchmarks import demo\n")
    assert "benchmarks.demo" in imported(bad)
    layer = LAYERS[2]
    assert layer_violations({"streams.kafka.admin": {"streams.cli.main"}}, layer)
    assert layer_violations({"streams.router.agent": {"streams.worker.run"}}, layer)
    assert not layer_violations({"streams.router.agent": {"streams.router.routing"}}, layer)
    assert circles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


CODE_MAP = ROOT / "docs" / "design.md"


def code_map_entries() -> set[str]:
    """Every path the code map table of docs/design.md names: a row's first cell names a folder
    (`streams/router/`), its second the files and folders in it (`app.py`, `backends/`, ...)."""
    text = CODE_MAP.read_text().split("## Code map", 1)[1].split("\n## ", 1)[0]
    named: set[str] = set()
    for row in re.findall(r"^\| `([^`|]+/)` \|(.+)\|$", text, flags=re.M):
        folder, cell = row
        named.add(folder.rstrip("/"))
        for name in re.findall(r"`([A-Za-z0-9_]+(?:\.py|\.xml|/))`", cell):
            named.add(folder + name.rstrip("/"))
    return named


def test_the_code_map_names_every_module_and_nothing_else() -> None:
    named = code_map_entries()
    assert "streams/router/routing.py" in named  # the table is read
    real = {str(p.relative_to(ROOT)) for p in sources(*PRODUCT, LAB) if p.name != "__init__.py"}
    real |= {str(p.parent.relative_to(ROOT)) for p in sources(*PRODUCT, LAB)}
    missing = sorted(real - named)
    stale = sorted(n for n in named if not (ROOT / n).exists())
    assert (missing, stale) == ([], [])


def test_nothing_refers_to_a_folder_beside_the_repository() -> None:
    """A fresh clone runs on its own: no file reads the datasets (or anything) from beside it."""
    beside = "../" + "shared"
    files = [p for p in ROOT.rglob("*") if p.is_file() and p.suffix in
             {".py", ".md", ".toml", ".yaml", ".yml", ".txt", ".cfg", ""}
             and not {".git", ".venv", "build", "artifacts"} & set(p.relative_to(ROOT).parts)]
    assert not [str(p.relative_to(ROOT)) for p in files if beside in p.read_text(errors="ignore")]
