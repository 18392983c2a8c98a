"""The ``ipr`` command line. Heavy imports live inside the commands; user mistakes end in a
one-line error and a non-zero exit (a traceback only with ``--debug``)."""

from __future__ import annotations

import functools
import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="IPR prompt router.")
broker_app = typer.Typer(no_args_is_help=True, help="A local Apache Kafka broker (KRaft, no Docker).")
app.add_typer(broker_app, name="broker")

STATE = {"debug": False}
DEFAULT_ARTIFACTS = Path("artifacts/zeroeval")

ArtifactsOpt = Annotated[Path, typer.Option("--artifacts", "-a", help="artifact directory")]
DatasetOpt = Annotated[Path, typer.Option("--dataset", "-d", help="dataset folder (models.json, prompts.jsonl)")]


class UserError(Exception):
    """A mistake in what the user asked for: reported in one line."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from pydantic import ValidationError

    from ipr_model.errors import IprError

    return (IprError, UserError, ValidationError, FileNotFoundError)


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
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            prefix = "error" if expected else f"internal error ({type(e).__name__})"
            typer.echo(f"{prefix}: {msg}", err=True)
            raise typer.Exit(2 if expected else 1) from None

    return wrapper


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log at INFO")] = False,
) -> None:
    STATE["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the ``finally`` that stops the broker and the services a
    command started also runs when it is terminated (e.g. by ``timeout`` or a supervisor)."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


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


def _load(dataset: Path):
    from ipr_model.datasets import load_dataset

    return load_dataset(dataset)


LayersOpt = Annotated[
    Optional[str],
    typer.Option(help="encoder hidden layers pooled into the embedding, e.g. 2,4,6 "
                      "(default: the last one, the sentence embedding)"),
]


TailOpt = Annotated[
    Optional[int],
    typer.Option(help="keep a long prompt's last N tokens after as much of its head as fits (0: "
                      "the head only). Default: the head, or, when 10%+ of the train prompts are "
                      "cut, whichever of the head and the first and last 128 routes them better"),
]


def _layers(text: str | None) -> tuple[int, ...] | None:
    try:
        return tuple(int(x) for x in text.split(",")) if text else None
    except ValueError:
        raise UserError(f"--layers must be comma-separated layer numbers, got {text!r}") from None


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=_jsonable) + "\n")


def _jsonable(x):
    import numpy as np

    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


@app.command()
@command
def train(
    dataset: DatasetOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="artifact directory to write")],
    encoder: Annotated[Optional[Path], typer.Option(help="a local Hugging Face model directory")] = None,
    precision: Annotated[
        str, typer.Option(help="encoder weights: int8 (faster) or fp32 (the exported graph as is)")
    ] = "int8",
    layers: LayersOpt = None,
    tail_tokens: TailOpt = None,
    seed: Annotated[int, typer.Option(help="seed of the MLP folds and initial weights")] = 0,
) -> None:
    """Train the estimators on the dataset's train split and write an artifact directory."""
    import time

    from ipr_model.adapters import AdapterConfig
    from ipr_model.train import train as run

    t0 = time.perf_counter()
    pooled = _layers(layers)
    train_set = _load(dataset).split("train")
    with progress_bar() as cb:
        manifest = run(train_set, out, encoder_source=encoder, cfg=AdapterConfig(seed=seed),
                       progress=cb, encoder_precision=precision, encoder_layers=pooled,
                       encoder_tail_tokens=tail_tokens)
    typer.echo(
        f"trained {len(manifest.models)} adapters on {len(train_set)} prompts in "
        f"{time.perf_counter() - t0:.1f}s: {out} (version {manifest.version})"
    )
    cut = manifest.data.get("train_prompts_cut", 0)
    if cut:
        from ipr_model.artifacts import ENCODER_DIR

        tail = json.loads((out / ENCODER_DIR / "encoder.json").read_text()).get("tail_tokens", 0)
        keep = f"their last {tail} tokens after the head that fits" if tail else "their head"
        scores = manifest.data.get("cut_scores")
        why = (" (routing the train split out of fold, by tail tokens: " + ", ".join(
            f"{t}: {s:.4f}" for t, s in scores.items()) + ")") if scores else ""
        typer.echo(f"{cut} of {len(train_set)} train prompts are longer than the encoder's "
                   f"window: the encoder keeps {keep}{why}")


