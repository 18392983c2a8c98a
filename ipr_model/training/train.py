"""Training: export the encoder, embed the train split (cached), fit adapters, calibrations and cost
models, and write a verified artifact directory. ``add_model`` trains one more adapter in place.
When many train prompts are longer than the encoder's window, ``train`` fits everything on two cuts
of them and keeps the one that routes the train split better (``cut_candidates``, ``choose_cut``).

The train prompts become the shared kNN memory (``memory/`` at the artifact root, see cards.py).
``add_model`` maps the new model's dataset onto that memory by the sha256 of each prompt's text
(any order; duplicates averaged): when every memory prompt is in the dataset, the new adapter
stores just its labels for the memory rows; when some are missing, it keeps its own memory (its
train prompts' embeddings, float16, inside its adapter.npz). Either way no existing file changes."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ipr_model.artifacts.manifest import ENCODER_DIR, Manifest, read_manifest, write_manifest
from ipr_model.errors import ArtifactError
from ipr_model.serving.adapters import EQUAL_PARTS, unit
from ipr_model.serving.calibration import Calibration, fit_calibration, shrink
from ipr_model.serving.cards import ModelCard, load_memory, memory_hashes, save_memory
from ipr_model.serving.costs import fit_cost_model, prompt_tokens
from ipr_model.serving.encoder import OnnxEncoder
from ipr_model.serving.joint import PROMPT_SIDE, PromptSide
from ipr_model.serving.knn_index import INDEX_MIN_ROWS, KnnIndex
from ipr_model.serving.texts import text_sha256
from ipr_model.training.datasets import Dataset
from ipr_model.training.export import DEFAULT_PRECISION, cached_export
from ipr_model.training.fitting import (
    DEFAULT_CONFIG,
    PART_WEIGHTS,
    AdapterConfig,
    config_dict,
    train_adapters,
)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def embed(encoder_dir: Path, texts: list[str], progress: Progress | None = None) -> np.ndarray:
    """Embeddings of ``texts`` by the encoder in ``encoder_dir``, through the on-disk cache."""
    from ipr_model.training.embed_cache import EmbeddingCache, encode_cached

    enc = OnnxEncoder.load(encoder_dir)
    cb = (lambda done: progress("encode", done, len(texts))) if progress else None
    with EmbeddingCache.for_encoder(enc) as cache:
        return encode_cached(enc, texts, cache, progress=cb)


def memory_rows(texts: list[str], hashes: list[str]) -> np.ndarray | None:
    """Each text's row in a memory of prompt hashes (-1: not in it), or None when some memory
    prompt is not among ``texts`` (its label would be unknown)."""
    index = {h: i for i, h in enumerate(hashes)}
    row = np.array([index.get(text_sha256(t), -1) for t in texts], dtype=np.int64)
    return row if np.bincount(row[row >= 0], minlength=len(hashes)).all() else None


SHRINK_GRID = (1.0, 1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32)


@dataclass(frozen=True)
class Blend:
    """How an artifact turns its adapters' parts into predicted quality: the weights of (mlp,
    ridge, kNN) and the weight pulling each calibration toward its model's mean (calibration.py).
    Chosen once by ``train``, kept by ``add-model`` (the manifest carries it)."""

    parts: tuple[float, ...] = EQUAL_PARTS  # mlp, ridge, kNN, joint
    shrink: float = 1.0

    @classmethod
    def from_manifest(cls, data: dict) -> Blend:
        parts = tuple(data.get("part_weights", EQUAL_PARTS))  # artifacts before blends: equal
        parts = parts + (0.0,) * (4 - len(parts))  # before the joint part: three parts
        return cls(parts, float(data.get("calibration_shrink", 1.0)))

    def as_manifest(self) -> dict:
        return {"part_weights": list(self.parts), "calibration_shrink": self.shrink}


def calibrate(raw: np.ndarray, quality: np.ndarray) -> list[Calibration]:
    """Each model's calibration of its blended out-of-sample predictions ``raw`` [n, M]."""
    return [fit_calibration(raw[:, j], quality[:, j]) for j in range(quality.shape[1])]


def select_blend(
    oof_parts: np.ndarray, est_cost: np.ndarray, train_set: Dataset, ids: list[str], cols: list[int]
) -> tuple[Blend, float]:
    """The blend of ``PART_WEIGHTS`` x ``SHRINK_GRID`` whose out-of-sample predictions route the
    train split best, measured with its recorded quality and cost by ``arqgc_steps`` (ties: the
    earlier part weights, then the larger shrink weight), and that score.

    Steps, not the hull: the hull credits mixing two taus, which a router does not do, so it
    favoured strong shrinks whose decisions all flip at one tau (zeroeval: 104% of the reference
    cost at tau 0.08, 57% at 0.10); by steps the tau knob is finer and the saving at parity larger
    (docs/estimator-choice.md)."""
    from ipr_model.evaluation import quality_cost as metrics

    q, c = train_set.quality[:, cols], train_set.cost[:, cols]
    refs = metrics.reference_and_cheapest(q, c)
    mean = q.mean(axis=0)
    best, best_score = Blend(), -np.inf
    for parts in PART_WEIGHTS:
        raw = oof_parts @ np.asarray(parts)
        oof_q = np.stack([cal(raw[:, j]) for j, cal in enumerate(calibrate(raw, q))], axis=1)
        for w in SHRINK_GRID:
            pts = metrics.operating_points(mean + w * (oof_q - mean), est_cost, q, c, ids)
            score = metrics.arqgc_steps(
                pts, refs.cheap_cost, refs.cheap_quality, refs.ref_cost, refs.ref_quality
            )
            if np.isfinite(score) and score > best_score + 1e-9:
                best, best_score = Blend(parts, w), score
    return best, float(best_score)


