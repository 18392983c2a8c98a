"""The lab's commands: ``python -m benchmarks demo | drift | learn | onboard | soak`` and the
benchmarks of :mod:`benchmarks.commands` (``bench``, ``model-bench``, ``scaling``, ``startup``,
``shadow-bench``, ``band``, ``winback``); the ``make`` targets run them. Not part of the ``ipr``
command or the wheel: they need the datasets of ``data/`` and a checkout.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from benchmarks.commands import BENCHMARKS, DataOpt
from benchmarks.commands import dataset_or_default as _dataset
from streams.cli.console import DEFAULT_ARTIFACTS, ArtifactsOpt, command, configure

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="The lab: the demo, the scenarios and the benchmarks.")
app.callback()(configure)


@app.command()
@command
def demo(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    dataset: DataOpt = None,
    tolerance: Annotated[float, typer.Option(
        "--tolerance", "-t", help="router's default tau")] = 0.1,
    limit: Annotated[int | None, typer.Option(help="send only the first N test prompts")] = None,
    rate: Annotated[float, typer.Option(
        help="prompts per second offered (0: as fast as possible)")] = 10.0,
    report: Annotated[Path, typer.Option(help="JSON report")] = Path("build/demo-report.json"),
    gateway_share: Annotated[float, typer.Option(
        help="share of the prompts sent through `ipr gateway` with the openai SDK")] = 0.2,
) -> None:
    """The whole system on a local Kafka (or IPR_KAFKA_BOOTSTRAP): router, replay workers, a \
gateway, report."""
    from benchmarks.demo import run_demo
    from benchmarks.processes import stop_on_sigterm
    from ipr_model.serving.rule import check_tolerance

    check_tolerance(tolerance)
    stop_on_sigterm()
    # The demo's own consumers retry through transient broker states (a new topic's leader
    # election, the first group coordinator): expected, and not worth a screen of warnings.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    r = run_demo(artifacts, _dataset(dataset), tolerance=tolerance, limit=limit, rate=rate,
                 report_path=report, gateway_share=gateway_share)
    lat = r["routing_latency_ms"]
    typer.echo(
        f"sent {r['prompts_sent']}: routed {r['routed']}, dead-lettered {r['dead_lettered']}, "
        f"responses {r['responses']}, duplicates {r['duplicates']}\n"
        f"per model: {r['per_model']}\n"
        f"quality {r['quality']:.3f} vs reference {r['reference_model']} "
        f"{r['reference_quality']:.3f}; cost ${r['cost_usd']:.4f} vs "
        f"${r['reference_cost_usd']:.4f} (saving {r['cost_saving']:.1%})\n"
        f"routing latency ms (produce -> model topic): p50 {lat['p50']} p90 {lat['p90']} "
        f"p99 {lat['p99']}"
    )
    if "gateway" in r:
        g = r["gateway"]
        typer.echo(
            f"through the gateway (openai SDK): sent {g['sent']}, answered {g['answered']} "
            f"({g['streamed']} streamed), on responses.out {g['on_responses_out']}, quality "
            f"{g['quality'] or 0:.3f}; latency ms p50 {g['latency_ms']['p50']} p99 "
            f"{g['latency_ms']['p99']}, first token p50 {g['first_token_ms']['p50']}")
    typer.echo(f"report: {report}")


@app.command()
@command
def drift(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    dataset: DataOpt = None,
    rounds: Annotated[int, typer.Option(help="rounds after the degradation")] = 4,
    min_labels: Annotated[int, typer.Option(help="labels per recalibration")] = 40,
) -> None:
    """The drift scenario: a model degrades on a task; the loop on vs off (build/drift.json)."""
    from benchmarks.drift import run_drift
    from benchmarks.processes import stop_on_sigterm

    stop_on_sigterm()
    r = run_drift(artifacts, _dataset(dataset), rounds=rounds, min_labels=min_labels)
    keys = ("degraded_model", "task", "quality_before", "quality_degraded_no_loop",
            "quality_degraded_with_loop", "share_to_degraded_before", "share_to_degraded_after",
            "labels_to_recover", "versions_published", "lost_prompts", "rounds_cut_short",
            "router_restarted")
    typer.echo(json.dumps({k: r[k] for k in keys}, indent=1))


@app.command()
@command
def learn(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    dataset: DataOpt = None,
    tolerance: Annotated[float, typer.Option(help="the router's tau")] = 0.2,
    rate: Annotated[float, typer.Option(help="prompts per second")] = 15.0,
    seed: Annotated[int, typer.Option(help="of the stream's order")] = 0,
    min_labels: Annotated[int, typer.Option(help="labels per recalibration")] = 20,
    json_out: Annotated[Path, typer.Option("--json", help="report (and its .png)")] = Path(
        "build/learn.json"),
) -> None:
    """Learning from live labels: the test split through the system, loop on vs off; the last \
