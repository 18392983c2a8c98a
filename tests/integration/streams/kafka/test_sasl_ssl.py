"""Every service over SASL_SSL (SCRAM, a CA made for the run) on a local broker of its own; a
wrong password and an untrusted CA each end a service in one line, quickly, not in a hang."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from benchmarks.traffic import collect, count_records, produce
from streams.kafka.local import LocalKafka
from streams.kafka.settings import KafkaSettings
from tests.integration.streams.kafka import system

N = 40


@pytest.fixture(scope="module")
def secure() -> Iterator[tuple[str, dict[str, str]]]:
    """(bootstrap, a client's IPR_KAFKA_* variables) of a SASL_SSL-only local broker."""
    with LocalKafka(sasl_ssl=True, heap="384m") as kafka:
        assert kafka.security is not None
        yield kafka.bootstrap, kafka.security.client_env(kafka.bootstrap, "ipr")


def service_env(client: dict[str, str], unique: str, tmp_path) -> dict[str, str]:
    topics = {k: f"{v}.{unique}" for k, v in {
        "IPR_PROMPTS_IN": "prompts.in", "IPR_PROMPTS_DLQ": "prompts.dlq",
        "IPR_DECISIONS": "router.decisions", "IPR_RESPONSES": "responses.out",
        "IPR_FEEDBACK": "feedback.quality", "IPR_CONTROL": "router.control"}.items()}
    return {**client, **topics,
            "IPR_ROUTER_APP_ID": f"router-{unique}", "IPR_ROUTER_WEB_ENABLED": "false",
            "IPR_ROUTER_DATA_DIR": str(tmp_path / "faust-router"),
            "IPR_WORKER_GROUP_PREFIX": f"worker-{unique}",
            "IPR_FEEDBACK_APP_ID": f"fb-{unique}",
            "IPR_FEEDBACK_DATA_DIR": str(tmp_path / "faust-fb"),
            "IPR_FEEDBACK_VERSIONS_DIR": str(tmp_path / "versions")}


def test_router_worker_and_feedback_route_and_answer_over_sasl_ssl(
    secure, unique, small_artifacts, data_dir, zeroeval, tmp_path, monkeypatch
):
    _, client = secure
    env = service_env(client, unique, tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = KafkaSettings()
    assert settings.kafka_security_protocol == "SASL_SSL"
    models, model_topics = system.prepare(settings, small_artifacts)
    events = system.prompt_events(zeroeval, unique, N)
    services = system.start(small_artifacts, data_dir / "zeroeval", models, tmp_path)

    def done(c) -> bool:
        return len(c.responses) >= N and len(c.feedback) >= N

    try:
        async def scenario():
            outputs = [settings.responses, settings.prompts_dlq, settings.feedback, *model_topics]
            collector = asyncio.create_task(collect(settings, outputs, unique, done, 240, settings))
            await produce(settings, settings.prompts_in, events, 0)
            return await collector

        got = asyncio.run(scenario())
        labels = asyncio.run(count_records(settings, f"fb-{unique}-labels-changelog", N, 60))
        assert all(s.alive() for s in services), [s.log_tail() for s in services]
        logs = {s.name: s.log_tail(100_000) for s in services}
    finally:
        for s in services:
            s.stop()
    assert len(got.routed) == N and len(got.responses) == N and not got.dead
    assert not any(r.error for r in got.responses.values())
    assert labels == N  # the feedback service joined every label to its decision
    assert f"from {client['IPR_KAFKA_BOOTSTRAP']} as group fb-{unique}" in logs["feedback"]
    assert "Traceback" not in "".join(logs.values())


@pytest.mark.parametrize(("command", "change", "why"), [
    (["router"], {"IPR_KAFKA_SASL_PASSWORD": "not-the-password"}, "SaslAuthenticationFailed"),
    (["worker", "--backend", "replay"], {"IPR_KAFKA_SSL_CAFILE": ""}, "CERTIFICATE_VERIFY_FAILED"),
    (["feedback"], {"IPR_KAFKA_SSL_CAFILE": ""}, "CERTIFICATE_VERIFY_FAILED"),
])
def test_a_wrong_password_or_an_untrusted_ca_ends_a_service_in_one_line(
    secure, unique, small_artifacts, data_dir, tmp_path, command, change, why
):
    _, client = secure
    env = {**service_env(client, unique, tmp_path), **change}
    env = {k: v for k, v in env.items() if v}  # "" unsets: the system's CAs do not know ours
    args = [*command, "--dataset" if "worker" in command else "--artifacts",
            str(data_dir / "zeroeval") if "worker" in command else str(small_artifacts)]
    began = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True,
                       text=True, timeout=60, env={**_base_env(), **env})
    took = time.monotonic() - began
    assert p.returncode == 2, p.stderr[-2000:]
    [line] = p.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot reach Kafka at {client['IPR_KAFKA_BOOTSTRAP']} over "
                           "SASL_SSL: ") and why in line
    assert took < 30


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("IPR_KAFKA_")}
