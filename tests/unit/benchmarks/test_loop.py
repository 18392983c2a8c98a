"""When the feedback loop's harness stops reading a round, and what it counts as lost."""

from __future__ import annotations

from benchmarks.loop import all_back, lost
from benchmarks.traffic import Collected
from schemas import DeadLetter, ModelResponse, QualityFeedback, RoutedPrompt

MODEL = "m1"


def routed(pid: str) -> RoutedPrompt:
    return RoutedPrompt(prompt_id=pid, text="t", model_id=MODEL, tolerance=0.1, threshold=0.5,
                        predicted_quality={MODEL: 0.5}, estimated_cost_usd={MODEL: 0.001},
                        router_version="v", routing_latency_ms=1.0, routed_at=0.0)


def response(pid: str, error: str | None = None) -> ModelResponse:
    return ModelResponse(prompt_id=pid, model_id=MODEL, text="" if error else "a", tokens_in=1,
                         tokens_out=0 if error else 1, cost_usd=0.0, latency_ms=1.0,
                         error=error, router_version="v")


def label(pid: str) -> QualityFeedback:
    return QualityFeedback(prompt_id=pid, model_id=MODEL, quality=1.0, source="replay")


def dead(pid: str) -> DeadLetter:
    return DeadLetter.build(source_topic="prompts.in", partition=0, offset=0,
                            key=pid.encode(), value=b"x", error="bad", error_kind="schema")


def events(n: int) -> list[tuple[bytes, bytes]]:
    return [(f"r:{i}".encode(), b"{}") for i in range(n)]


def round_of(n: int) -> Collected:
    """``n`` prompts, each routed, answered and labelled."""
    c = Collected()
    for i in range(n):
        pid = f"r:{i}"
        c.routed[pid], c.responses[pid], c.feedback[pid] = routed(pid), response(pid), label(pid)
    return c


def test_a_round_is_not_over_while_a_labelled_prompt_has_no_response_yet() -> None:
    # The worker writes the response and the label to two topics: the label can be read first.
    c = round_of(245)
    del c.responses["r:7"]
    # the old rule (every routed prompt labelled) stopped here and counted r:7 lost
    assert len(c.routed) >= 245 and len(c.feedback) >= len(c.routed)
    assert not all_back(c, 245)
    assert lost(c, events(245)) == 1  # what a deadline would then report: honestly not back
    c.responses["r:7"] = response("r:7")
    assert all_back(c, 245)
    assert lost(c, events(245)) == 0


def test_a_round_waits_for_every_label_and_every_prompt() -> None:
    c = round_of(10)
    del c.feedback["r:3"]
    assert not all_back(c, 10)
    assert not all_back(round_of(10), 11)  # one prompt neither routed nor dead-lettered yet


def test_an_error_answer_has_no_label_and_a_dead_lettered_prompt_no_answer() -> None:
    c = round_of(4)
    c.responses["r:1"] = response("r:1", error="provider down")
    del c.feedback["r:1"]  # the worker sends no label with an error
    for pid in ("r:2", "r:3"):
        del c.routed[pid], c.responses[pid], c.feedback[pid]
        c.dead[pid] = dead(pid)
    assert all_back(c, 4)
    assert lost(c, events(4)) == 0


def test_lost_counts_prompt_ids_not_records() -> None:
    c = round_of(3)
    c.response_dupes += 1  # a prompt answered twice is one prompt back
    c.dead["r:0"] = dead("r:0")  # dead-lettered and answered: still one
    del c.responses["r:2"]
    assert lost(c, events(3)) == 1
