"""The ``ipr`` command: the estimator's commands (``streams.cli.model``) and the services'.

    ipr train | add-model | score | evaluate | route | recalibrate    the estimator
    ipr router | worker | feedback                                     the services
    ipr gateway [add-key]                                              the HTTP front door
    ipr broker start | stop                                            a local dev Kafka
    ipr shadow start | stop | promote | report                         a version in shadow
    ipr policy set | show | delete                                     tenant policies

Each service is built from its settings class, read from the environment (``IPR_*``) with what
the user typed on the command line passed over it as values.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from streams import tracing
from streams.cli import model as model_cli
from streams.cli.console import (
    DEFAULT_ARTIFACTS,
    LOG_FORMAT,
    UserError,
    command,
    configure,
)
from streams.cli.policy import policy_app
from streams.cli.shadow import shadow_app

BROKER_STATE = Path("build/broker.json")
ServiceArtifactsOpt = Annotated[Path | None, typer.Option(
    "--artifacts", "-a",
    help=f"artifact directory (default: the service's *_ARTIFACTS setting, {DEFAULT_ARTIFACTS})")]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="IPR prompt router.")
app.callback()(configure)
app.registered_commands += model_cli.app.registered_commands
broker_app = typer.Typer(
    no_args_is_help=True, help="A local Apache Kafka broker (KRaft, no Docker)."
)
app.add_typer(broker_app, name="broker")
app.add_typer(shadow_app, name="shadow")
app.add_typer(policy_app, name="policy")
gateway_app = typer.Typer(help="The OpenAI-compatible HTTP front door (and its API keys).")
app.add_typer(gateway_app, name="gateway")


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
    run_forever(state, partitions=partitions, sasl_ssl=sasl_ssl, port=port,
                data_dir=data_dir, on_ready=ready, brokers=brokers)


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
        "--model", "-m", help="model id to serve (repeat; '*': every model of the artifacts, or "
                              "of the dataset for replay, its default)")] = None,
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
    from streams.worker.run import run_worker
    from streams.worker.settings import WorkerSettings

    settings = WorkerSettings()
    backend = backend or settings.backend
    if backend not in ("openai", "replay"):
        raise UserError(f"--backend must be openai or replay, got {backend!r}")
    if backend == "openai" and artifacts is None and settings.known_models is None:
        artifacts = DEFAULT_ARTIFACTS
    tracing.setup("ipr-worker")
    run_worker(settings, list(model or []), backend, dataset, artifacts)


@app.command()
@command
def router(
    artifacts: ServiceArtifactsOpt = None,
    tolerance: Annotated[float | None, typer.Option(
        help="default tau for requests without one")] = None,
    web_port: Annotated[int | None, typer.Option(help="Faust web port (/metrics)")] = None,
) -> None:
    """Run a router process (Faust worker) over prompts.in. Settings: IPR_ROUTER_*, IPR_KAFKA_*."""
    from ipr_model.artifacts.manifest import read_manifest
    from ipr_model.serving.rule import check_tolerance
    from streams.router.app import cap_malloc_arenas, create_app
    from streams.router.settings import RouterSettings

    cap_malloc_arenas()
    s = RouterSettings(**_given(
        artifacts=artifacts, web_port=web_port,
        default_tolerance=None if tolerance is None else check_tolerance(tolerance)))
    read_manifest(s.artifacts)  # a clear error now rather than inside the worker
    tracing.setup("ipr-router")
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
    from ipr_model.artifacts.manifest import read_manifest
    from streams.feedback.app import create_app
    from streams.feedback.settings import FeedbackSettings

    s = FeedbackSettings(**_given(artifacts=artifacts, min_labels=min_labels))
    read_manifest(s.artifacts)
    if s.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(s.metrics_port, addr=s.metrics_bind)
    tracing.setup("ipr-feedback")
    faust_app, service = create_app(s)
    s.versions_dir.mkdir(parents=True, exist_ok=True)
    # The tables' changelogs exist before the first write: Faust would create them lazily and
    # could see them with 0 partitions on the first event.
    _run_faust(faust_app, s, [s.decisions, s.feedback, s.prompts_dlq, s.control],
               compacted=service.changelog_topics(),
               before=lambda: asyncio.run(service.load_current()))  # before a label is read


@gateway_app.callback(invoke_without_command=True)
@command
def gateway(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on")] = None,
    artifacts: ServiceArtifactsOpt = None,
    keys_file: Annotated[Path | None, typer.Option(
        help="API keys and their tenants (ipr gateway add-key); none: no key asked")] = None,
) -> None:
    """Serve the OpenAI-compatible API (/v1/chat/completions, /v1/models, /v1/feedback) over
    Kafka. Settings: IPR_GATEWAY_*, IPR_KAFKA_*."""
    if ctx.invoked_subcommand is not None:
        return
    from streams.gateway.keys import KeysFileError
    from streams.gateway.run import serve
    from streams.gateway.settings import GatewaySettings
    from streams.kafka.admin import KafkaAdminError

    s = GatewaySettings(**_given(host=host, port=port, artifacts=artifacts, keys_file=keys_file))
    tracing.setup("ipr-gateway")
    try:
        serve(s)
    except (KafkaAdminError, KeysFileError) as e:
        raise UserError(str(e)) from None


@gateway_app.command("add-key")
@command
def gateway_add_key(
    tenant: Annotated[str, typer.Option(help="the tenant whose requests the key makes")],
    keys_file: Annotated[Path | None, typer.Option(
        help="the keys file (default: IPR_GATEWAY_KEYS_FILE)")] = None,
) -> None:
    """Make an API key for a tenant: printed once, only its sha256 stored in the keys file."""
    from streams.gateway.keys import KeysFileError, add_key
    from streams.gateway.settings import GatewaySettings

    path = keys_file or GatewaySettings().keys_file
    if path is None:
        raise UserError("no keys file: expected --keys-file or IPR_GATEWAY_KEYS_FILE")
    try:
        key = add_key(path, tenant)
    except KeysFileError as e:
        raise UserError(str(e)) from None
    typer.echo(key)
    typer.echo(f"stored its sha256 for tenant {tenant!r} in {path}; the key is not shown again",
               err=True)


def _given(**typed):
    """What the user typed: the options given override the settings' environment and defaults."""
    return {k: v for k, v in typed.items() if v is not None}


def _run_faust(faust_app, settings, topics: list[str], compacted: list[str] = (),
               before=None) -> None:
    """Create the service's topics if missing (Faust would only warn), call ``before``, then run
    its worker."""
    from faust import Worker

    from streams.kafka.admin import check_connection, create_topics_sync

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    check_connection(settings)  # one line now, rather than Faust retrying forever
    create_topics_sync(settings, topics, settings.topic_partitions)
    if compacted:
        create_topics_sync(settings, compacted, settings.topic_partitions,
                           configs={"cleanup.policy": "compact"})
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


if __name__ == "__main__":
    app()
