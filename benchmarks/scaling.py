"""What the machine allows, and how scoring cost grows (``python -m benchmarks scaling``;
benchmarks, not tests; ``make bench`` writes ``build/scaling.json`` and ``build/scaling.png``).

- The physical limit: the encoder's FLOPs as a function of a prompt's tokens, counted from its
  ONNX graph (every weight matmul costs 2·K·N per token; each attention layer 4·T²·d), the
  machine's measured matmul rate in onnxruntime for fp32 and for int8 (MatMulInteger) at the
  encoder's shapes, and so the prompts/s the hardware allows for a dataset's token lengths.
- Per-prompt scoring time (adapters, calibration, costs, rule; the encoder excluded) against the
  number of candidate models (cards cloned from the artifact's: synthetic, fine for timing) and
  against the kNN memory's size (rows resampled from the real memory, with jitter).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ipr_model.evaluation.stats import percentiles

MODEL_COUNTS = (28, 100, 300)
MEMORY_SIZES = (2_000, 20_000, 100_000)
WEIGHT_MATMULS = ("MatMul", "MatMulInteger", "Gemm")


def graph_costs(onnx_path: Path) -> dict:
    """From the encoder's graph: FLOPs per token of its weight matmuls, its attention layers
    (Softmax nodes) and width (the widest weight's input side is the hidden size)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    weights = {i.name: numpy_helper.to_array(i).shape for i in graph.initializer}
    per_token, hidden = 0, 0
    for node in graph.node:
        shape = weights.get(node.input[1]) if node.op_type in WEIGHT_MATMULS else None
        if shape is not None and len(shape) == 2:
            per_token += 2 * shape[0] * shape[1]
            hidden = max(hidden, min(shape))
    layers = sum(n.op_type == "Softmax" for n in graph.node)
    return {"linear_flops_per_token": per_token, "attention_layers": layers, "hidden": hidden}


def prompt_flops(tokens: np.ndarray, costs: dict) -> np.ndarray:
    """FLOPs of one encoder pass over each prompt of ``tokens`` tokens: the linear layers plus
    attention's two T×T×d products per layer (QKᵀ and the weighted sum of V)."""
    t = np.asarray(tokens, np.float64)
    return t * costs["linear_flops_per_token"] + costs["attention_layers"] * 4 * t**2 * costs[
        "hidden"]


def _matmul_model(m: int, k: int, n: int, int8: bool):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if int8:
        w = numpy_helper.from_array(rng.integers(-127, 127, (k, n), dtype=np.int8), "W")
        node = helper.make_node("MatMulInteger", ["X", "W"], ["Y"])
        x_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        w = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "W")
        node = helper.make_node("MatMul", ["X", "W"], ["Y"])
        x_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph(
        [node], "mm", [helper.make_tensor_value_info("X", x_type, [m, k])],
        [helper.make_tensor_value_info("Y", y_type, [m, n])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def matmul_rate(int8: bool, m: int = 256, k: int = 384, n: int = 1536, seconds: float = 2.0,
                threads: int | None = None) -> float:
    """GFLOP/s (int8: GOP/s) of onnxruntime's matmul at the encoder's feed-forward shape, on
    ``threads`` intra-op threads (default: every core)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    sess = ort.InferenceSession(_matmul_model(m, k, n, int8), opts,
                                providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    x = (rng.integers(0, 255, (m, k), dtype=np.uint8) if int8
         else rng.standard_normal((m, k)).astype(np.float32))
    for _ in range(5):
        sess.run(None, {"X": x})
    runs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sess.run(None, {"X": x})
        runs += 1
    return 2.0 * m * k * n * runs / (time.perf_counter() - t0) / 1e9


def physical_limit(artifacts: Path, texts: list[str]) -> dict:
    """The prompts/s the machine's matmul rates allow for these texts, against the encoder's
    measured rate on them (one run per text, as the router's single-prompt path)."""
    from ipr_model.serving.encoder import OnnxEncoder

    enc = OnnxEncoder.load(Path(artifacts) / "encoder")
    costs = graph_costs(Path(artifacts) / "encoder" / "model.onnx")
    tokens = np.array([min(enc.count_tokens(t), enc.max_length) for t in texts])
    total = float(prompt_flops(tokens, costs).sum())
    rates = {"fp32": matmul_rate(False), "int8": matmul_rate(True)}
    enc.encode(texts[:8])
    t0 = time.perf_counter()
    for t in texts:
        enc.encode([t])
    achieved = len(texts) / (time.perf_counter() - t0)
    limits = {p: len(texts) / (total / (r * 1e9)) for p, r in rates.items()}
    return {
        "encoder": {**costs, "prompts": len(texts), "mean_tokens": round(float(tokens.mean()), 1),
                    "mean_gflop_per_prompt": round(total / len(texts) / 1e9, 3)},
        "matmul_gflops": {p: round(r, 1) for p, r in rates.items()},
        "limit_prompts_per_s": {p: round(v, 1) for p, v in limits.items()},
        "encoder_prompts_per_s": round(achieved, 1),
        "achieved_fraction": {p: round(achieved / v, 3) for p, v in limits.items()},
    }


def op_profile(artifacts: Path, texts: list[str]) -> dict:
    """Where one encoder pass spends its time, per op type (onnxruntime's node profile, one run
    per text as served), and the tokenizer's share."""
    from ipr_model.serving.encoder import OnnxEncoder

    enc = OnnxEncoder.load(Path(artifacts) / "encoder", profile=True)
    t0 = time.perf_counter()
    for t in texts:
        enc._tokenizer.encode(t)
    tokenizer_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in texts:
        enc.encode([t])
    total_s = time.perf_counter() - t0
    trace = Path(enc._session.end_profiling())
    by_op: dict[str, float] = {}
    for ev in json.loads(trace.read_text()):
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
            op = ev["args"].get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + ev["dur"] / 1e6
    trace.unlink(missing_ok=True)
    nodes_s = sum(by_op.values())
    ms = 1000 / len(texts)
    ranked = sorted(by_op.items(), key=lambda kv: -kv[1])
    return {
        "prompts": len(texts), "ms_per_prompt": round(total_s * ms, 3),
        "tokenizer_ms": round(tokenizer_s * ms, 3), "nodes_ms": round(nodes_s * ms, 3),
        "by_op_ms": {op: round(v * ms, 3) for op, v in ranked},
    }


def _time_scoring(scorer, emb: np.ndarray, texts: list[str], reps: int) -> dict:
    """Per-prompt ms of the scorer's path after the encoder (adapters, calibration, costs, the
    rule) for one prompt, and per prompt within a batch of 32."""
    from ipr_model.serving.decision import decide

    def once(e, t):
        decide(scorer, scorer.score_embeddings(e, t), [0.2] * len(t))

    once(emb[:1], texts[:1])
    single = []
    for i in range(reps):
        j = i % len(texts)
        t0 = time.perf_counter()
        once(emb[j : j + 1], texts[j : j + 1])
        single.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    for _ in range(max(1, reps // 32)):
        once(emb[:32], texts[:32])
    batched = (time.perf_counter() - t0) * 1000 / (max(1, reps // 32) * 32)
    return {"single_ms": percentiles(single), "batched_ms_per_prompt": round(batched, 3)}


def growth(artifacts: Path, texts: list[str], reps: int = 200) -> dict:
    """Scoring time against the number of models and against the kNN memory's size."""
    from ipr_model.serving.adapters import unit
    from ipr_model.serving.scorer import Scorer

    sc = Scorer.load(artifacts)
    emb = sc.encoder.encode(texts[:64])
    texts = texts[:64]
    out = {"models": [], "memory": []}
    for m in MODEL_COUNTS:
        cards = [replace(sc.cards[j % len(sc.cards)], id=f"m{j}") for j in range(m)]
        clone = Scorer(sc.manifest, sc.encoder, cards)
        out["models"].append({"models": m, **_time_scoring(clone, emb, texts, reps)})
    mem = sc.cards[0].adapter.memory
    rng = np.random.default_rng(0)
    for n in MEMORY_SIZES:
        rows = mem[rng.integers(0, len(mem), n)]
        big = unit(rows + rng.normal(0, 0.02, rows.shape).astype(np.float32))
        cards = [replace(c, adapter=replace(c.adapter, memory=big,
                                            knn_y=rng.random(n).astype(np.float32)))
                 for c in sc.cards]
        clone = Scorer(sc.manifest, sc.encoder, cards)
        out["memory"].append({"rows": n, "models": len(cards),
                              **_time_scoring(clone, emb, texts, reps // 2)})
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, x, label in ((axes[0], "models", "models", "candidate models"),
                              (axes[1], "memory", "rows", "kNN memory rows")):
        pts = result["growth"][key]
        xs = [p[x] for p in pts]
        ax.plot(xs, [p["single_ms"]["p50"] for p in pts], "o-", label="one prompt, p50")
        ax.plot(xs, [p["batched_ms_per_prompt"] for p in pts], "s-",
                label="batch of 32, per prompt")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("ms per prompt (encoder excluded)")
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def run(artifacts: Path, dataset: Path) -> dict:
    """The physical limit, the encoder's profile and the growth, on the dataset's test prompts."""
    from ipr_model.training.datasets import load_dataset

    data = load_dataset(dataset)
    texts = (data.split("test") if data.has_split("test") else data).prompts
    return {"limit": physical_limit(artifacts, texts),
            "profile": op_profile(artifacts, texts[:200]),
            "growth": growth(artifacts, texts),
            "machine": {"cpus": os.cpu_count()}}
