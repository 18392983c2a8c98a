"""The configuration reference, made from the settings classes: every field's variable, default,
values and description. ``python -m streams.cli.config_reference`` prints it; ``make config-doc``
writes it to docs/configuration.md, and a unit test fails when that file is not what this prints.
"""

from __future__ import annotations

import re
import textwrap
import types
from pathlib import Path
from typing import Literal, Union, get_args, get_origin

from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from ipr_model.settings import FolderSettings, IndexSettings
from streams.feedback.settings import FeedbackSettings
from streams.gateway.settings import GatewaySettings
from streams.kafka.settings import KafkaSettings
from streams.router.settings import RouterSettings
from streams.tracing import TracingSettings
from streams.worker.settings import WorkerSettings

HEADER = """\
# Configuration

Generated from the settings classes by `python -m streams.cli.config_reference` (`make
config-doc`): edit the classes, not this page; `tests/unit/test_configuration.py` fails when the
two differ.

Every service reads its settings from the environment when it starts, never at import; an option
on the command line (`--artifacts`, `--tolerance`, `--backend`, ...) wins over its variable. Only
`IPR_` variables are read, and OpenTelemetry's standard `OTEL_*` ones for traces: Faust's own
unprefixed ones (`BROKER_URL`, ...) are not, every value it needs is passed to it. A value that
does not fit its field stops the service with one line naming the field. Lists are JSON (`["a",
"b"]`); booleans `true`/`false` (or `1`/`0`).
"""

FOOTER = """\
## Not settings

`MALLOC_ARENA_MAX` is glibc's own: the router caps its malloc arenas at 2 unless it is set
(`streams/router/app.py`, `cap_malloc_arenas`), and leaves the value to glibc.
"""

# (title, what reads it, the class, the class whose fields another section lists)
SECTIONS: list[tuple[str, str, type[BaseSettings], type[BaseSettings] | None]] = [
    ("Kafka", "Every service, `ipr policy` and the lab read these, under their `IPR_` names "
     "whatever the service's own prefix. `IPR_KAFKA_BOOTSTRAP` set: the lab (`make demo`, "
     "`make bench`, ...) uses that cluster; unset, it starts a local broker.",
     KafkaSettings, None),
    ("Router", "`ipr router`; and the Kafka settings above.", RouterSettings, KafkaSettings),
    ("Workers", "`ipr worker`; and the Kafka settings above.", WorkerSettings, KafkaSettings),
    ("Feedback service", "`ipr feedback`; and the Kafka settings above.", FeedbackSettings,
     KafkaSettings),
    ("Gateway", "`ipr gateway`, the OpenAI-compatible HTTP front door; and the Kafka settings "
     "above.", GatewaySettings, KafkaSettings),
    ("Traces", "Every service (`streams/tracing.py`): OpenTelemetry's standard variables, not "
     "`IPR_` ones. Unset, nothing is traced, and the router, the workers and the feedback "
     "service load nothing of OpenTelemetry's. The "
     "exporters read their own too (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_ZIPKIN_ENDPOINT`,"
     " `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_TRACES_SAMPLER`, ...).", TracingSettings, None),
    ("Datasets and caches", "Training, evaluation and the lab (`ipr_model`). An empty value "
     "counts as unset.", FolderSettings, None),
    ("Scoring", "Whatever loads an artifact with a kNN index: the router, the feedback service, "
     "`ipr evaluate`.", IndexSettings, None),
]

_TYPES = {int: "integer", float: "number", bool: "boolean", str: "text", Path: "path",
          SecretStr: "text (secret)"}
_BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}  # annotated_types' Ge, Gt, Le, Lt


def variable(cls: type[BaseSettings], name: str, field: FieldInfo) -> str:
    """The environment variable a field is read from: its alias, else prefix + name."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0]).upper()
    if isinstance(alias, str):
        return alias.upper()
    return (cls.model_config.get("env_prefix", "") + name).upper()


def _value(v: object) -> str:
    if isinstance(v, SecretStr):
        v = v.get_secret_value()
    if isinstance(v, bool):
        return f"`{str(v).lower()}`"
    if isinstance(v, float):
        return f"`{v:g}`"
    return f"`{v}`" if str(v) else "empty"


def default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return _value(field.default_factory())
    return "unset" if field.default is None else _value(field.default)


def values(field: FieldInfo) -> str:
    """What a field accepts: its choices, or its type and bounds."""
    ann = field.annotation
    if get_origin(ann) in (Union, types.UnionType):
        ann = next(a for a in get_args(ann) if a is not type(None))
    if get_origin(ann) is Literal:
        return ", ".join(f"`{a}`" for a in get_args(ann))
    kind = "JSON list" if get_origin(ann) is list else _TYPES.get(ann, getattr(ann, "__name__",
                                                                               str(ann)))
    bounds = [f"{sign} {_number(getattr(m, attr))}" for m in field.metadata
              for attr, sign in _BOUNDS.items() if type(m).__name__.lower() == attr]
    return ", ".join([kind, *bounds])


def _number(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def describe(text: str | None, var: str) -> str:
    """A field's description without the variable's name, which the table already gives:
    ``... (VAR)``, ``(note; VAR)`` and ``(VAR; note)`` become ``...``, ``(note)``, ``(note)``."""
    text, v = (text or "").strip(), re.escape(var)
    text = re.sub(rf"\s*\({v}\)$", "", text)
    text = re.sub(rf"\(([^()]*?);\s*{v}\)$", r"(\1)", text)
    text = re.sub(rf"\({v};\s*([^()]*)\)$", r"(\1)", text)
    return "" if text == var else text.replace("|", "\\|").replace("<", "\\<")


def section(title: str, intro: str, cls: type[BaseSettings],
            base: type[BaseSettings] | None) -> str:
    where = f"`{cls.__module__.replace('.', '/')}.py`, `{cls.__name__}`"
    rows = ["| variable | default | values | |", "|---|---|---|---|"]
    for name, field in cls.model_fields.items():
        if base is not None and name in base.model_fields:
            continue
        var = variable(cls, name, field)
        rows.append(f"| `{var}` | {default(field)} | {values(field)} | "
                    f"{describe(field.description, var)} |")
    return f"## {title}\n\n{textwrap.fill(f'{intro} ({where})', 100)}\n\n" + "\n".join(rows) + "\n"


def render() -> str:
    return "\n".join([HEADER, *(section(*s) for s in SECTIONS), FOOTER])


if __name__ == "__main__":
    print(render(), end="")
