"""Training: export the encoder, embed the train split (cached), fit adapters, calibrations and cost
models, and write a verified artifact directory. ``add_model`` trains one more adapter in place."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ipr_model.adapters import Adapter, AdapterConfig, config_dict, train_adapters
from ipr_model.artifacts import (
    ENCODER_DIR,
    Manifest,
    model_dir,
    read_manifest,
    write_json,
    write_manifest,
)
from ipr_model.calibration import fit_isotonic
from ipr_model.costs import fit_cost_model, prompt_tokens
from ipr_model.datasets import Dataset, ModelInfo
from ipr_model.errors import ArtifactError

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]  # (stage, done, total)


def embed(encoder_dir: Path, texts: list[str], progress: Progress | None = None) -> np.ndarray:
    from ipr_model.embed_cache import EmbeddingCache, encode_cached, encoder_key
    from ipr_model.encoder import OnnxEncoder

    enc = OnnxEncoder.load(encoder_dir)
    cache = EmbeddingCache(encoder_key(encoder_dir))
    cb = (lambda done: progress("encode", done, len(texts))) if progress else None
    return encode_cached(enc, texts, cache, progress=cb)


def fit_model_files(
    root: Path,
    infos: list[ModelInfo],
    adapters: list[Adapter],
    oof: np.ndarray,
    quality: np.ndarray,
    tokens: np.ndarray,
    cost: np.ndarray,
    cfg: AdapterConfig,
) -> None:
    """Write adapter.npz and card.json of each model (calibration on out-of-fold predictions)."""
    for j, (info, adapter) in enumerate(zip(infos, adapters)):
        d = root / model_dir(info.id)
        d.mkdir(parents=True, exist_ok=True)
        adapter.save(d / "adapter.npz")
        cal = fit_isotonic(oof[:, j], quality[:, j])
        write_json(
            d / "card.json",
            {
                "id": info.id,
                "family": info.family,
                "cost": fit_cost_model(info, tokens, cost[:, j]).to_dict(),
                "calibration": cal.to_dict(),
                "adapter": config_dict(cfg),
                "train": {
                    "prompts": int(len(quality)),
                    "mean_quality": float(quality[:, j].mean()),
                    "oof_brier": float(np.mean((cal(oof[:, j]) - quality[:, j]) ** 2)),
                },
            },
        )


def train(
    train_set: Dataset,
    out: Path,
    encoder_source: Path | None = None,
    cfg: AdapterConfig = AdapterConfig(),
    progress: Progress | None = None,
) -> Manifest:
    """Train every model's adapter on ``train_set`` and write a new artifact directory at ``out``."""
    from ipr_model.export import cached_export

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copytree(cached_export(encoder_source), tmp / ENCODER_DIR)
        emb = embed(tmp / ENCODER_DIR, train_set.prompts, progress)
        cb = (lambda e: progress("train", e, cfg.epochs)) if progress else None
        adapters, oof = train_adapters(emb, train_set.quality, cfg, progress=cb)
        fit_model_files(
            tmp, train_set.models, adapters, oof, train_set.quality,
            prompt_tokens(train_set.prompts), train_set.cost, cfg,
        )
        manifest_extra = {"dataset": train_set.name, "train_prompts": len(train_set)}
        write_manifest(tmp, train_set.model_ids, manifest_extra)
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
    cfg: AdapterConfig = AdapterConfig(),
    progress: Progress | None = None,
) -> Manifest:
    """Train one more model's adapter into an existing artifact directory.

    Only two files are added (the model's adapter and card) and the manifest is rewritten; every
    file already in the manifest keeps its bytes."""
    old = read_manifest(root)
    if model_id in old.models:
        raise ArtifactError(f"{root}: model {model_id!r} is already in the artifacts")
    info = train_set.model(model_id)
    j = train_set.model_ids.index(model_id)
    emb = embed(Path(root) / ENCODER_DIR, train_set.prompts, progress)
    cb = (lambda e: progress("train", e, cfg.epochs)) if progress else None
    adapters, oof = train_adapters(emb, train_set.quality[:, [j]], cfg, progress=cb)
    fit_model_files(
        Path(root), [info], adapters, oof, train_set.quality[:, [j]],
        prompt_tokens(train_set.prompts), train_set.cost[:, [j]], cfg,
    )
    extra = {k: v for k, v in old.data.items() if k not in _MANAGED}
    write_manifest(Path(root), old.models + [model_id], extra, parent=old.version)
    return read_manifest(root)


_MANAGED = {"format", "version", "parent_version", "created_at", "models", "files", "built_with"}
