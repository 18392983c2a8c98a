"""The router's pure decision path: every record ends routed or dead-lettered, with the reason."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from ipr_model.serving.scorer import Scorer, Scores
from schemas import PromptRequest, encode
from schemas.vectors import unpack
from streams.router.routing import Record, route_records

IDS = ["big", "mid", "small"]


class TableScorer(Scorer):
    """The real decision logic (decision.decide) over fixed scores: big is best and dearest."""

    def __init__(self, feedback=None):
        self.model_ids = IDS
        self.calls = 0
        self.feedback = feedback  # [m]: what feedback added to each model's quality

    @property
    def version(self) -> str:
        return "v-test"

    def score(self, texts):
        self.calls += 1
        n = len(texts)
        q = np.tile([0.9, 0.8, 0.3], (n, 1))
        c = np.tile([10.0, 1.0, 0.1], (n, 1))
        emb = np.tile(np.linspace(-1, 1, 8, dtype=np.float32), (n, 1))
        fb = None if self.feedback is None else np.tile(self.feedback, (n, 1))
        return Scores(quality=q, cost=c, embeddings=emb, feedback=fb)


def rec(offset: int, value: bytes | None, key: bytes | None = None) -> Record:
    return Record("prompts.in", 0, offset, key, value)


def req(pid: str, **kw) -> bytes:
    return encode(PromptRequest(prompt_id=pid, text="hello", **kw))


def test_batch_routes_valid_and_dead_letters_invalid_in_one_scoring_call():
    scorer = TableScorer()
    records = [
        rec(0, req("a", tolerance=0.0)),
        rec(1, b"{nope"),
        rec(2, req("b", tolerance=0.5)),
        rec(3, orjson.dumps({"prompt_id": "c", "text": "x", "tolerance": 2})),
        rec(4, req("d", allowed_models=["ghost"])),
        rec(5, req("e")),  # default tolerance
        rec(6, req("f", tolerance=1.0, allowed_models=["big", "mid"])),
        rec(7, None),
    ]
    out = route_records(records, scorer, default_tolerance=1.0)
    assert scorer.calls == 1
    routed = {r.prompt.prompt_id: r for r in out.routed}
    # tau 0 -> best; 0.5 -> r = 0.9 - 0.5*0.6 = 0.6 -> mid; default 1.0 -> cheapest; allowed -> mid
    assert {k: r.prompt.model_id for k, r in routed.items()} == {
        "a": "big", "b": "mid", "e": "small", "f": "mid"
    }
    assert routed["b"].topic == "prompts.routed.mid" and routed["b"].key == b"b"
    assert routed["b"].prompt.threshold == pytest.approx(0.6)
    assert routed["e"].prompt.tolerance == 1.0
    assert {d.offset: d.error_kind for d in out.dead} == {
        1: "invalid_json", 3: "validation", 4: "unknown_model", 7: "empty"
    }
    assert all(d.source_topic == "prompts.in" and d.partition == 0 for d in out.dead)
    assert len(out.routed) + len(out.dead) == len(records)
    # the decision is the routed prompt without text, with the embedding for the feedback loop
    dec = routed["a"].decision
    assert dec.model_id == "big" and "text" not in dec.model_dump()
    assert np.allclose(unpack(dec.embedding), np.linspace(-1, 1, 8), atol=1e-3)
    assert routed["a"].prompt.router_version == "v-test"


def test_batch_of_only_bad_records_never_scores():
    scorer = TableScorer()
    out = route_records([rec(0, b"[]"), rec(1, b"")], scorer, default_tolerance=0.2)
    assert scorer.calls == 0 and len(out.dead) == 2 and not out.routed


def test_a_decision_names_what_feedback_added_to_each_model_it_moved():
    plain = route_records([rec(0, req("a", tolerance=0.5))], TableScorer(), 0.5).routed[0]
    assert plain.prompt.feedback_adjustment is None and plain.decision.feedback_adjustment is None
    # mid's 0.8 includes -0.25 from feedback; big and small were not moved
    out = route_records([rec(0, req("a", tolerance=0.5))], TableScorer([0.0, -0.25, 0.0]), 0.5)
    r = out.routed[0]
    assert r.prompt.feedback_adjustment == r.decision.feedback_adjustment == {"mid": -0.25}


def test_unhealthy_models_are_left_out_keep_their_scores_and_never_leave_none():
    records = [
        rec(0, req("a", tolerance=0.0)),
        rec(1, req("b", tolerance=0.0, allowed_models=["big", "small"])),
        rec(2, req("c", tolerance=0.0, allowed_models=["big"])),
        rec(3, req("d", tolerance=0.0, allowed_models=["mid"])),
    ]
    out = route_records(records, TableScorer(), 0.2, unhealthy={"big"})
    assert not out.dead
    got = {r.prompt.prompt_id: r.prompt for r in out.routed}
    assert got["a"].model_id == "mid" and got["a"].unhealthy_models == ["big"]
    assert got["a"].predicted_quality["big"] == pytest.approx(0.9)  # still explained
    assert got["b"].model_id == "small" and got["b"].unhealthy_models == ["big"]
    # every candidate unhealthy: routed anyway (its worker answers with an error), not lost
    assert got["c"].model_id == "big" and got["c"].unhealthy_models is None
    assert got["d"].model_id == "mid" and got["d"].unhealthy_models is None
    assert {r.decision.prompt_id: r.decision.unhealthy_models for r in out.routed}["a"] == ["big"]
    healthy = route_records(records[:1], TableScorer(), 0.2)
    assert healthy.routed[0].prompt.model_id == "big"
    assert healthy.routed[0].prompt.unhealthy_models is None


def test_a_key_that_is_not_the_prompt_id_is_dead_lettered_and_a_missing_key_is_fine():
    records = [rec(0, req("a"), key=b"a"), rec(1, req("b"), key=b"tenant-7"), rec(2, req("c"))]
    out = route_records(records, TableScorer(), 0.2)
    assert sorted(r.prompt.prompt_id for r in out.routed) == ["a", "c"]
    [dead] = out.dead
    assert (dead.offset, dead.error_kind, dead.key) == (1, "key_mismatch", "tenant-7")
    assert "prompt_id" in dead.error


class PoisonScorer(TableScorer):
    """Fails a whole scoring call when any text is the poison (a tokenizer or numerical error on
    one strange prompt)."""

    def score(self, texts):
        if any("POISON" in t for t in texts):
            self.calls += 1
            raise FloatingPointError("overflow in the encoder")
        return super().score(texts)


def test_a_batch_that_fails_to_score_is_routed_record_by_record_and_only_the_culprit_dies():
    scorer = PoisonScorer()
    texts = ["one", "two", "POISON", "four"]
    records = [
        rec(i, encode(PromptRequest(prompt_id=f"p{i}", text=t))) for i, t in enumerate(texts)
    ]
    out = route_records(records, scorer, 0.2)
    assert sorted(r.prompt.prompt_id for r in out.routed) == ["p0", "p1", "p3"]
    [dead] = out.dead
    assert (dead.offset, dead.error_kind) == (2, "routing_error")
    assert dead.error == "scoring failed: FloatingPointError: overflow in the encoder"
    assert scorer.calls == 5  # the batch once, then each record alone
    # the next batch is routed as usual: nothing is wedged
    after = route_records([rec(9, req("p9"))], scorer, 0.2)
    assert [r.prompt.prompt_id for r in after.routed] == ["p9"] and not after.dead


def test_the_ranking_is_the_feasible_healthy_allowed_models_the_choice_first():
    records = [
        rec(0, req("all", tolerance=1.0)),
        rec(1, req("best", tolerance=0.0)),
        rec(2, req("allowed", tolerance=1.0, allowed_models=["big", "mid"])),
    ]
    got = {r.prompt.prompt_id: r for r in route_records(records, TableScorer(), 0.2).routed}
    assert got["all"].prompt.ranking == ["small", "mid", "big"]  # cheapest first
    assert got["best"].prompt.ranking == ["big"]  # tau 0: nothing to fail over to
    assert got["allowed"].prompt.ranking == ["mid", "big"]
    assert got["all"].decision.ranking == ["small", "mid", "big"]  # the decision explains it
    assert got["all"].prompt.attempt == 1 and got["all"].prompt.failed is None
    sick = route_records(records[:1], TableScorer(), 0.2, unhealthy={"mid"}).routed[0]
    assert sick.prompt.ranking == ["small", "big"] and sick.prompt.unhealthy_models == ["mid"]


def test_a_chat_request_goes_through_whole_and_is_scored_by_its_newest_user_message():
    class Seen(TableScorer):
        def score(self, texts):
            self.texts = list(texts)
            return super().score(texts)

    scorer = Seen()
    chat = PromptRequest(
        prompt_id="c", messages=[{"role": "system", "content": "be brief"},
                                 {"role": "user", "content": "what is 2+2?"}],
        params={"temperature": 0.2, "max_tokens": 9}, session_id="s1",
        reply_to={"topic": "gateway.replies.x"}, tolerance=0.0)
    (routed,) = route_records([rec(0, encode(chat))], scorer, default_tolerance=1.0).routed
    assert scorer.texts == ["what is 2+2?"]
    p = routed.prompt
    assert (p.messages, p.params, p.session_id) == (chat.messages, chat.params, "s1")
    assert p.reply_to.topic == "gateway.replies.x" and p.scored_view == "last_user"
    assert routed.decision.scored_view == "last_user"
    assert "messages" not in routed.decision.model_dump()
