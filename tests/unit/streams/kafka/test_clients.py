"""Client configuration comes from one place, and settings that cannot work are refused."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from aiokafka.errors import UnknownTopicOrPartitionError
from pydantic import ValidationError

from streams.kafka.clients import aiokafka_config, faust_config, start_reader
from streams.kafka.settings import KafkaSettings


def test_plaintext_is_the_bootstrap_only():
    assert aiokafka_config("h:1") == {"bootstrap_servers": "h:1"}
    cfg = aiokafka_config(KafkaSettings(kafka_bootstrap="a:1,b:2"))
    assert cfg == {"bootstrap_servers": "a:1,b:2", "security_protocol": "PLAINTEXT"}
    faust = faust_config(KafkaSettings(kafka_bootstrap="a:1, b:2"))
    assert faust["broker"] == ["kafka://a:1", "kafka://b:2"]
    assert faust["broker_credentials"] is None


def test_faust_replicates_its_topics_like_the_project_creates_them():
    assert faust_config(KafkaSettings())["topic_replication_factor"] == 1
    replicated = KafkaSettings(topic_replication=3)
    assert faust_config(replicated)["topic_replication_factor"] == 3


def test_sasl_ssl_carries_the_mechanism_the_credentials_and_a_verifying_context():
    s = KafkaSettings(kafka_bootstrap="h:1", kafka_security_protocol="SASL_SSL",
                      kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="u",
                      kafka_sasl_password="s3cret-pw")
    cfg = aiokafka_config(s)
    assert (cfg["security_protocol"], cfg["sasl_mechanism"]) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (cfg["sasl_plain_username"], cfg["sasl_plain_password"]) == ("u", "s3cret-pw")
    ctx = cfg["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    creds = faust_config(s)["broker_credentials"]
    assert creds.username == "u" and creds.mechanism.value == "SCRAM-SHA-512"
    assert creds.protocol.value == "SASL_SSL"
    assert "s3cret-pw" not in repr(s) + str(s)  # the password is a secret


def test_sasl_plaintext_has_no_tls():
    s = KafkaSettings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u",
                      kafka_sasl_password="p")
    assert "ssl_context" not in aiokafka_config(s)


@pytest.mark.parametrize(("kw", "message"), [
    ({"kafka_security_protocol": "SASL_SSL"}, "needs IPR_KAFKA_SASL_USERNAME and"),
    ({"kafka_security_protocol": "TLS"}, "Input should be 'PLAINTEXT', 'SSL'"),
    ({"kafka_ssl_cafile": "/no/such/ca.pem"}, "IPR_KAFKA_SSL_CAFILE: no file at /no/such/ca.pem"),
    ({"kafka_ssl_certfile": __file__}, "IPR_KAFKA_SSL_CERTFILE and IPR_KAFKA_SSL_KEYFILE go"),
    ({"kafka_sasl_mechanism": "GSSAPI"}, "Input should be 'PLAIN', 'SCRAM-SHA-256'"),
])
def test_settings_that_cannot_connect_are_refused_with_what_is_missing(kw, message):
    with pytest.raises(ValidationError, match=message):
        KafkaSettings(**kw)


def test_unprefixed_variables_are_not_read(monkeypatch):
    monkeypatch.setenv("CONTROL", "oops")
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "oops:1")
    s = KafkaSettings()
    assert (s.control, s.kafka_bootstrap) == ("router.control", "127.0.0.1:9092")
    monkeypatch.setenv("IPR_CONTROL", "mine")
    assert KafkaSettings().control == "mine"


def test_a_bootstrap_is_given_only_when_set_and_not_empty(monkeypatch):
    """What makes the lab use an existing cluster instead of starting a local broker."""
    monkeypatch.delenv("IPR_KAFKA_BOOTSTRAP", raising=False)
    assert KafkaSettings().given_bootstrap is None
    monkeypatch.setenv("IPR_KAFKA_BOOTSTRAP", "")
    assert KafkaSettings().given_bootstrap is None
    monkeypatch.setenv("IPR_KAFKA_BOOTSTRAP", "127.0.0.1:9092")  # the default, but given
    assert KafkaSettings().given_bootstrap == "127.0.0.1:9092"


class _Consumer:
    """Starts only once ``unknown_for`` consumers have failed: a broker not yet listing a topic."""

    built: list[_Consumer] = []

    def __init__(self, unknown_for: int) -> None:
        self.fails = len(self.built) < unknown_for
        self.started = self.stopped = False
        self.built.append(self)

    async def start(self) -> None:
        if self.fails:
            raise UnknownTopicOrPartitionError()
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def subscription(self) -> set[str]:
        return {"router.spend"}


def test_a_reader_is_retried_until_the_topic_is_known_and_failed_ones_are_stopped():
    _Consumer.built = []
    consumer = asyncio.run(start_reader(lambda: _Consumer(unknown_for=2)))
    assert consumer is _Consumer.built[2] and consumer.started and not consumer.stopped
    assert [c.stopped for c in _Consumer.built[:2]] == [True, True]


def test_a_topic_never_known_is_named_after_the_timeout():
    _Consumer.built = []
    with pytest.raises(UnknownTopicOrPartitionError, match=r"\['router.spend'\] not in the clus"):
        asyncio.run(start_reader(lambda: _Consumer(unknown_for=10**9), timeout=0.05))
    assert all(c.stopped for c in _Consumer.built)
