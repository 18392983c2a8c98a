"""Model speed benchmarks (not tests): ``python -m benchmarks model-bench`` prints and writes JSON.

- single-prompt scoring, warm: encoder + every adapter + the rule, in-process, for prompts of at
  most 64 tokens (p50, p90, p99 ms over the dataset's shortest real prompts);
- batched scoring throughput on the dataset's test prompts (prompts/s);
- optionally (``--train``) the wall time of ``ipr train`` with a warm embedding cache and of
  ``ipr add-model``, each as a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ipr_model.evaluation.stats import percentiles


def scoring(artifacts: Path, dataset: Path, batch_size: int = 32) -> dict:
    from ipr_model.serving.decision import decide
    from ipr_model.serving.scorer import Scorer
    from ipr_model.training.datasets import load_dataset

    scorer = Scorer.load(artifacts)
    data = load_dataset(dataset)
    test = data.split("test") if data.has_split("test") else data
    # Short prompts: real ones of at most 64 tokens by the encoder's own tokenizer.
    short = [t for t in data.prompts if scorer.encoder.count_tokens(t) <= 64][:200]
    for t in short[:10]:
        decide(scorer, scorer.score([t]), [0.2])
    single = []
    for t in short:
        t0 = time.perf_counter()
        decide(scorer, scorer.score([t]), [0.2])
        single.append((time.perf_counter() - t0) * 1000.0)
    texts = test.prompts
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        chunk = texts[i : i + batch_size]
        decide(scorer, scorer.score(chunk), [0.2] * len(chunk))
    seconds = time.perf_counter() - t0
    return {
        "single_prompt_ms": {**percentiles(single), "prompts": len(short), "max_tokens": 64},
        "batched": {
            "prompts": len(texts),
            "batch_size": batch_size,
            "prompts_per_s": round(len(texts) / seconds, 2),
            "mean_chars": round(float(np.mean([len(t) for t in texts])), 1),
        },
        "models": len(scorer.model_ids),
    }


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - t0, 2)


def training(dataset: Path) -> dict:
    """`ipr train` (cache warmed by a first run) and `ipr add-model`, as a user runs them."""
    ipr = [sys.executable, "-m", "streams.cli.model"]
    from ipr_model.training.datasets import load_dataset

    models = load_dataset(dataset).model_ids
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "full"
        subprocess.run([*ipr, "train", "--dataset", str(dataset), "--out", str(full)], check=True,
                       stdout=subprocess.DEVNULL)  # warms the embedding cache
        train_s = timed([*ipr, "train", "--dataset", str(dataset), "--out", str(full)])
        # add-model: artifacts without the last model, then add it
        from ipr_model.training.train import train

        part = Path(tmp) / "part"
        train(load_dataset(dataset).split("train").restrict(models[:-1]), part)
        add_s = timed([*ipr, "add-model", "--artifacts", str(part), "--dataset", str(dataset),
                       "--model", models[-1]])
    return {"train_warm_cache_s": train_s, "add_model_s": add_s, "added_model": models[-1]}


def recalibration(artifacts: Path, dataset: Path, n: int = 1000) -> dict:
    """Recalibrating one model on ``n`` new labels (its recorded quality on real prompts)."""
    from ipr_model.serving.scorer import Scorer
    from ipr_model.training.datasets import load_dataset
    from ipr_model.training.refit import recalibrate
    from ipr_model.training.train import embed

    data = load_dataset(dataset)
    model = Scorer.load(artifacts).model_ids[0]
    idx = np.random.default_rng(0).permutation(len(data))[:n]
    emb = embed(Path(artifacts) / "encoder", [data.prompts[i] for i in idx])
    y = data.quality[idx, data.model_ids.index(model)]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = recalibrate(artifacts, {model: (emb, y)}, Path(tmp) / "v2")
        seconds = time.perf_counter() - t0
    return {"labels": n, "model": model, "seconds": round(seconds, 2),
            "published": bool(res.version), "excludes_encoding": True}


def run(artifacts: Path, dataset: Path, train: bool = False, recal: bool = False) -> dict:
    """The scoring figures; with ``train``, the training times; with ``recal``, a 1,000-label
    recalibration's."""
    out = {"scoring": scoring(artifacts, dataset)}
    if train:
        out["training"] = training(dataset)
    if recal:
        out["recalibration"] = recalibration(artifacts, dataset)
    out["machine"] = {"cpus": os.cpu_count()}
    return out