@app.command("add-model")
@command
def add_model(
    artifacts: ArtifactsOpt,
    dataset: DatasetOpt,
    model: Annotated[str, typer.Option("--model", "-m", help="model id in the dataset")],
) -> None:
    """Train one more model's adapter into existing artifacts; other files stay byte-identical."""
    import time

    from ipr_model.train import add_model as run

    t0 = time.perf_counter()
    train_set = _load(dataset).split("train")
    with progress_bar() as cb:
        manifest = run(artifacts, train_set, model, progress=cb)
    typer.echo(
        f"added {model} in {time.perf_counter() - t0:.1f}s: {len(manifest.models)} models, "
        f"version {manifest.version}"
    )


@app.command()
@command
def score(
    artifacts: ArtifactsOpt,
    dataset: DatasetOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write")],
    split: Annotated[str, typer.Option(help="train or test")] = "test",
) -> None:
    """Predicted quality and estimated cost of every model for every prompt of a split."""
    import orjson

    from ipr_model.scorer import Scorer
    from ipr_model.train import embed

    scorer = Scorer.load(artifacts)
    part = _load(dataset).split(split)
    with progress_bar() as cb:
        emb = embed(Path(artifacts) / "encoder", part.prompts, cb)
    s = scorer.score_embeddings(emb, part.prompts)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        for i, pid in enumerate(part.ids):
            row = {
                "id": pid,
                "predicted_quality": dict(zip(scorer.model_ids, s.quality[i].tolist())),
                "estimated_cost_usd": dict(zip(scorer.model_ids, s.cost[i].tolist())),
            }
            f.write(orjson.dumps(row) + b"\n")
    typer.echo(f"scored {len(part)} prompts x {len(scorer.model_ids)} models: {out}")


KNOB_TAUS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)


