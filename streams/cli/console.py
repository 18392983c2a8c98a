"""What every ``ipr`` command shares: one-line errors and exit codes, logging set-up, progress
bars, JSON reports and the evaluation table. Heavy imports live inside the functions."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from schemas.errors import IprError

STATE = {"debug": False}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DEFAULT_ARTIFACTS = Path("artifacts/zeroeval")

ArtifactsOpt = Annotated[Path, typer.Option("--artifacts", "-a", help="artifact directory")]
DatasetOpt = Annotated[Path, typer.Option(
    "--dataset", "-d", help="dataset folder (models.json, prompts.jsonl or prompts.jsonl.gz)")]


class UserError(IprError):
    """A mistake in what the user asked for: reported in one line (as every IprError is)."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """What a user can cause: the project's own errors (every one an IprError, UserError too),
    invalid settings or input, a file that is not there."""
    from pydantic import ValidationError

    return (IprError, ValidationError, FileNotFoundError)


def _one_line(e: Exception) -> str:
    """The first line of an error; for a settings or input ValidationError, what each invalid
    field broke (its first line only says how many errors there were)."""
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        return f"{e.title}: " + "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in e.errors(include_url=False))
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def command(fn):
    """Run a command body, turning expected errors into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except Exception as e:  # noqa: BLE001 - the boundary of the CLI
            if STATE["debug"]:
                raise
            expected = isinstance(e, _user_errors())
            msg = _one_line(e)
            prefix = "error" if expected else f"internal error ({type(e).__name__})"
            typer.echo(f"{prefix}: {msg}", err=True)
            raise typer.Exit(2 if expected else 1) from None

    return wrapper


def configure(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log at INFO")] = False,
) -> None:
    """The options every command takes: tracebacks, log level. Logging is configured here only."""
    STATE["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING,
        format=LOG_FORMAT,
    )





@contextmanager
def progress_bar() -> Iterator:
    """A rich progress bar fed by ``(stage, done, total)`` callbacks."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        transient=False, disable=not sys.stderr.isatty(),
    ) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=_jsonable) + "\n")


def _jsonable(x):
    import numpy as np

    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")



KNOB_TAUS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)


def print_table(rep: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    ref = rep["reference"]
    t = Table(
        title=f"{rep['dataset']} ({rep['split']}, {rep['prompts']} prompts, "
        f"{rep['models']} models)"
    )
    for col in ("router", "ARQGC", "steps", "saving at parity", "Q at ref cost", "top-1"):
        t.add_column(col, justify="right" if col != "router" else "left")
    for name, r in rep["routers"].items():
        sp = r["saving_at_parity"]
        parity = (
            f"{sp['saving']:.1%}"
            if sp["reached"]
            else f"not reached (max Q {sp['max_quality']:.3f})"
        )
        qr = r["quality_at_ref_cost"]
        t.add_row(name, f"{r['arqgc']:.3f}", f"{r['arqgc_steps']:.3f}", parity,
                  "-" if qr is None else f"{qr:.3f}", f"{r['top1_accuracy']:.3f}")
    mix = rep["random_mix"]
    t.add_row("random mix", f"{mix['arqgc']:.3f}", "-", "0.0%", "-", "-")
    Console().print(t)
    if "ipr" in rep["routers"]:  # the tau knob, for choosing one
        knob = [
            p
            for p in rep["routers"]["ipr"]["points"]
            if p[0] is not None and round(p[0], 2) in KNOB_TAUS
        ]
        typer.echo("ipr by tau (cost / reference's, quality): " + "; ".join(
            f"{t:.2f}: {c / ref['ref_cost']:.0%}, {q:.3f}" for t, c, q in knob))
    typer.echo(
        f"reference {ref.get('ref_model', ref.get('ref_idx'))}: Q {ref['ref_quality']:.3f}, "
        f"C ${ref['ref_cost']:.6f}/prompt; "
        f"cheapest {ref.get('cheap_model', ref.get('cheap_idx'))}: "
        f"Q {ref['cheap_quality']:.3f}, C ${ref['cheap_cost']:.6f}/prompt"
    )
