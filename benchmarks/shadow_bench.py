"""What a version in shadow costs the router per batch, in process (no Kafka):
``python -m benchmarks shadow-bench --artifacts A --dataset D``.

The live path (:func:`streams.router.routing.route_records`) on batches of the router's size,
alone and followed by the shadow's (:func:`streams.router.shadow.shadow_decisions`), for a
candidate that shares the live encoder (a recalibration: one model's correction, the usual case)
and for one that does not (its encoder runs again). Rounds alternate, and the median per-batch
milliseconds of each are reported, to cancel a shared machine's drift.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ipr_model.serving.scorer import Scorer
from ipr_model.training.datasets import load_dataset
from ipr_model.training.refit import recalibrate
from schemas import PromptRequest, encode
from streams.router.routing import Record, route_records
from streams.router.shadow import shadow_decisions


def batches(texts: list[str], size: int) -> list[list[Record]]:
    recs = [Record("prompts.in", 0, i, f"p{i}".encode(),
                   encode(PromptRequest(prompt_id=f"p{i}", text=t))) for i, t in enumerate(texts)]
    return [recs[i:i + size] for i in range(0, len(recs), size)]


def per_batch_ms(work, chunks) -> float:
    t0 = time.perf_counter()
    for chunk in chunks:
        work(chunk)
    return (time.perf_counter() - t0) * 1000.0 / len(chunks)


def run(artifacts: Path, dataset: Path, n: int, batch: int, rounds: int) -> dict:
    live = Scorer.load(artifacts)
    texts = load_dataset(dataset).split("test").prompts[:n]
    model = live.model_ids[0]  # a candidate with one model's correction
    emb = live.score(texts[:50]).embeddings
    with tempfile.TemporaryDirectory() as tmp:
        recalibrate(artifacts, {model: (emb, np.zeros(len(emb)))}, Path(tmp) / "candidate")
        shared = Scorer.load(Path(tmp) / "candidate", reuse=live)
        own = Scorer.load(Path(tmp) / "candidate")  # a separate encoder session
        chunks = batches(texts, batch)
        alone = lambda c: route_records(c, live, 0.2)  # noqa: E731
        cases = {
            "live_only": alone,
            "shadow_shared_encoder": lambda c: shadow_decisions(alone(c).routed, shared, live),
            "shadow_own_encoder": lambda c: shadow_decisions(alone(c).routed, own, live),
        }
        for work in cases.values():
            per_batch_ms(work, chunks[:5])  # warm up
        got: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(rounds):
            for k, work in cases.items():
                got[k].append(per_batch_ms(work, chunks))
    med = {k: statistics.median(v) for k, v in got.items()}
    return {"prompts": len(texts), "batch_size": batch, "rounds": rounds, "models":
            len(live.model_ids), "ms_per_batch": {k: round(v, 2) for k, v in med.items()},
            "overhead": {k: round(med[k] / med["live_only"] - 1, 3) for k in med
                         if k != "live_only"}}
