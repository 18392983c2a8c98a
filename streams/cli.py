"""The ``ipr`` command: the estimator's commands (``ipr_model.cli``) and the services'.

    ipr train | add-model | score | evaluate | route | recalibrate    the estimator (ipr_model.cli)
    ipr router | worker | feedback                                     the services
    ipr broker start | stop                                            a local dev Kafka
    ipr shadow start | stop | promote | report                         a version in shadow
    ipr policy set | show | delete                                     tenant policies
    ipr demo | drift | learn | onboard | soak                          the harnesses

Each service is built from its settings class, read from the environment (``IPR_*``) with what
the user typed on the command line passed over it as values.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from ipr_model import cli as model_cli
from ipr_model.console import (
    DEFAULT_ARTIFACTS,
    LOG_FORMAT,
    ArtifactsOpt,
    UserError,
    command,
    configure,
)
from streams.policy_cli import policy_app
from streams.shadow_cli import shadow_app

BROKER_STATE = Path("build/broker.json")
ServiceArtifactsOpt = Annotated[Path | None, typer.Option(
    "--artifacts", "-a",
    help=f"artifact directory (default: the service's *_ARTIFACTS setting, {DEFAULT_ARTIFACTS})")]
DataOpt = Annotated[Path | None, typer.Option(
    "--dataset", "-d", help="dataset folder (default: $IPR_DATA_DIR/zeroeval, else data/zeroeval)")]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="IPR prompt router.")
app.callback()(configure)
app.registered_commands += model_cli.app.registered_commands
broker_app = typer.Typer(
    no_args_is_help=True, help="A local Apache Kafka broker (KRaft, no Docker)."
)
app.add_typer(broker_app, name="broker")
app.add_typer(shadow_app, name="shadow")
app.add_typer(policy_app, name="policy")


@broker_app.command("start")
@command
def broker_start(
    state: Annotated[Path, typer.Option(help="state file (bootstrap, pid)")] = BROKER_STATE,
    partitions: int = 4,
    sasl_ssl: Annotated[bool, typer.Option(
        help="clients connect over SASL_SSL (SCRAM users and a CA made for the run)")] = False,
    port: Annotated[int | None, typer.Option(
        help="client port (default: a free one; with --brokers: the first node's, the others' "
             "follow)")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        help="keep the broker's data here, to start it again in place (default: a temporary "
             "folder, removed on stop)")] = None,
    brokers: Annotated[int, typer.Option(
        min=1, help="nodes (each a KRaft controller and broker); 3 and more: topics replicated "
                    "3 times, min.insync.replicas 2")] = 1,
) -> None:
    """Run a local Kafka in the foreground until Ctrl-C (writes its bootstrap to the state file)."""
    from streams.kafka.foreground import run_forever
    from streams.kafka.jars import BrokerError

    def ready(kafka) -> None:
        typer.echo(f"kafka ready at {kafka.bootstrap}")
        if kafka.security is not None:  # what a client needs; the password is the run's own
            env = kafka.security.client_env(kafka.bootstrap, kafka.users[0])
            typer.echo("clients: " + " ".join(f"{k}={v}" for k, v in env.items()))
        elif brokers > 1:  # the project's own topics are replicated like the cluster's
            typer.echo(f"clients: IPR_KAFKA_BOOTSTRAP={kafka.bootstrap} "
                       f"IPR_TOPIC_REPLICATION={kafka.replication}")

    if brokers > 1 and sasl_ssl:
        raise UserError(f"--sasl-ssl runs on one broker; expected no --sasl-ssl with --brokers "
                        f"{brokers}")
    state.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_forever(state, partitions=partitions, sasl_ssl=sasl_ssl, port=port,
                    data_dir=data_dir, on_ready=ready, brokers=brokers)
    except BrokerError as e:
        raise UserError(str(e)) from None


@broker_app.command("stop")
@command
def broker_stop(state: Annotated[Path, typer.Option(help="state file")] = BROKER_STATE) -> None:
    """Stop the local Kafka (or cluster) started with ``ipr broker start``."""
    from streams.kafka.foreground import stop_from_state

    typer.echo("stopped" if stop_from_state(state) else "no broker was running")


@app.command()
@command
def worker(
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help="model id to serve (repeat; replay: default all)")] = None,
    backend: Annotated[str | None, typer.Option(
        help="openai or replay (default: IPR_WORKER_BACKEND, else openai)")] = None,
    dataset: Annotated[Path | None, typer.Option(
        help="dataset folder for --backend replay")] = None,
    artifacts: Annotated[Path | None, typer.Option(
        help="artifacts whose models the worker may serve, and their prices for cost "
             f"(default for --backend openai: {DEFAULT_ARTIFACTS})")] = None,
) -> None:
    """LLM worker: consume prompts.routed.<model>, call the backend, publish responses.out.
    Settings: IPR_WORKER_*, IPR_KAFKA_*."""
    from streams.kafka.admin import KafkaAdminError
    from streams.worker.run import run_worker
    from streams.worker.service import WorkerConfigError
    from streams.worker.settings import WorkerSettings

    settings = WorkerSettings()
    backend = backend or settings.backend
    if backend not in ("openai", "replay"):
        raise UserError(f"--backend must be openai or replay, got {backend!r}")
    if backend == "openai" and artifacts is None and settings.known_models is None:
        artifacts = DEFAULT_ARTIFACTS
    try:
        run_worker(settings, list(model or []), backend, dataset, artifacts)
    except (WorkerConfigError, KafkaAdminError) as e:
        raise UserError(str(e)) from None


@app.command()
@command
def router(
    artifacts: ServiceArtifactsOpt = None,
    tolerance: Annotated[float | None, typer.Option(
        help="default tau for requests without one")] = None,
    web_port: Annotated[int | None, typer.Option(help="Faust web port (/metrics)")] = None,
) -> None:
    """Run a router process (Faust worker) over prompts.in. Settings: IPR_ROUTER_*, IPR_KAFKA_*."""
    from ipr_model.artifacts import read_manifest
    from ipr_model.rule import check_tolerance
    from streams.router.app import cap_malloc_arenas, create_app
    from streams.router.settings import RouterSettings

    cap_malloc_arenas()
    s = RouterSettings(**_given(
        artifacts=artifacts, web_port=web_port,
        default_tolerance=None if tolerance is None else check_tolerance(tolerance)))
    read_manifest(s.artifacts)  # a clear error now rather than inside the worker
    faust_app, _ = create_app(s)
    _run_faust(faust_app, s, [s.prompts_in, s.prompts_dlq, s.decisions, s.control, s.shadow])


@app.command()
@command
def feedback(
    artifacts: ServiceArtifactsOpt = None,
    min_labels: Annotated[int | None, typer.Option(
        help="new labels that trigger a recalibration")] = None,
) -> None:
    """Run the feedback service: labels -> recalibration -> new versions on router.control.
    Settings: IPR_FEEDBACK_*, IPR_KAFKA_*."""
    from ipr_model.artifacts import read_manifest
    from streams.feedback.app import create_app
    from streams.feedback.settings import FeedbackSettings

    s = FeedbackSettings(**_given(artifacts=artifacts, min_labels=min_labels))
    read_manifest(s.artifacts)
    if s.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(s.metrics_port, addr=s.metrics_bind)
    faust_app, service = create_app(s)
    s.versions_dir.mkdir(parents=True, exist_ok=True)
    # The tables' changelogs exist before the first write: Faust would create them lazily and
    # could see them with 0 partitions on the first event.
    _run_faust(faust_app, s, [s.decisions, s.feedback, s.prompts_dlq, s.control],
               compacted=service.changelog_topics(),
               before=lambda: asyncio.run(service.load_current()))  # before a label is read


def _given(**typed):
    """What the user typed: the options given override the settings' environment and defaults."""
    return {k: v for k, v in typed.items() if v is not None}