def _print_table(rep: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    ref = rep["reference"]
    t = Table(title=f"{rep['dataset']} ({rep['split']}, {rep['prompts']} prompts, {rep['models']} models)")
    for col in ("router", "ARQGC", "steps", "saving at parity", "Q at ref cost", "top-1"):
        t.add_column(col, justify="right" if col != "router" else "left")
    for name, r in rep["routers"].items():
        sp = r["saving_at_parity"]
        parity = f"{sp['saving']:.1%}" if sp["reached"] else f"not reached (max Q {sp['max_quality']:.3f})"
        qr = r["quality_at_ref_cost"]
        t.add_row(name, f"{r['arqgc']:.3f}", f"{r['arqgc_steps']:.3f}", parity,
                  "-" if qr is None else f"{qr:.3f}", f"{r['top1_accuracy']:.3f}")
    mix = rep["random_mix"]
    t.add_row("random mix", f"{mix['arqgc']:.3f}", "-", "0.0%", "-", "-")
    Console().print(t)
    if "ipr" in rep["routers"]:  # the tau knob, for choosing one
        knob = [p for p in rep["routers"]["ipr"]["points"] if p[0] is not None and round(p[0], 2) in KNOB_TAUS]
        typer.echo("ipr by tau (cost / reference's, quality): " + "; ".join(
            f"{t:.2f}: {c / ref['ref_cost']:.0%}, {q:.3f}" for t, c, q in knob))
    typer.echo(
        f"reference {ref.get('ref_model', ref.get('ref_idx'))}: Q {ref['ref_quality']:.3f}, C ${ref['ref_cost']:.6f}/prompt; "
        f"cheapest {ref.get('cheap_model', ref.get('cheap_idx'))}: Q {ref['cheap_quality']:.3f}, C ${ref['cheap_cost']:.6f}/prompt"
    )


@app.command()
@command
def evaluate(
    dataset: DatasetOpt,
    json_out: Annotated[Path, typer.Option("--json", help="JSON report to write")],
    artifacts: Annotated[Optional[Path], typer.Option("--artifacts", "-a", help="trained artifacts (held-out split)")] = None,
    split: Annotated[str, typer.Option(help="split to measure on")] = "test",
    cv: Annotated[int, typer.Option(help="k-fold cross-validation instead of artifacts (k >= 2)")] = 0,
    plot: Annotated[Optional[Path], typer.Option(help="PNG of the quality-cost curves")] = None,
    layers: LayersOpt = None,
    tail_tokens: TailOpt = None,
    seed: Annotated[int, typer.Option(help="with --cv: seed of the folds and of the MLPs")] = 0,
) -> None:
    """Routing quality (cost saving at parity, ARQGC, ...) against the baselines."""
    from ipr_model import evaluate as ev
    from ipr_model.adapters import AdapterConfig
    from ipr_model.plot import make_refs, plot_curves
    from ipr_model import metrics

    data = _load(dataset)
    with progress_bar() as cb:
        if cv:
            if cv < 2:
                raise UserError(f"--cv must be >= 2, got {cv}")
            rep, preds, cost, test = ev.cross_validate(data, folds=cv, cfg=AdapterConfig(seed=seed),
                                                       seed=seed, progress=cb, layers=_layers(layers),
                                                       tail_tokens=tail_tokens)
        else:
            if layers or seed or tail_tokens is not None:
                raise UserError("--layers, --tail-tokens and --seed apply to --cv "
                                "(artifacts carry their own)")
            if artifacts is None:
                raise UserError("give --artifacts (held-out evaluation) or --cv K (cross-validation)")
            if not data.has_split(split):
                raise UserError(f"dataset {data.name!r} has no {split!r} split: use --cv 5")
            rep, preds, cost = ev.evaluate_split(artifacts, data, split, progress=cb)
            from ipr_model.scorer import Scorer

            test = data.split(split).restrict(Scorer.load(artifacts, verify=False).model_ids)
    _write_json(json_out, rep)
    _print_table(rep)
    for name in ("ipr", "linear", "knn"):
        per = [f[name]["saving_at_parity"] for f in rep.get("per_fold", []) if name in f]
        if per:
            typer.echo(f"{name}, each fold on its own: saving at parity " + ", ".join(
                f"{p['saving']:.1%}" if p["reached"] else "not reached" for p in per))
    if any(rep.get("tail_tokens_per_fold", [])):
        typer.echo(f"the cut each fold chose (tail tokens, 0: the head): {rep['tail_tokens_per_fold']}")
    if plot:
        ids = test.model_ids
        curves = {
            name: metrics.operating_points(p, cost, test.quality, test.cost, ids)
            for name, p in preds.items()
        }
        plot_curves(curves, make_refs(test.quality, test.cost, ids),
                    f"{rep['dataset']}: {rep['split']}", plot)
        typer.echo(f"plot: {plot}")
    typer.echo(f"report: {json_out}")


@app.command()
@command
def route(
    text: Annotated[str, typer.Argument(help="the prompt")],
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    tolerance: Annotated[float, typer.Option("--tolerance", "-t", help="tau in [0, 1]")] = 0.2,
    allow: Annotated[Optional[list[str]], typer.Option("--allow", help="restrict to these model ids")] = None,
    variant: Annotated[str, typer.Option(help="ipr or dynamic_max")] = "ipr",
    delta: Annotated[float, typer.Option(help="margin of dynamic_max")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Route one prompt: the chosen model, every model's score and cost, and the threshold."""
    from ipr_model.rule import VARIANTS, allowed_mask, check_tolerance
    from ipr_model.scorer import Scorer

    if not text.strip():
        raise UserError("the prompt is empty: expected non-empty text")
    check_tolerance(tolerance)
    if variant not in VARIANTS:
        raise UserError(f"--variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    scorer = Scorer.load(artifacts)
    allowed_mask(scorer.model_ids, allow)  # unknown ids: a clear error before any work
    d = scorer.decide(scorer.score([text]), [tolerance], [allow], variant=variant, delta=delta)[0]
    if as_json:
        typer.echo(json.dumps({"model_id": d.model_id, "threshold": d.threshold,
                               "tolerance": d.tolerance, "router_version": scorer.version,
                               "predicted_quality": d.predicted_quality,
                               "estimated_cost_usd": d.estimated_cost_usd,
                               "feedback_adjustment": d.feedback_adjustment}, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"tau={tolerance} threshold={d.threshold:.3f} -> {d.model_id}")
    moved = d.feedback_adjustment or {}  # a column only when feedback moved some estimate
    for col in ("model", "predicted quality", *(["of which feedback"] if moved else []),
                "estimated cost (USD)", ""):
        t.add_column(col)
    for m in sorted(d.predicted_quality, key=lambda m: -d.predicted_quality[m]):
        q = d.predicted_quality[m]
        mark = "chosen" if m == d.model_id else ("feasible" if q >= d.threshold else "")
        fb = [f"{moved[m]:+.3f}" if m in moved else ""] if moved else []
        t.add_row(m, f"{q:.3f}", *fb, f"{d.estimated_cost_usd[m]:.6f}", mark)
    Console().print(t)


@broker_app.command("start")
@command
def broker_start(
    state: Annotated[Path, typer.Option(help="state file (bootstrap, pid)")] = Path("build/broker.json"),
    partitions: int = 4,
) -> None:
    """Run a local Kafka in the foreground until Ctrl-C (writes its bootstrap to the state file)."""
    from streams.broker import run_forever

    state.parent.mkdir(parents=True, exist_ok=True)
    run_forever(state, partitions=partitions, on_ready=lambda b: typer.echo(f"kafka ready at {b}"))


@broker_app.command("stop")
@command
def broker_stop(state: Annotated[Path, typer.Option(help="state file")] = Path("build/broker.json")) -> None:
    """Stop the local Kafka started with ``ipr broker start``."""
    from streams.broker import stop_from_state

    typer.echo("stopped" if stop_from_state(state) else "no broker was running")


@app.command()
@command
def worker(
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="model id (repeat; replay: default all)")] = None,
    backend: Annotated[str, typer.Option(help="openai or replay")] = "openai",
    dataset: Annotated[Optional[Path], typer.Option(help="dataset folder for --backend replay")] = None,
    artifacts: Annotated[Optional[Path], typer.Option(help="artifacts (prices for cost)")] = None,
) -> None:
    """LLM worker: consume prompts.routed.<model>, call the backend, publish responses.out."""
    from streams.settings import WorkerSettings
    from streams.worker import WorkerConfigError, run_worker

    if backend not in ("openai", "replay"):
        raise UserError(f"--backend must be openai or replay, got {backend!r}")
    try:
        run_worker(WorkerSettings(), list(model or []), backend, dataset, artifacts)
    except WorkerConfigError as e:
        raise UserError(str(e)) from None


@app.command()
@command
def router(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    tolerance: Annotated[Optional[float], typer.Option(help="default tau for requests without one")] = None,
    web_port: Annotated[Optional[int], typer.Option(help="Faust web port (/metrics)")] = None,
) -> None:
    """Run a router process (Faust worker) over prompts.in. Settings: IPR_ROUTER_*, IPR_KAFKA_*."""
    import os

    from ipr_model.artifacts import read_manifest

    read_manifest(artifacts)  # a clear error now rather than inside the worker
    os.environ["IPR_ROUTER_ARTIFACTS"] = str(artifacts)
    if tolerance is not None:
        from ipr_model.rule import check_tolerance

        os.environ["IPR_ROUTER_DEFAULT_TOLERANCE"] = str(check_tolerance(tolerance))
    if web_port is not None:
        os.environ["IPR_ROUTER_WEB_PORT"] = str(web_port)
    from streams.agents import app as faust_app, settings as s

    _run_faust(faust_app, s, [s.prompts_in, s.prompts_dlq, s.decisions, s.control])


def _run_faust(faust_app, settings, topics: list[str]) -> None:
    """Create the service's topics if missing (Faust would only warn), then run its worker."""
    from faust import Worker

    from streams.broker import create_topics_sync

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    create_topics_sync(settings.kafka_bootstrap, topics, settings.topic_partitions)
    Worker(faust_app, loglevel="WARNING", quiet=True).execute_from_commandline()


@app.command()
@command
def demo(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    dataset: DatasetOpt = Path("../shared/data/zeroeval"),
    tolerance: Annotated[float, typer.Option("--tolerance", "-t", help="router's default tau")] = 0.1,
    limit: Annotated[Optional[int], typer.Option(help="send only the first N test prompts")] = None,
    rate: Annotated[float, typer.Option(help="prompts per second offered (0: as fast as possible)")] = 10.0,
    report: Annotated[Path, typer.Option(help="JSON report")] = Path("build/demo-report.json"),
) -> None:
    """The whole system on a local Kafka (or IPR_KAFKA_BOOTSTRAP): router, replay workers, report."""
    from ipr_model.rule import check_tolerance
    from streams.demo import run_demo

    check_tolerance(tolerance)
    stop_on_sigterm()
    # The demo's own consumers retry through transient broker states (a new topic's leader
    # election, the first group coordinator): expected, and not worth a screen of warnings.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    r = run_demo(artifacts, dataset, tolerance=tolerance, limit=limit, rate=rate, report_path=report)
    lat = r["routing_latency_ms"]
    typer.echo(
        f"sent {r['prompts_sent']}: routed {r['routed']}, dead-lettered {r['dead_lettered']}, "
        f"responses {r['responses']}, duplicates {r['duplicates']}\n"
        f"per model: {r['per_model']}\n"
        f"quality {r['quality']:.3f} vs reference {r['reference_model']} {r['reference_quality']:.3f}; "
        f"cost ${r['cost_usd']:.4f} vs ${r['reference_cost_usd']:.4f} "
        f"(saving {r['cost_saving']:.1%})\n"
        f"routing latency ms (produce -> model topic): p50 {lat['p50']} p90 {lat['p90']} p99 {lat['p99']}\n"
        f"report: {report}"
    )


@app.command()
@command
def recalibrate(
    artifacts: ArtifactsOpt,
    feedback: Annotated[Path, typer.Option(help='JSONL: {"model_id", "quality", "text"} per label')],
    out: Annotated[Path, typer.Option("--out", "-o", help="directory of the new version")],
) -> None:
    """Offline recalibration: fit each labelled model's local correction from the feedback,
    publish a new version only where the guardrail passes."""
    import numpy as np
    import orjson

    from ipr_model.recalibrate import recalibrate as run
    from ipr_model.train import embed

    rows: dict[str, list[tuple[str, float]]] = {}
    for n, line in enumerate(feedback.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = orjson.loads(line)
            rows.setdefault(str(r["model_id"]), []).append((str(r["text"]), float(r["quality"])))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"{feedback}:{n}: expected {{model_id, quality, text}}: {e}") from None
    labels = {}
    for model, pairs in rows.items():
        emb = embed(Path(artifacts) / "encoder", [t for t, _ in pairs])
        labels[model] = (emb, np.array([q for _, q in pairs]))
    result = run(artifacts, labels, out)
    for m in result.models:
        verdict = "published" if m.published else "kept the current version"
        typer.echo(f"{m.model_id}: {m.labels} labels, held-out Brier {m.brier_uncorrected:.4f} -> "
                   f"{m.brier_candidate:.4f}: {verdict}")
    typer.echo(f"new version {result.version} at {out}" if result.version else "nothing published")


@app.command()
@command
def feedback(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    min_labels: Annotated[Optional[int], typer.Option(help="new labels that trigger a recalibration")] = None,
) -> None:
    """Run the feedback service: labels -> recalibration -> new versions on router.control."""
    import os

    from ipr_model.artifacts import read_manifest

    read_manifest(artifacts)
    os.environ["IPR_FEEDBACK_ARTIFACTS"] = str(artifacts)
    if min_labels is not None:
        os.environ["IPR_FEEDBACK_MIN_LABELS"] = str(min_labels)
    from streams.broker import create_topics_sync
    from streams.feedback import app as faust_app, changelog_topics, settings as s

    s.versions_dir.mkdir(parents=True, exist_ok=True)
    # The tables' changelogs exist before the first write: Faust would create them lazily and
    # could see them with 0 partitions on the first event.
    create_topics_sync(s.kafka_bootstrap, changelog_topics(), s.topic_partitions,
                       configs={"cleanup.policy": "compact"})
    _run_faust(faust_app, s, [s.decisions, s.feedback, s.prompts_dlq, s.control])


@app.command()
@command
def drift(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    dataset: DatasetOpt = Path("../shared/data/zeroeval"),
    rounds: Annotated[int, typer.Option(help="rounds after the degradation")] = 4,
    min_labels: Annotated[int, typer.Option(help="labels per recalibration")] = 40,
) -> None:
    """The drift scenario: a model degrades on a task; the loop on vs off (build/drift.json)."""
    from streams.drift import run_drift

    stop_on_sigterm()
    r = run_drift(artifacts, dataset, rounds=rounds, min_labels=min_labels)
    keys = ("degraded_model", "task", "quality_before", "quality_degraded_no_loop",
            "quality_degraded_with_loop", "share_to_degraded_before", "share_to_degraded_after",
            "labels_to_recover", "versions_published", "lost_prompts", "router_restarted")
    typer.echo(json.dumps({k: r[k] for k in keys}, indent=1))


if __name__ == "__main__":
    app()