CUT_CHOICE_MIN_SHARE = 0.1  # of train prompts longer than the encoder's window


def cut_candidates(
    prompts: list[str],
    source: Path | None = None,
    precision: str = DEFAULT_PRECISION,
    layers: tuple[int, ...] | None = None,
    tail_tokens: int | None = None,
) -> tuple[dict[int, Path], int]:
    """The encoder exports to choose between, by their ``tail_tokens``, and how many of
    ``prompts`` are longer than the encoder's window. A given ``tail_tokens`` is the only
    candidate; None: the head, and when at least ``CUT_CHOICE_MIN_SHARE`` of the prompts are cut,
    also the cut keeping their last half (first 128 and last 128 tokens of 256)."""
    first = cached_export(source, precision=precision, layers=layers, tail_tokens=tail_tokens or 0)
    enc = OnnxEncoder.load(first, intra_op_threads=1)
    cut = sum(enc.is_cut(text) for text in prompts)
    out = {enc.tail_tokens: first}
    if tail_tokens is None and cut >= CUT_CHOICE_MIN_SHARE * len(prompts):
        half = enc.max_length // 2
        out[half] = cached_export(source, precision=precision, layers=layers, tail_tokens=half)
    return out, cut


def choose_cut(
    views: dict[int, np.ndarray],
    train_set: Dataset,
    cfg: AdapterConfig = DEFAULT_CONFIG,
    progress: Progress | None = None,
) -> tuple[int, list[ModelCard], dict[int, float]]:
    """Fit every model's card on each candidate cut's train embeddings (``views``: tail_tokens ->
    [n, d], each its own shared memory) and keep the cut whose chosen blend routes the train split
    best out of fold (``select_blend``'s score; ties: the first). Returns (tail_tokens, cards,
    score of each cut)."""
    fits, scores = {}, {}
    for tail, emb in views.items():
        memory = (unit(np.asarray(emb, dtype=np.float16)), np.arange(len(emb)))
        fits[tail] = fit_cards(emb, train_set, cfg=cfg, progress=progress, memory=memory)
        scores[tail] = fits[tail][0].info["train"]["oof_arqgc_steps"]
    best = max(scores, key=lambda t: -np.inf if scores[t] is None else scores[t])
    return best, fits[best], scores


def fit_cards(
    emb: np.ndarray,
    train_set: Dataset,
    model_ids: list[str] | None = None,
    cfg: AdapterConfig = DEFAULT_CONFIG,
    progress: Progress | None = None,
    memory: tuple[np.ndarray, np.ndarray] | None = None,
    blend: Blend | None = None,
    prompt: PromptSide | None = None,
) -> list[ModelCard]:
    """Fit adapter, calibration (on out-of-sample predictions) and cost model of each model.

    ``memory``: (shared memory embeddings [N, d], each train prompt's row in it) for the kNN
    part, every memory row covered; by default the adapters keep the train prompts themselves as
    their own memory (``train`` saves it once, as the shared memory).
    ``blend``: the part weights and calibration shrink; None chooses them by ``select_blend``
    (the equal blend, unshrunk, when fitting a single model). ``prompt``: the joint part's
    prompt side to fit the abilities against (None: learned from these models' outcomes)."""
    ids = model_ids or train_set.model_ids
    cols = [train_set.model_ids.index(m) for m in ids]
    quality = train_set.quality[:, cols]
    cb = (lambda e: progress("train", e, cfg.epochs)) if progress else None
    if memory is None:  # float16-rounded, exactly as it is stored and served
        mem, row, own = unit(np.asarray(emb, dtype=np.float16)), np.arange(len(emb)), True
    else:
        (mem, row), own = memory, False
    counts = np.bincount(row[row >= 0], minlength=len(mem))[:, None]
    labels = np.stack([np.bincount(row[row >= 0], weights=q[row >= 0], minlength=len(mem))
                       for q in quality.T], axis=1) / counts
    adapters, oof_parts = train_adapters(
        emb, quality, mem, labels, row, cfg, own_memory=own, progress=cb, prompt=prompt
    )
    tokens = prompt_tokens(train_set.prompts)
    costs = [
        fit_cost_model(train_set.model(m), tokens, train_set.cost[:, c])
        for m, c in zip(ids, cols, strict=True)
    ]
    score = None
    if blend is None and len(ids) > 1:
        est = np.stack([cm.estimate(tokens) for cm in costs], axis=1)
        blend, score = select_blend(oof_parts, est, train_set, ids, cols)
    blend = blend or Blend()
    oof = oof_parts @ np.asarray(blend.parts)
    cals = calibrate(oof, quality)
    cards = []
    for j, (model_id, adapter) in enumerate(zip(ids, adapters, strict=True)):
        adapter = replace(adapter, parts=np.array(blend.parts, dtype=np.float32))
        mean = float(quality[:, j].mean())
        cal = shrink(cals[j], mean, blend.shrink)
        figures = {
            "prompts": int(len(quality)),
            "mean_quality": mean,
            "oof_brier": float(np.mean((cal(oof[:, j]) - quality[:, j]) ** 2)),
            "knn_k": int(adapter.knn_k),
            "oof_arqgc_steps": score,  # the chosen blend's, on the train split (None: not chosen)
            "shared_memory": not adapter.own_memory,
        }
        cards.append(
            ModelCard(
                id=model_id,
                family=train_set.model(model_id).family,
                cost=costs[j],
                calibration=cal,
                adapter=adapter,
                info={
                    "adapter_config": config_dict(cfg),
                    **blend.as_manifest(),
                    "train": figures,
                },
            )
        )
    return cards


