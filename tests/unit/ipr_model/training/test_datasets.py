"""The dataset loader: real files load; every kind of bad row is named by file:line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from ipr_model.errors import DatasetError
from ipr_model.serving.costs import fit_cost_model
from ipr_model.training.datasets import ModelInfo, default_data_dir, estimate_tokens, load_dataset

REPO_DATA = Path(__file__).resolve().parents[4] / "data"
SHIPPED = (("zeroeval", 2757, 28), ("llmrouter", 5989, 9), ("routerbench", 2205, 11))

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
    (row(1, cost_usd={"a": -1, "b": 0}),
     "prompts.jsonl:2: 'cost_usd'['a'] must be a finite number >= 0"),
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
    for name, n, m in SHIPPED:
        ds = load_dataset(data_dir / name)
        assert (len(ds), len(ds.model_ids)) == (n, m)
        assert ds.quality.min() >= 0.0 and ds.quality.max() <= 1.0


def write_gz(folder: Path, text: str, models: dict = MODELS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.json").write_text(json.dumps(models))
    with gzip.open(folder / "prompts.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(text)
    return folder


def test_gzipped_prompts_load_like_the_plain_file(tmp_path):
    # A few real rows (non-ASCII text included, when the slice has some), both ways.
    with gzip.open(REPO_DATA / "zeroeval" / "prompts.jsonl.gz", "rt", encoding="utf-8") as f:
        text = "".join(line for _, line in zip(range(40), f, strict=False))  # the first 40
    models = json.loads((REPO_DATA / "zeroeval" / "models.json").read_text())
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "models.json").write_text(json.dumps(models))
    (plain / "prompts.jsonl").write_text(text, encoding="utf-8")
    packed = write_gz(tmp_path / "packed", text, models)
    assert not (packed / "prompts.jsonl").exists()
    a, b = load_dataset(plain), load_dataset(packed)
    assert len(a) == 40 and a.model_ids == b.model_ids and a.name == b.name
    assert (a.ids, a.tasks, a.splits, a.prompts) == (b.ids, b.tasks, b.splits, b.prompts)
    assert np.array_equal(a.quality, b.quality) and np.array_equal(a.cost, b.cost)
    assert a.meta == b.meta and a.quality_kind == b.quality_kind


def test_plain_file_is_read_first(tmp_path):
    folder = write(tmp_path, [row(0), row(1)])
    with gzip.open(folder / "prompts.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("{oops\n")  # never read: prompts.jsonl is present
    assert load_dataset(folder).ids == ["r0", "r1"]


def test_bad_line_inside_gzip_names_its_line(tmp_path):
    text = "\n".join(json.dumps(r) for r in (row(0), row(1))) + "\n\n" + json.dumps(
        row(3, quality={"a": 0.5})) + "\n"
    folder = write_gz(tmp_path / "d", text)
    with pytest.raises(DatasetError) as e:
        load_dataset(folder)
    assert "prompts.jsonl.gz:4: 'quality' is missing model(s) b" in str(e.value)
    write_gz(folder, json.dumps(row(0)) + "\n{oops\n")
    with pytest.raises(DatasetError, match=r"prompts\.jsonl\.gz:2: invalid JSON"):
        load_dataset(folder)


def test_unreadable_gzip_is_a_dataset_error(tmp_path):
    folder = write_gz(tmp_path / "d", "".join(json.dumps(row(i)) + "\n" for i in range(200)))
    data = (folder / "prompts.jsonl.gz").read_bytes()
    (folder / "prompts.jsonl.gz").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(DatasetError, match=r"prompts\.jsonl\.gz:\d+: cannot read"):
        load_dataset(folder)
    (folder / "prompts.jsonl.gz").write_bytes(b"not gzip at all\n")
    with pytest.raises(DatasetError, match=r"prompts\.jsonl\.gz:1: cannot read"):
        load_dataset(folder)


def test_folder_without_prompts_names_folder_and_both_files(tmp_path):
    (tmp_path / "models.json").write_text(json.dumps(MODELS))
    with pytest.raises(DatasetError) as e:
        load_dataset(tmp_path)
    assert str(tmp_path) in str(e.value)
    assert "prompts.jsonl or prompts.jsonl.gz" in str(e.value)


@pytest.mark.parametrize("name, n, m", SHIPPED)
def test_shipped_datasets_load(name, n, m):
    folder = REPO_DATA / name
    assert (folder / "prompts.jsonl.gz").is_file() and (folder / "models.json").is_file()
    ds = load_dataset(folder)
    assert (len(ds), len(ds.model_ids)) == (n, m)
    assert ds.quality.min() >= 0.0 and ds.quality.max() <= 1.0 and ds.cost.min() >= 0.0


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("IPR_DATA_DIR", raising=False)
    assert default_data_dir() == Path("data")
    monkeypatch.setenv("IPR_DATA_DIR", "")  # empty: unset
    assert default_data_dir() == Path("data")
    monkeypatch.setenv("IPR_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path


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
    assert cm.intercept_usd == pytest.approx(0.001)
    assert cm.usd_per_prompt_token == pytest.approx(1e-4)
    assert estimate_tokens("abcdefgh") == 2 and estimate_tokens("a") == 1
