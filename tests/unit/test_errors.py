"""One exception tree: every exception class the product defines for a user's, a configuration's
or an input's mistake derives from ``schemas.errors.IprError`` (so that the ``ipr`` command
reports it in one line), keeping the builtin base existing ``except`` clauses catch."""

from __future__ import annotations

import ast
import builtins
import importlib

from schemas.errors import IprError
from tests.unit.test_layout import PRODUCT, module_name, sources

# Exceptions that never leave their module: control flow, not a mistake to report.
INTERNAL = {
    "streams.worker.backends.openai._Retry": "one attempt to retry; becomes a Completion",
    "streams.worker.backends.openai._Fatal": "one attempt that failed; becomes a Completion",
    "streams.kafka.admin._Unanswered": "one attempt nothing answered; retried, then a "
                                       "KafkaConnectError",
}
BUILTIN = {n for n in dir(builtins)
           if isinstance(getattr(builtins, n), type) and issubclass(getattr(builtins, n),
                                                                    BaseException)}


def _base_name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def exception_classes() -> set[str]:
    """``module.Class`` of every class in the product whose bases are exceptions: builtin ones,
    a library's (``...Error``), or the product's own (followed to a fixed point)."""
    classes = [(module_name(p), node.name, [_base_name(b) for b in node.bases])
               for p in sources(*PRODUCT) for node in ast.walk(ast.parse(p.read_text()))
               if isinstance(node, ast.ClassDef)]
    names = set(BUILTIN)
    found: set[str] = set()
    while True:
        new = {f"{m}.{c}" for m, c, bases in classes
               if any(b in names or b.endswith(("Error", "Exception")) for b in bases)}
        if new == found:
            return found
        found = new
        names |= {q.rsplit(".", 1)[1] for q in found}


def _load(qualified: str) -> type:
    module, name = qualified.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def test_every_error_of_the_product_is_an_ipr_error():
    found = exception_classes()
    assert {"schemas.codec.SchemaError", "streams.cli.console.UserError",
            "streams.kafka.admin.KafkaConnectError"} <= found  # the walk sees them
    assert set(INTERNAL) <= found, "an INTERNAL entry names a class that is gone"
    outside = sorted(q for q in found - set(INTERNAL) if not issubclass(_load(q), IprError))
    assert outside == [], "derive them from schemas.errors.IprError (or list them in INTERNAL)"


def test_the_errors_keep_the_builtin_base_they_had():
    import ipr_model.errors

    assert ipr_model.errors.IprError is IprError
    for qualified, base in [("schemas.codec.SchemaError", ValueError),
                            ("ipr_model.errors.RoutingInputError", ValueError),
                            ("streams.kafka.admin.KafkaAdminError", RuntimeError),
                            ("streams.kafka.admin.KafkaConnectError", RuntimeError),
                            ("streams.kafka.jars.BrokerError", RuntimeError),
                            ("streams.worker.service.WorkerConfigError", ValueError)]:
        assert issubclass(_load(qualified), base), qualified