def train(
    train_set: Dataset,
    out: Path,
    encoder_source: Path | None = None,
    cfg: AdapterConfig = DEFAULT_CONFIG,
    progress: Progress | None = None,
    encoder_precision: str = DEFAULT_PRECISION,
    encoder_layers: tuple[int, ...] | None = None,
    encoder_tail_tokens: int | None = None,
    knn_index: bool | None = None,
) -> Manifest:
    """Train every model's adapter on ``train_set`` and write a new artifact directory at ``out``
    (built beside it and renamed into place: a reader never sees a half-written directory).
    ``encoder_tail_tokens``: the encoder's cut of long prompts; None chooses it (``choose_cut``
    among ``cut_candidates``). ``knn_index``: build the kNN memory's ANN index (None: when the
    memory has ``INDEX_MIN_ROWS`` rows or more)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        encoders, cut = cut_candidates(train_set.prompts, encoder_source, encoder_precision,
                                       encoder_layers, encoder_tail_tokens)
        views = {tail: embed(path, train_set.prompts, progress) for tail, path in encoders.items()}
        tail, cards, scores = choose_cut(views, train_set, cfg, progress)
        shutil.copytree(encoders[tail], tmp / ENCODER_DIR)
        save_memory(tmp, views[tail], train_set.prompts)
        if knn_index or (knn_index is None and len(train_set) >= INDEX_MIN_ROWS):
            KnnIndex.build(load_memory(tmp)).save(tmp)
        cards[0].adapter.prompt.save(tmp)
        for card in cards:
            card.save(tmp)
        extra = {
            "dataset": train_set.name,
            "train_prompts": len(train_set),
            "train_prompts_cut": cut,  # longer than the encoder's max_length
            **Blend.from_manifest(cards[0].info).as_manifest(),
        }
        if len(scores) > 1:  # the cut was chosen: each candidate's train routing score
            extra["cut_scores"] = {str(t): score for t, score in scores.items()}
        write_manifest(tmp, train_set.model_ids, extra)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return read_manifest(out)


def add_model(
    root: Path,
    train_set: Dataset,
    model_id: str,
    cfg: AdapterConfig = DEFAULT_CONFIG,
    progress: Progress | None = None,
) -> Manifest:
    """Train one more model's adapter into an existing artifact directory.

    Two files are added (the model's adapter and card) and the manifest is rewritten; every file
    already in the manifest keeps its bytes. The kNN part uses the shared memory when the dataset
    covers every memory prompt, else its own memory (see the module docstring); the joint part
    fits only the new model's ability against the artifact's prompt side."""
    old = read_manifest(root)
    if model_id in old.models:
        raise ArtifactError(f"{root}: model {model_id!r} is already in the artifacts")
    train_set.model(model_id)  # a clear error when the dataset lacks it
    emb = embed(Path(root) / ENCODER_DIR, train_set.prompts, progress)
    hashes = memory_hashes(root)
    row = memory_rows(train_set.prompts, hashes) if hashes is not None else None
    memory = (load_memory(root), row) if row is not None else None
    blend = Blend.from_manifest(old.data)  # the one chosen by ``train``
    side = PromptSide.load(root) if (Path(root) / PROMPT_SIDE).is_file() else None
    (card,) = fit_cards(emb, train_set, [model_id], cfg, progress, memory, blend, side)
    if side is None:  # artifacts from before the joint part: no ability to fit against
        card = replace(card, adapter=replace(card.adapter, ability=None, intercept=None,
                                             prompt=None))
    card.save(Path(root))
    extra = old.carried_over()
    write_manifest(Path(root), old.models + [model_id], extra, parent=old.version)
    return read_manifest(root)