half's quality-cost figures with intervals (build/learn.json)."""
    from benchmarks.learn import LearnConfig, run_learn
    from benchmarks.processes import stop_on_sigterm
    from ipr_model.serving.rule import check_tolerance

    stop_on_sigterm()
    cfg = LearnConfig(tolerance=check_tolerance(tolerance), rate=rate, seed=seed,
                      min_labels=min_labels)
    r = run_learn(artifacts, _dataset(dataset), cfg, out=json_out)
    half = r["last_half"]
    typer.echo(json.dumps({
        "prompts": r["prompts"], "last_half_prompts": half["prompts"], "lost": r["lost"],
        "versions_adopted": r["runs"]["on"]["versions_adopted"],
        **{k: {side: half[side][k] for side in ("on", "off", "difference")}
           for k in ("arqgc", "cost_share_0.95", "cost_share_0.975")},
        "at_tau_on_minus_off": half["realised"]["difference"], "report": str(json_out)},
        indent=1))


@app.command()
@command
def soak(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    dataset: DataOpt = None,
    minutes: Annotated[int, typer.Option(min=1, help="minutes of traffic")] = 10,
    rate: Annotated[float | None, typer.Option(
        help="prompts per second (default: half the end-to-end limit, measured)")] = None,
    min_labels: Annotated[int | None, typer.Option(
        help="the feedback service's labels per recalibration (default: its own)")] = None,
    json_out: Annotated[Path, typer.Option("--json", help="report (and its .png)")] = Path(
        "build/soak.json"),
) -> None:
    """Router, workers and feedback at half the end-to-end limit for N minutes: RSS, lag, p99 \
per minute (build/soak.json); exit 1 when the bar fails."""
    from benchmarks.processes import stop_on_sigterm
    from benchmarks.soak import run_soak

    stop_on_sigterm()
    r = run_soak(artifacts, _dataset(dataset), minutes, rate, min_labels, json_out)
    keys = ("rate_per_s", "rate_source", "sent", "lost", "versions_published", "latency_ms",
            "steal_percent", "load1_mean", "passed")
    typer.echo(json.dumps({**{k: r[k] for k in keys}, "checks": r["bar"]["checks"],
                           "rss": r["bar"]["rss"], "report": str(json_out)}, indent=1))
    if not r["passed"]:
        raise typer.Exit(1)


@app.command()
@command
def onboard(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    dataset: DataOpt = None,
    share: Annotated[float, typer.Option(help="IPR_ROUTER_EXPLORE_SHARE")] = 0.1,
    every: Annotated[int, typer.Option(help="labels per refit (IPR_FEEDBACK_MIN_LABELS)")] = 50,
    graduate: Annotated[int, typer.Option(help="IPR_FEEDBACK_GRADUATE_LABELS")] = 100,
    tolerance: Annotated[float, typer.Option(help="the router's tau")] = 0.2,
    model: Annotated[str | None, typer.Option(help="default: best quality per dollar above "
                                              "the median")] = None,
    out: Annotated[Path, typer.Option(help="folder of onboard.json")] = Path("build"),
    live: Annotated[bool, typer.Option(help="through a local broker, router, replay workers "
                                       "and feedback service (onboard-live.json)")] = False,
    limit: Annotated[int | None, typer.Option(help="--live: stream only the first prompts")] = None,
) -> None:
    """Onboarding a prices-only model from explored traffic, offline: labels, exploration spend \
and test-split ARQGC vs the offline artifact after each refit (build/onboard.json)."""
    from benchmarks.onboard import run
    from ipr_model.serving.rule import check_tolerance

    out.mkdir(parents=True, exist_ok=True)
    if live:
        from benchmarks.onboard_live import run_live
        from benchmarks.processes import stop_on_sigterm

        stop_on_sigterm()
        r = run_live(artifacts, _dataset(dataset), out, share, every, graduate,
                     check_tolerance(tolerance), limit=limit)
        typer.echo(json.dumps({k: r[k] for k in ("model", "routed", "labels", "to_model",
                                                 "explore_spend_share", "offline_arqgc",
                                                 "reached")}, indent=1))
        return
    r = run(artifacts, _dataset(dataset), out, share, every, check_tolerance(tolerance),
            graduate, model)
    typer.echo(json.dumps({k: r[k] for k in ("model", "offline_arqgc", "reached", "stays")},
                          indent=1))


# The benchmarks, after the demo and the scenarios in the command list.
for _benchmark in BENCHMARKS:
    app.command()(command(_benchmark))