def _run_faust(faust_app, settings, topics: list[str], compacted: list[str] = (),
               before=None) -> None:
    """Create the service's topics if missing (Faust would only warn), call ``before``, then run
    its worker."""
    from faust import Worker

    from streams.kafka.admin import KafkaAdminError, check_connection, create_topics_sync

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        check_connection(settings)  # one line now, rather than Faust retrying forever
        create_topics_sync(settings, topics, settings.topic_partitions)
        if compacted:
            create_topics_sync(settings, compacted, settings.topic_partitions,
                               configs={"cleanup.policy": "compact"})
    except KafkaAdminError as e:
        raise UserError(str(e)) from None
    if before is not None:
        before()
    # redirect_stdouts off: Faust would log whatever is printed (a traceback) a character a line
    worker = Worker(faust_app, loglevel="WARNING", quiet=True, logging_config=PLAIN_LOGGING,
                    redirect_stdouts=False)
    worker.spinner = None  # it writes terminal escapes even when stdout is a file
    worker.execute_from_commandline()


# Faust's default log format is colourised whether or not its stream is a terminal: plain lines,
# the same format as every other command's, so a log redirected to a file carries no escapes.
PLAIN_LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": LOG_FORMAT}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                            "stream": "ext://sys.stderr"}},
    "root": {"level": "WARNING", "handlers": ["stderr"]},
}


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
) -> None:
    """The whole system on a local Kafka (or IPR_KAFKA_BOOTSTRAP): router, replay workers, \
report."""
    from ipr_model.rule import check_tolerance
    from streams.harness.demo import run_demo
    from streams.harness.processes import stop_on_sigterm

    check_tolerance(tolerance)
    stop_on_sigterm()
    # The demo's own consumers retry through transient broker states (a new topic's leader
    # election, the first group coordinator): expected, and not worth a screen of warnings.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    r = run_demo(artifacts, _dataset(dataset), tolerance=tolerance, limit=limit, rate=rate,
                 report_path=report)
    lat = r["routing_latency_ms"]
    typer.echo(
        f"sent {r['prompts_sent']}: routed {r['routed']}, dead-lettered {r['dead_lettered']}, "
        f"responses {r['responses']}, duplicates {r['duplicates']}\n"
        f"per model: {r['per_model']}\n"
        f"quality {r['quality']:.3f} vs reference {r['reference_model']} "
        f"{r['reference_quality']:.3f}; cost ${r['cost_usd']:.4f} vs "
        f"${r['reference_cost_usd']:.4f} (saving {r['cost_saving']:.1%})\n"
        f"routing latency ms (produce -> model topic): p50 {lat['p50']} p90 {lat['p90']} "
        f"p99 {lat['p99']}\nreport: {report}"
    )


