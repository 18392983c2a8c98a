"""The Faust app of the router: the one object everything imports, and its topics.

Importing this module connects to nothing and loads no model: settings are read from the
environment (``IPR_``), and the scorer is loaded when the worker starts.
"""

from __future__ import annotations

import faust

from streams.settings import RouterSettings

settings = RouterSettings()

app = faust.App(
    settings.app_id,
    broker=f"kafka://{settings.kafka_bootstrap}",
    datadir=str(settings.data_dir),
    store="memory://",
    topic_partitions=settings.topic_partitions,
    topic_allow_declare=True,
    consumer_auto_offset_reset="earliest",
    broker_commit_every=1000,
    broker_commit_interval=1.0,
    producer_acks=-1,
    producer_linger_ms=1,
    web_enabled=settings.web_enabled,
    web_port=settings.web_port,
    web_bind=settings.web_bind,
    key_serializer="raw",
    value_serializer="raw",
)

# Raw bytes in: decoding happens per event inside the agent, so bad input is dead-lettered with
# its reason instead of throwing into the stream (where Faust would acknowledge and lose it).
prompts_in = app.topic(settings.prompts_in, key_type=bytes, value_type=bytes)
dlq = app.topic(settings.prompts_dlq, key_type=bytes, value_type=bytes)
decisions = app.topic(settings.decisions, key_type=bytes, value_type=bytes)

_model_topics: dict[str, faust.TopicT] = {}


def model_topic(name: str) -> faust.TopicT:
    """The topic object for a ``prompts.routed.<model>`` name, created once."""
    if name not in _model_topics:
        _model_topics[name] = app.topic(name, key_type=bytes, value_type=bytes)
    return _model_topics[name]
