"""Only to models that someone serves: artifacts of many models, replay workers for two. Every
prompt goes to one of the two; a worker killed mid-traffic takes its model out of routing once
its announcement expires, and a worker started again brings it back."""

from __future__ import annotations

import asyncio

from benchmarks.processes import Service
from ipr_model.serving.scorer import Scorer
from schemas import PromptRequest, encode
from tests.integration.streams.router.test_router import (
    TEXT_CHARS,
    prepare_with_control,
    start_router,
    stream_and_collect,
)
from tests.waits import wait_for_log

N = 60
TTL_S = 6.0


def test_prompts_go_only_to_models_a_live_worker_serves(
    kafka_bootstrap, unique, small_artifacts, data_dir, texts, tmp_path, monkeypatch
):
    control, settings, model_topics = prepare_with_control(
        kafka_bootstrap, unique, small_artifacts, monkeypatch)
    ids = Scorer.load(small_artifacts).model_ids
    a, b = ids[0], ids[-1]
    sample = [t[:TEXT_CHARS] for t in texts[:N]]

    def worker(model: str) -> Service:
        return Service(f"worker-{model}", ["worker", "--backend", "replay", "--dataset",
                                          str(data_dir / "zeroeval"), "--model", model], {
            "IPR_KAFKA_BOOTSTRAP": kafka_bootstrap, "IPR_WORKER_GROUP_PREFIX": f"w-{unique}",
            "IPR_WORKER_SERVING_TTL_S": str(TTL_S),
        }, tmp_path)

    def stream(run: str, tolerance: float):
        events = [PromptRequest(prompt_id=f"{run}:{i}", text=t, tolerance=tolerance)
                  for i, t in enumerate(sample)]
        got = asyncio.run(stream_and_collect(
            kafka_bootstrap, settings, run, [(e.prompt_id.encode(), encode(e)) for e in events],
            model_topics, N))
        assert len(got.routed) == N and not got.dead
        return list(got.routed.values())

    router = start_router("router", small_artifacts, kafka_bootstrap, unique, tmp_path)
    workers = {a: worker(a), b: worker(b)}
    try:
        wait_for_log(router, f"models served by a live worker: 2 of {len(ids)}")
        both = stream(f"{unique}-both", 0.5)
        workers[b].kill()  # no tombstone: its announcement expires after TTL_S
        # (once already, when the first of the two announced)
        wait_for_log(router, f"models served by a live worker: 1 of {len(ids)}", count=2)
        one = stream(f"{unique}-one", 0.5)
        workers[b] = worker(b)
        wait_for_log(router, f"models served by a live worker: 2 of {len(ids)}", count=2)
        back = stream(f"{unique}-back", 0.5)
        assert router.alive(), router.log_tail()
    finally:
        for w in workers.values():
            w.stop()
        router.stop()

    others = sorted(set(ids) - {a, b})
    assert {r.model_id for r in both} <= {a, b}
    assert all(sorted(r.unserved_models) == others for r in both)
    assert {r.model_id for r in one} == {a}
    assert all(sorted(r.unserved_models) == sorted({*others, b}) for r in one)
    assert {r.model_id for r in back} <= {a, b}
    assert all(sorted(r.unserved_models) == others for r in back)  # b is a candidate again