@app.command()
@command
def drift(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    dataset: DataOpt = None,
    rounds: Annotated[int, typer.Option(help="rounds after the degradation")] = 4,
    min_labels: Annotated[int, typer.Option(help="labels per recalibration")] = 40,
) -> None:
    """The drift scenario: a model degrades on a task; the loop on vs off (build/drift.json)."""
    from streams.harness.drift import run_drift
    from streams.harness.processes import stop_on_sigterm

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
    from ipr_model.rule import check_tolerance
    from streams.harness.learn import LearnConfig, run_learn
    from streams.harness.processes import stop_on_sigterm

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
    json_out: Annotated[Path, typer.Option("--json", help="report (and its .png)")] = Path(
        "build/soak.json"),
) -> None:
    """Router, workers and feedback at half the end-to-end limit for N minutes: RSS, lag, p99 \
per minute (build/soak.json); exit 1 when the bar fails."""
    from streams.harness.processes import stop_on_sigterm
    from streams.harness.soak import run_soak

    stop_on_sigterm()
    r = run_soak(artifacts, _dataset(dataset), minutes, rate, out=json_out)
    keys = ("rate_per_s", "rate_source", "sent", "lost", "versions_published", "latency_ms",
            "steal_percent", "load1_mean", "passed")
    typer.echo(json.dumps({**{k: r[k] for k in keys}, "checks": r["bar"]["checks"],
                           "rss": r["bar"]["rss"], "report": str(json_out)}, indent=1))
    if not r["passed"]:
        raise typer.Exit(1)


def _dataset(folder: Path | None) -> Path:
    from ipr_model.datasets import default_data_dir

    return folder or default_data_dir() / "zeroeval"


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
    from ipr_model.rule import check_tolerance
    from streams.harness.onboard import run

    out.mkdir(parents=True, exist_ok=True)
    if live:
        from streams.harness.onboard_live import run_live
        from streams.harness.processes import stop_on_sigterm

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


if __name__ == "__main__":
    app()
