"""The benchmarks' commands: ``python -m benchmarks bench | model-bench | scaling | knn-index |
startup | shadow-bench | band | winback | budget`` (``make bench``, ``make band``, ``make
winback``). Plain functions, registered on the lab's app by :mod:`benchmarks.cli`; the heavy
imports live inside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from streams.cli.console import DEFAULT_ARTIFACTS, ArtifactsOpt

DataOpt = Annotated[Path | None, typer.Option(
    "--dataset", "-d", help="dataset folder (default: $IPR_DATA_DIR/zeroeval, else data/zeroeval)")]
RequiredArtifacts = Annotated[Path, typer.Option("--artifacts", "-a", help="artifact directory")]
RequiredData = Annotated[Path, typer.Option("--dataset", "-d", help="dataset folder")]


def dataset_or_default(folder: Path | None) -> Path:
    from ipr_model.training.datasets import default_data_dir

    return folder or default_data_dir() / "zeroeval"


def write_json(report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")


def bench(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    dataset: DataOpt = None,
    prompts: Annotated[int, typer.Option(help="test prompts produced per round")] = 559,
    batch_size: Annotated[int | None, typer.Option(
        help="the router's micro-batch (default: IPR_ROUTER_BATCH_SIZE or its default)")] = None,
    rounds: Annotated[int, typer.Option(
        help="end-to-end runs, each between two limit runs (the median is reported)")] = 5,
    exactly_once: Annotated[bool, typer.Option(
        "--exactly-once",
        help="the router in exactly-once mode (IPR_ROUTER_EXACTLY_ONCE)")] = False,
    routers: Annotated[int, typer.Option(
        help="router processes in one group, the cores shared among them")] = 1,
    traced: Annotated[bool, typer.Option(
        "--traced", help="every prompt traced, its spans sent to a Zipkin server")] = False,
    baseline: Annotated[Path | None, typer.Option(
        help="an untraced run's report: the traced one says what tracing costs against it")]
    = None,
    json_out: Annotated[Path, typer.Option("--json", help="report")] = Path("build/bench.json"),
) -> None:
    """The router's throughput and latency through a real Kafka, against its limit \
(build/bench.json)."""
    from benchmarks.bench import run_bench
    from benchmarks.processes import stop_on_sigterm

    stop_on_sigterm()
    report = run_bench(artifacts, dataset_or_default(dataset), prompts, batch_size, rounds,
                       json_out, exactly_once, routers, traced)
    if baseline is not None:
        report["against"] = against(json.loads(baseline.read_text()), report, str(baseline))
        write_json(report, json_out)
    typer.echo(json.dumps(report, indent=1))


def against(base: dict, run: dict, name: str) -> dict:
    """What a variant of the bench costs against a baseline run: throughput lost (each as its
    ratio to the limit measured around it, so a machine that slowed between the two runs does not
    count) and the router's CPU per prompt added."""
    cpu = "router_e2e_ms_per_prompt"
    return {"baseline": name,
            "throughput_lost": round(1 - run["ratio"] / base["ratio"], 3),
            "router_cpu_per_prompt_added": round(run["cpu"][cpu] / base["cpu"][cpu] - 1, 3)}


def model_bench(
    artifacts: RequiredArtifacts,
    dataset: RequiredData,
    json_out: Annotated[Path, typer.Option("--json", help="report")] = Path(
        "build/bench-model.json"),
    train: Annotated[bool, typer.Option(
        "--train", help="also time ipr train and ipr add-model")] = False,
    recalibrate: Annotated[bool, typer.Option(
        "--recalibrate", help="also time a 1,000-label recalibration")] = False,
) -> None:
    """The model's speed: single-prompt latency, batched throughput, optionally training and \
recalibration times (build/bench-model.json)."""
    from benchmarks.model_bench import run

    out = run(artifacts, dataset, train, recalibrate)
    write_json(out, json_out)
    typer.echo(json.dumps(out, indent=1))


def gateway_bench(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    dataset: DataOpt = None,
    prompts: Annotated[int, typer.Option(help="requests per phase")] = 600,
    rate: Annotated[float | None, typer.Option(
        help="requests/s of the latency phases (default: half the Kafka path's rate)")] = None,
    concurrency: Annotated[int, typer.Option(
        help="requests in flight in the throughput phase")] = 64,
    json_out: Annotated[Path, typer.Option("--json", help="report")] = Path(
        "build/bench-gateway.json"),
) -> None:
    """What `ipr gateway` adds over calling the backend directly: latency, time to first \
token, throughput, memory (build/bench-gateway.json)."""
    from benchmarks.gateway_bench import run_gateway_bench
    from benchmarks.processes import stop_on_sigterm

    stop_on_sigterm()
    report = run_gateway_bench(artifacts, dataset_or_default(dataset), prompts, rate,
                               concurrency, json_out)
    typer.echo(json.dumps(report, indent=1))


def views(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    dataset: DataOpt = None,
    json_out: Annotated[Path, typer.Option("--json", help="report")] = Path("build/views.json"),
) -> None:
    """What a system prompt does to routing quality under each scored view \
(build/views.json)."""
    from benchmarks.views import run

    out = run(artifacts, dataset_or_default(dataset))
    write_json(out, json_out)
    typer.echo(json.dumps(out, indent=1))


