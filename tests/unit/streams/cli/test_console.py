"""The ``command`` decorator: any IprError (the project's errors, whatever their package) is one
line on stderr and exit 2; anything else is an internal error, exit 1."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from ipr_model.errors import ArtifactError
from schemas import SchemaError
from schemas.errors import IprError
from streams.cli.console import UserError, command
from streams.kafka.admin import KafkaConnectError
from streams.kafka.jars import BrokerError
from streams.worker.service import WorkerConfigError
from tests.unit.streams.cli.test_main import ipr


def _run(error: BaseException) -> tuple[int, str]:
    app = typer.Typer()

    @app.command()
    @command
    def fail() -> None:
        raise error

    result = CliRunner().invoke(app, [])
    return result.exit_code, result.stderr


@pytest.mark.parametrize("error", [
    IprError("expected A, found B\nand a second line"),
    SchemaError("expected A, found B", kind="invalid"),
    ArtifactError("expected A, found B"),
    KafkaConnectError("expected A, found B"),
    BrokerError("expected A, found B"),
    WorkerConfigError("expected A, found B"),
    UserError("expected A, found B"),
], ids=lambda e: type(e).__name__)
def test_an_ipr_error_is_one_line_and_exit_2(error):
    code, stderr = _run(error)
    assert (code, stderr) == (2, "error: expected A, found B\n")


def test_any_other_error_is_an_internal_one_and_exit_1():
    code, stderr = _run(KeyError("boom"))
    assert (code, stderr) == (1, "internal error (KeyError): 'boom'\n")


def test_a_cluster_that_does_not_answer_is_one_line_from_the_command_itself():
    """``ipr shadow stop`` no longer wraps KafkaConnectError: the decorator reports it."""
    env = {**__import__("os").environ, "IPR_KAFKA_BOOTSTRAP": "127.0.0.1:1"}  # nothing listens
    p = ipr("shadow", "stop", env=env)
    assert p.returncode == 2, p.stderr
    [line] = p.stderr.strip().splitlines()
    assert line.startswith("error: ") and "127.0.0.1:1" in line
