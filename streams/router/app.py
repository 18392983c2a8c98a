"""The router service's Faust app, built from its settings: ``create_app(settings)``.

Building the app connects to nothing and loads no model: the scorer is loaded when the worker
starts (``Router.load_scorer``).
"""

from __future__ import annotations

import time

import faust
from aiohttp.web import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.kafka.clients import faust_config
from streams.kafka.lag import watch_lag
from streams.router import metrics
from streams.router.agent import Router
from streams.router.malloc import cap_malloc_arenas, fix_mmap_threshold
from streams.router.settings import RouterSettings

__all__ = ["cap_malloc_arenas", "create_app", "fix_mmap_threshold", "prometheus_metrics"]


def create_app(settings: RouterSettings) -> tuple[faust.App, Router]:
    """The service's Faust app, and the :class:`Router` whose agent and tasks it runs."""
    app = faust.App(
        settings.app_id,
        **faust_config(settings),
        datadir=str(settings.data_dir),
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        # exactly-once: offsets are committed in each batch's transactions; a commit of Faust's
        # own, landing after a newer transaction's, would move the group's offset back
        broker_commit_every=2**31 if settings.exactly_once else 1000,
        broker_commit_interval=86400.0 if settings.exactly_once else settings.commit_interval_s,
        producer_acks=-1,
        producer_linger_ms=1,
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        key_serializer="raw",
        value_serializer="raw",
    )
    router = Router(app, settings)
    _state_metrics(router)
    app.agent(router.prompts_in, name="route_prompts")(router.route_prompts)
    app.task(router.load_scorer)
    app.task(router.follow_control)
    app.task(router.tenants.follow)
    app.task(router.tool_calls.follower.run)
    app.task(router.spend_counter.run)
    app.page("/metrics")(prometheus_metrics)
    if settings.web_enabled:
        groups = {settings.app_id: [settings.prompts_in],
                  router.spend_counter.group: [settings.responses]}

        @app.task
        async def measure_lag() -> None:
            await watch_lag(settings, lambda: groups)
    if router.transactions is not None:
        _close_transactions(app, router, settings.prompts_in)
    return app, router


def _state_metrics(router: Router) -> None:
    """The gauges /metrics reads from this router's state when scraped (on the event loop, where
    that state changes)."""
    metrics.STATE.models = lambda: (s.model_ids if (s := router.scorers.loaded()) else ())
    metrics.STATE.unhealthy = lambda: router.health.unhealthy(time.time())
    metrics.STATE.budgets = lambda: [metrics.Budget(*b) for b in router.tenants.budgets()]


def _close_transactions(app: faust.App, router: Router, topic: str) -> None:
    """The transactional producers of revoked partitions stop with the revocation, all of them
    with the app (after its consumer, before its producer is flushed)."""
    transactions = router.transactions
    assert transactions is not None

    @app.on_partitions_revoked.connect
    async def close_revoked(_app, revoked=(), **_kwargs) -> None:
        await transactions.close(tp.partition for tp in revoked if tp.topic == topic)

    @app.on_before_shutdown.connect
    async def close_all(_app, **_kwargs) -> None:
        await transactions.close()


async def prometheus_metrics(web, request) -> Response:
    return Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
