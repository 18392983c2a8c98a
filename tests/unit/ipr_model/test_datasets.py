"""The dataset loader: real files load; every kind of bad row is named by file:line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ipr_model.costs import fit_cost_model
from ipr_model.datasets import ModelInfo, estimate_tokens, load_dataset
from ipr_model.errors import DatasetError

MODELS = {"dataset": "tiny", "models": [
    {"id": "a", "family": "f", "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0},
    {"id": "b", "family": "f", "input_usd_per_mtok": 10.0, "output_usd_per_mtok": 20.0},
]}


def row(i: int, **over) -> dict:
    r = {"id": f"r{i}", "task": "t", "split": "train" if i % 2 else "test", "prompt": f"p {i}",
         "quality": {"a": 0.0, "b": 1.0}, "cost_usd": {"a": 0.001, "b": 0.01}}
    r.update(over)
    return r


def write(tmp_path: Path, rows: list, models: dict = MODELS) -> Path:
    (tmp_path / "models.json").write_text(json.dumps(models))
    (tmp_path / "prompts.jsonl").write_text("\n".join(
        r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return tmp_path


def test_loads_and_splits(tmp_path):
    ds = load_dataset(write(tmp_path, [row(i) for i in range(5)]))
    assert ds.model_ids == ["a", "b"] and len(ds) == 5
    assert ds.quality.shape == (5, 2) and ds.cost[0, 1] == 0.01
    assert ds.split("train").ids == ["r1", "r3"] and len(ds.split("test")) == 3
    assert ds.restrict(["b"]).quality[:, 0].tolist() == [1.0] * 5


@pytest.mark.parametrize("bad, message", [
    (row(1, quality={"a": 0.5}), "prompts.jsonl:2: 'quality' is missing model(s) b"),
    (row(1, quality={"a": 0.5, "b": 1.5}), "prompts.jsonl:2: 'quality'['b'] must be <= 1.0"),
    (row(1, cost_usd={"a": -1, "b": 0}), "prompts.jsonl:2: 'cost_usd'['a'] must be a finite number >= 0"),
    (row(1, split="dev"), "prompts.jsonl:2: 'split' must be one of"),
    (row(1, prompt="  "), "prompts.jsonl:2: 'prompt' is empty"),
    (row(0), "prompts.jsonl:2: duplicate id 'r0'"),
    ("{oops", "prompts.jsonl:2: invalid JSON"),
    (row(1, quality={"a": 0, "b": 0, "c": 1}), "has model(s) not in models.json: c"),
])
def test_bad_rows_name_file_line_and_problem(tmp_path, bad, message):
    with pytest.raises(DatasetError, match=None) as e:
        load_dataset(write(tmp_path, [row(0), bad]))
    assert message in str(e.value)


def test_missing_files_and_models(tmp_path):
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "models.json").write_text(json.dumps(MODELS))
    with pytest.raises(DatasetError, match="needs prompts.jsonl"):
        load_dataset(tmp_path)
    ds = load_dataset(write(tmp_path, [row(0)]))
    with pytest.raises(DatasetError, match="model 'zz' is not in dataset 'tiny'"):
        ds.model("zz")


def test_real_datasets_load(data_dir):
    for name, n, m in (("zeroeval", 2757, 28), ("llmrouter", 5989, 9), ("routerbench", 2205, 11)):
        ds = load_dataset(data_dir / name)
        assert (len(ds), len(ds.model_ids)) == (n, m)
        assert 0.0 <= ds.quality.min() and ds.quality.max() <= 1.0


def test_cost_model_with_prices_learns_expected_output_length():
    info = ModelInfo("a", "f", 1.0, 2.0)
    tokens = np.array([100.0, 300.0])
    # recorded cost = in * tokens + out * 50 tokens
    cost = tokens * 1e-6 + 50 * 2e-6
    cm = fit_cost_model(info, tokens, cost)
    assert cm.expected_output_tokens == pytest.approx(50)
    assert cm.estimate(np.array([200.0]))[0] == pytest.approx(200e-6 + 100e-6)


def test_cost_model_without_prices_fits_line():
    info = ModelInfo("a", "f", None, None)
    tokens = np.array([10.0, 20.0, 30.0, 40.0])
    cm = fit_cost_model(info, tokens, 0.001 + 0.0001 * tokens)
    assert cm.intercept_usd == pytest.approx(0.001) and cm.usd_per_prompt_token == pytest.approx(1e-4)
    assert estimate_tokens("abcdefgh") == 2 and estimate_tokens("a") == 1
