"""`ipr worker`: build the backends from the settings, create the topics, serve until a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from schemas.topics import model_topic
from streams.control.tool_calls import TOPIC_CONFIG as TOOL_CALLS_CONFIG
from streams.kafka.lag import watch_lag
from streams.worker.dedupe import TOPIC_CONFIG, answered_topic
from streams.worker.service import BackendFactory, Worker, WorkerConfigError
from streams.worker.settings import WorkerSettings

log = logging.getLogger(__name__)

EVERY = "*"  # --model '*': every model of the artifacts (openai) or of the dataset (replay)


def build_backends(
    settings: WorkerSettings,
    models: list[str],
    backend: str,
    dataset: Path | None = None,
    artifacts: Path | None = None,
) -> tuple[list[str], BackendFactory, Callable[[], Awaitable[None]] | None]:
    """The models to serve (all of the dataset's for replay when none are given), a backend
    factory, and what to close once the worker has stopped (the shared HTTP client), if anything.
    """
    if backend == "replay":
        from ipr_model.errors import DatasetError
        from ipr_model.training.datasets import load_dataset
        from streams.worker.backends.replay import ReplayBackend

        folder = dataset or settings.replay_dataset
        if folder is None:
            raise WorkerConfigError(
                "the replay backend needs a dataset folder (--dataset or IPR_WORKER_REPLAY_DATASET)"
            )
        try:
            data = load_dataset(folder)
        except DatasetError as exc:
            raise WorkerConfigError(str(exc)) from None
        models = data.model_ids if not models or models == [EVERY] else models
        unknown = [m for m in models if m not in data.model_ids]
        if unknown:
            raise WorkerConfigError(
                f"model(s) {', '.join(unknown)} not in dataset {data.name!r}; "
                f"it has: {', '.join(data.model_ids)}"
            )
        replay = ReplayBackend(data)
        return models, lambda _model: replay, None
    if backend == "openai":
        return _openai(settings, models, artifacts)
    raise WorkerConfigError(f"backend must be 'openai' or 'replay', got {backend!r}")


def _openai(settings: WorkerSettings, models: list[str], artifacts: Path | None):
    """OpenAI backends for ``models``, each checked against the artifacts' models (a typo would
    otherwise create its own topic and wait there forever), priced from their cards."""
    import httpx

    from ipr_model.artifacts.manifest import read_manifest
    from ipr_model.errors import ArtifactError
    from ipr_model.serving.cards import read_cost
    from streams.worker.backends.openai import OpenAIBackend

    if not models:
        raise WorkerConfigError("the openai backend needs at least one --model")
    if artifacts is None and settings.known_models is None:
        raise WorkerConfigError("the openai backend needs the artifacts whose models it serves "
                                "(--artifacts) or IPR_WORKER_KNOWN_MODELS")
    try:
        known = (settings.known_models if artifacts is None
                 else read_manifest(artifacts, verify=False).models)
        models = list(known) if models == [EVERY] else models
        unknown = [m for m in models if m not in known]
        if unknown:
            where = "IPR_WORKER_KNOWN_MODELS" if artifacts is None else f"artifacts {artifacts}"
            raise WorkerConfigError(
                f"model(s) {', '.join(unknown)} not in {where}; known: {', '.join(known)}")
        prices = {m: read_cost(artifacts, m).prices if artifacts else None for m in models}
    except ArtifactError as exc:
        raise WorkerConfigError(str(exc)) from None
    client = httpx.AsyncClient(timeout=settings.timeout_s)

    def make(model_id: str) -> OpenAIBackend:
        return OpenAIBackend(
            settings.openai_base_url,
            settings.openai_api_key,
            timeout_s=settings.timeout_s,
            max_retries=settings.max_retries,
            backoff_s=settings.backoff_s,
            max_tokens=settings.max_tokens,
            prices=prices[model_id],
            client=client,
        )

    return models, make, client.aclose


async def serve(
    settings: WorkerSettings,
    models: list[str],
    backend: str,
    dataset: Path | None = None,
    artifacts: Path | None = None,
    stop_event: asyncio.Event | None = None,
) -> dict[str, dict[str, int]]:
    """Build the backends, create missing topics (best effort) and run until `stop_event`."""
    from streams.kafka.admin import create_topics, wait_for_cluster

    models, factory, cleanup = build_backends(settings, models, backend, dataset, artifacts)
    stop_event = stop_event or asyncio.Event()
    try:
        worker = Worker(settings, models, factory)
        # up to IPR_WORKER_START_TIMEOUT_S for a broker that is down or starting, then one line
        # (a client the cluster refuses: at once), rather than consumers retrying forever
        await wait_for_cluster(settings, settings.start_timeout_s, "worker")
        topics = [model_topic(m) for m in models]
        topics += [settings.responses, settings.feedback, settings.prompts_dlq]
        try:
            await asyncio.wait_for(
                create_topics(settings, topics, settings.topic_partitions), 60
            )
            await asyncio.wait_for(create_topics(
                settings, [answered_topic(settings)], settings.topic_partitions,
                configs=TOPIC_CONFIG), 60)
            await asyncio.wait_for(create_topics(
                settings, [settings.tool_calls], 1, configs=TOOL_CALLS_CONFIG), 60)
        except Exception as exc:  # noqa: BLE001 - no admin rights, or the cluster makes them
            log.warning("could not create topics (%s: %s); continuing", type(exc).__name__, exc)
        lag = None if settings.metrics_port is None else asyncio.ensure_future(watch_lag(
            settings, lambda: {worker.group_of(m): [model_topic(m)] for m in worker.models}))
        try:
            await worker.run(stop_event)
        finally:
            if lag is not None:
                lag.cancel()
    finally:
        if cleanup is not None:
            await cleanup()
    log.info("worker stopped: %s", worker.stats_dict())
    return worker.stats_dict()


def run_worker(
    settings: WorkerSettings,
    models: list[str],
    backend: str,
    dataset: Path | None = None,
    artifacts: Path | None = None,
) -> dict[str, dict[str, int]]:
    """`ipr worker`: serve `models` until SIGINT or SIGTERM; returns the per-model counters.

    Raises WorkerConfigError for a user mistake (unknown backend or model, missing dataset).
    """

    async def main() -> dict[str, dict[str, int]]:
        if settings.metrics_port is not None:
            from prometheus_client import start_http_server

            start_http_server(settings.metrics_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await serve(settings, models, backend, dataset, artifacts, stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    began = time.monotonic()
    stats = asyncio.run(main())
    log.info("worker ran %.1f s", time.monotonic() - began)
    return stats