def scaling(
    artifacts: RequiredArtifacts,
    dataset: RequiredData,
    json_out: Annotated[Path, typer.Option("--json", help="report")] = Path(
        "build/scaling.json"),
    plot: Annotated[Path, typer.Option(help="its plot")] = Path("build/scaling.png"),
) -> None:
    """What the machine allows, and how scoring cost grows with models and memory \
(build/scaling.json)."""
    from benchmarks import scaling as measure

    out = measure.run(artifacts, dataset)
    write_json(out, json_out)
    measure.plot(out, plot)
    typer.echo(json.dumps(out, indent=1))


def knn_index(
    artifacts: RequiredArtifacts,
    dataset: RequiredData,
    rows: Annotated[str, typer.Option(help="memory sizes, comma-separated")] = "2000,20000,"
                                                                              "100000,1000000",
    json_out: Annotated[Path, typer.Option("--json", help="report")] = Path(
        "build/knn-index.json"),
) -> None:
    """The kNN memory's ANN index against the exact scan: recall on real rows, and scoring time \
as the memory grows to 1M rows (build/knn-index.json)."""
    from benchmarks.knn_index import run

    out = run(artifacts, dataset, [int(r) for r in rows.split(",")])
    write_json(out, json_out)
    typer.echo(json.dumps(out, indent=1))


def startup(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    dataset: Annotated[Path, typer.Option("--dataset", "-d", help="dataset folder")] = Path(
        "data/zeroeval"),
    rate: Annotated[float, typer.Option(help="prompts per second, the whole time")] = 10.0,
    restarts: Annotated[int, typer.Option(help="rounds of (SIGTERM, SIGKILL)")] = 2,
    json_out: Annotated[Path, typer.Option("--json", help="report")] = Path(
        "build/startup.json"),
) -> None:
    """How long a router takes to route: started fresh, after a SIGTERM and after a SIGKILL \
(build/startup.json)."""
    from benchmarks.startup import measure

    report = measure(artifacts, dataset, rate, restarts)
    write_json(report, json_out)
    typer.echo(json.dumps(report, indent=1))


def shadow_bench(
    artifacts: RequiredArtifacts,
    dataset: RequiredData,
    prompts: Annotated[int, typer.Option(help="test prompts")] = 200,
    batch_size: Annotated[int, typer.Option(help="the router's default")] = 4,
    rounds: Annotated[int, typer.Option(help="alternating rounds (the median is reported)")] = 3,
    json_out: Annotated[Path | None, typer.Option("--json", help="report")] = None,
) -> None:
    """What a version in shadow costs the router per batch, in process (no Kafka)."""
    from benchmarks.shadow_bench import run

    r = run(artifacts, dataset, prompts, batch_size, rounds)
    if json_out:
        write_json(r, json_out)
    typer.echo(json.dumps(r, indent=1))


def band(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    dataset: DataOpt = None,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="report (default: build/band-<dataset>.json)")] = None,
) -> None:
    """The correction band on stationary traffic and on a drift, offline \
(build/band-<dataset>.json)."""
    from benchmarks.band import run

    report = run(artifacts, dataset_or_default(dataset))
    write_json(report, json_out or Path("build") / f"band-{report['dataset']}.json")


def winback(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    dataset: DataOpt = None,
    share: Annotated[float, typer.Option(help="exploration share")] = 0.1,
    json_out: Annotated[Path, typer.Option("--json", help="report")] = Path(
        "build/winback.json"),
) -> None:
    """Winning traffic back after a drift ends, offline (build/winback.json)."""
    from benchmarks.winback import run

    # The failure just before the recovery (the worst case), one and two label half-lives before.
    runs = [run(artifacts, dataset_or_default(dataset), share, gap=g) for g in (0.0, 1.0, 2.0)]
    write_json(runs, json_out)
    for r in runs:
        typer.echo(json.dumps({k: v for k, v in r.items() if k != "steps"}))


def budget(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    dataset: DataOpt = None,
    rate: Annotated[float, typer.Option(help="prompts per second (the demo's)")] = 10.0,
    latency_s: Annotated[float, typer.Option(help="each model call's duration")] = 2.0,
    routers: Annotated[int, typer.Option(help="router processes in one group")] = 2,
    compare: Annotated[bool, typer.Option(
        "--compare", help="first the same traffic without reservations")] = False,
    json_out: Annotated[Path, typer.Option("--json", help="report")] = Path("build/budget.json"),
) -> None:
    """How far budgets of 10 and 100 prompts' cost overshoot at the demo's rate while calls \
take seconds (build/budget.json)."""
    from benchmarks.budget import run
    from benchmarks.processes import stop_on_sigterm

    if rate <= 0 or latency_s < 0 or routers < 1:
        raise typer.BadParameter("rate must be > 0, latency-s >= 0 and routers >= 1")
    stop_on_sigterm()
    report = run(artifacts, dataset_or_default(dataset), rate, latency_s, routers, compare)
    write_json(report, json_out)
    typer.echo(json.dumps(report, indent=1))


BENCHMARKS = (bench, gateway_bench, model_bench, views, scaling, knn_index, startup, shadow_bench,
              band, winback, budget)
