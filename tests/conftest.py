"""Fixtures shared by every kind of test: where the real datasets are, and a small trained
artifact directory (real encoder, real data, a slice of zeroeval) built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The datasets shipped in the repo's data/ (see data/README.md); IPR_DATA_DIR points elsewhere.
DATA = Path(os.environ.get("IPR_DATA_DIR") or ROOT / "data")

# A slice small enough to train in seconds, large enough to carry signal.
SLICE_TRAIN = 900
SLICE_TEST = 300


@pytest.fixture(scope="session")
def data_dir() -> Path:
    zeroeval = DATA / "zeroeval"
    if not any((zeroeval / name).is_file() for name in ("prompts.jsonl", "prompts.jsonl.gz")):
        source = ("IPR_DATA_DIR" if os.environ.get("IPR_DATA_DIR")
                  else "the repo's data/; set IPR_DATA_DIR to use another folder")
        pytest.fail(f"the datasets are not at {DATA} ({source}): looked for "
                    f"{zeroeval / 'prompts.jsonl'} and {zeroeval / 'prompts.jsonl.gz'}")
    return DATA


@pytest.fixture(scope="session")
def zeroeval(data_dir):
    from ipr_model.training.datasets import load_dataset

    return load_dataset(data_dir / "zeroeval")


@pytest.fixture(scope="session")
def zeroeval_slice(zeroeval):
    """(train, test): a seeded slice of the real train split and the real test split."""
    import numpy as np

    train = zeroeval.split("train")
    idx = np.random.default_rng(0).permutation(len(train))[:SLICE_TRAIN]
    return train.subset(np.sort(idx)), zeroeval.split("test").subset(list(range(SLICE_TEST)))


@pytest.fixture(scope="session")
def small_artifacts(tmp_path_factory, zeroeval_slice) -> Path:
    """Artifacts trained on the zeroeval slice with the real encoder (export cached per user)."""
    from ipr_model.training.fitting import AdapterConfig
    from ipr_model.training.train import train

    out = tmp_path_factory.mktemp("artifacts") / "zeroeval-slice"
    train(zeroeval_slice[0], out, cfg=AdapterConfig(hidden=16, epochs=80, lr=5e-3))
    return out
