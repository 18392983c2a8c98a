"""The settings classes are the configuration's reference: docs/configuration.md is what the
generator makes of them now, every field has a description, and no module reads the environment
outside a settings class."""

from __future__ import annotations

import re
from pathlib import Path

from streams.cli.config_reference import SECTIONS, describe, render, variable

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"


def test_the_configuration_page_is_what_the_settings_classes_say() -> None:
    assert DOC.read_text() == render(), (
        "docs/configuration.md is out of date: run `make config-doc`")


def test_every_field_is_listed_with_a_description() -> None:
    text = render()
    for _title, _intro, cls, _base in SECTIONS:
        for name, field in cls.model_fields.items():
            var = variable(cls, name, field)
            assert f"| `{var}` |" in text, var
            assert describe(field.description, var), f"{cls.__name__}.{name}: no description"
    for var in ("IPR_ROUTER_EXPLORE_SHARE", "IPR_FEEDBACK_GRADUATE_LABELS",
                "IPR_FEEDBACK_METRICS_BIND", "IPR_DATA_DIR", "IPR_CACHE_DIR",
                "IPR_KAFKA_BOOTSTRAP", "IPR_ARTIFACTS_TOPIC"):
        assert f"| `{var}` |" in text, var


def test_the_variable_name_is_dropped_from_the_description() -> None:
    assert describe("max events (IPR_X)", "IPR_X") == "max events"
    assert describe("the version (--artifacts; IPR_X)", "IPR_X") == "the version (--artifacts)"
    assert describe("factor (IPR_X; 3 in production)", "IPR_X") == "factor (3 in production)"
    assert describe("IPR_X", "IPR_X") == ""


# Passing the environment on to a child process is not reading it; MALLOC_* are glibc's.
ALLOWED = {"env={**os.environ, **env}", '"MALLOC_ARENA_MAX" in os.environ',
           '"MALLOC_MMAP_THRESHOLD_" in os.environ'}


def test_only_settings_classes_read_the_environment() -> None:
    reads = []
    for package in ("schemas", "ipr_model", "streams", "benchmarks"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if (re.search(r"os\.environ|getenv\(|os\.environb", line)
                        and not any(a in line for a in ALLOWED)):
                    reads.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert reads == []
