"""``ipr policy set | show | delete``: the tenants' policies on ``router.policies``.

``set`` writes a tenant's whole policy (what is not given is not set: no ceiling on τ, every
model, no budget); every router applies it from the topic, without a restart. ``show`` prints
each policy with its revision (its offset on the topic) and the tenant's spend in the budget's
current period, one JSON object a line.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from streams.cli.console import UserError, command

policy_app = typer.Typer(
    no_args_is_help=True, help="Tenant policies: τ, allowed models, budget (router.policies).")


@policy_app.command("set")
@command
def policy_set(
    tenant: Annotated[str, typer.Argument(help="the tenant (the prompts' `tenant` field)")],
    tolerance: Annotated[float | None, typer.Option(
        help="the tenant's τ: its prompts' default and the highest τ they may use")] = None,
    allow: Annotated[list[str] | None, typer.Option(
        "--allow", "-m",
        help="a model the tenant's prompts may go to (repeat; default: all)")] = None,
    budget: Annotated[float | None, typer.Option(
        help="USD the tenant may spend per --period")] = None,
    period: Annotated[str | None, typer.Option(
        help="the budget's period: hour, day or month (UTC calendar)")] = None,
    on_exhausted: Annotated[str, typer.Option(
        help="once the budget is spent: cheapest (τ = 1 among the allowed models) or reject "
             "(dead-letter, budget_exceeded)")] = "cheapest",
    artifacts: Annotated[Path | None, typer.Option(
        "--artifacts", "-a", help="refuse models these artifacts do not have")] = None,
) -> None:
    """Write a tenant's policy (the whole of it); every router applies it at once."""
    from schemas import TenantPolicy
    from streams.router.tenants import describe

    if (budget is None) != (period is None):
        raise UserError("budget_usd and period go together (--budget and --period): a budget is "
                        "per hour, day or month")
    policy = TenantPolicy(
        tenant=tenant, tolerance=tolerance, allowed_models=allow or None, budget_usd=budget,
        period=period, on_exhausted=on_exhausted, updated_at=time.time(),
    )
    if artifacts is not None and policy.allowed_models:
        from ipr_model.artifacts.manifest import read_manifest

        known = read_manifest(artifacts).models
        unknown = sorted(set(policy.allowed_models) - set(known))
        if unknown:
            raise UserError(f"--allow: unknown model(s) {', '.join(unknown)}; {artifacts} has "
                            f"{len(known)} models")
    revision = asyncio.run(_write(_settings(), tenant, policy.model_dump_json().encode()))
    typer.echo(f"policy of tenant {tenant!r} set, revision {revision}: {describe(policy)}")


@policy_app.command("delete")
@command
def policy_delete(tenant: Annotated[str, typer.Argument(help="the tenant")]) -> None:
    """Remove a tenant's policy (its prompts are then routed as if it had none)."""
    asyncio.run(_write(_settings(), tenant, None))
    typer.echo(f"policy of tenant {tenant!r} removed")


@policy_app.command("show")
@command
def policy_show(
    tenant: Annotated[str | None, typer.Argument(help="one tenant (default: all)")] = None,
) -> None:
    """Print each tenant's policy, revision and spend this period, one JSON object a line."""
    rows = asyncio.run(_current(_settings(), tenant))
    if tenant is not None and not rows:
        raise UserError(f"no policy for tenant {tenant!r}")
    for row in rows:
        typer.echo(json.dumps(row, ensure_ascii=False))


def _settings():
    """The Kafka settings, once the cluster answers (else one line naming the bootstrap that did
    not, exit 2, like every other command)."""
    from streams.kafka.admin import KafkaAdminError, check_connection
    from streams.kafka.settings import KafkaSettings

    s = KafkaSettings()
    try:
        check_connection(s)
    except KafkaAdminError as e:
        raise UserError(str(e)) from None
    return s


async def _write(s, tenant: str, value: bytes | None) -> int:
    from aiokafka import AIOKafkaProducer

    from streams.kafka.admin import create_topics
    from streams.kafka.clients import aiokafka_config
    from streams.router.tenants import POLICIES_CONFIG

    await create_topics(s, [s.policies], partitions=1, configs=POLICIES_CONFIG)
    producer = AIOKafkaProducer(**aiokafka_config(s), acks="all", enable_idempotence=True)
    try:  # closed even when it cannot start
        await producer.start()
        sent = await producer.send_and_wait(s.policies, value, key=tenant.encode())
    finally:
        await producer.stop()
    return sent.offset


async def _current(s, tenant: str | None) -> list[dict[str, Any]]:
    from schemas import SchemaError, TenantReservation, TenantSpend, decode
    from streams.router.policy import period_start
    from streams.router.tenants import Policies, Spend

    policies, spend = Policies(log_changes=False), Spend()
    for msg in await _read(s, s.policies):
        policies.apply(msg.key, msg.value, msg.offset)
    for topic, event in ((s.spend, TenantSpend), (s.reservations, TenantReservation)):
        for msg in await _read(s, topic):
            try:
                spend.apply(decode(event, msg.value))
            except SchemaError:
                continue
    rows = []
    for name in sorted(policies.tenants()) if tenant is None else [tenant]:
        found = policies.get(name)
        if found is None:
            continue
        policy, revision = found
        rows.append({
            "tenant": name, "revision": revision,
            "policy": policy.model_dump(exclude={"schema_version", "tenant"}),
            "spend_usd": None if policy.period is None else spend.total(
                name, policy.period, period_start(policy.period, time.time())),
            # answered and in flight: what the routers weigh the budget against
            "committed_usd": None if policy.period is None else spend.current(name, policy.period),
        })
    return rows


async def _read(settings, topic: str, wait_s: float = 10.0) -> list:
    """Every record of ``topic`` up to its end now (none when it does not exist)."""
    from aiokafka import AIOKafkaConsumer

    from streams.kafka.clients import aiokafka_config

    consumer = AIOKafkaConsumer(**aiokafka_config(settings), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                isolation_level="read_committed")  # reservations: transactions
    try:  # closed even when it cannot start
        await consumer.start()
        if topic not in await consumer.topics():
            return []
        consumer.subscribe([topic])  # no group: every partition, once its metadata is known
        deadline = time.monotonic() + wait_s
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise UserError(f"topic {topic} has no partitions after {wait_s:.0f} s")
            await asyncio.sleep(0.05)
        tps = sorted(consumer.assignment())
        end = await consumer.end_offsets(tps)
        out: list = []
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(msgs)
        return out
    finally:
        await consumer.stop()
