"""The `ipr` command line on real artifacts: decisions, and one-line errors for every mistake."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ipr_model.artifacts.manifest import read_manifest
from ipr_model.errors import ArtifactError

pytestmark = pytest.mark.model


def ipr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli.model", *args],
                          capture_output=True, text=True, timeout=300)


def one_line_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in lines[0]


def test_route_json_names_decision_scores_and_threshold(small_artifacts):
    p = ipr("route", "--artifacts", str(small_artifacts), "--json", "-t", "0", "What is 17 * 23?")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    q = d["predicted_quality"]
    assert len(q) == 28 and set(q) == set(d["estimated_cost_usd"])
    assert d["model_id"] == max(q, key=q.get)  # tau = 0: the best predicted model
    assert d["threshold"] == pytest.approx(max(q.values()))
    cheap = ipr("route", "--artifacts", str(small_artifacts), "--json", "-t", "1",
                "--allow", "gpt-4o-2024-08-06", "--allow", "gemma-2-9b-it", "What is 17 * 23?")
    assert json.loads(cheap.stdout)["model_id"] == "gemma-2-9b-it"  # tau = 1: the cheapest allowed


def test_user_mistakes_are_one_line_errors(small_artifacts, tmp_path, data_dir):
    a = str(small_artifacts)
    one_line_error(ipr("route", "--artifacts", a, "   "), "empty")
    one_line_error(ipr("route", "--artifacts", a, "-t", "1.5", "hi"), "tolerance", "1.5")
    one_line_error(
        ipr("route", "--artifacts", a, "--allow", "gpt-5", "hi"), "unknown model", "gpt-5"
    )
    bad = tmp_path / "bad-data"
    bad.mkdir()
    shutil.copy(data_dir / "zeroeval" / "models.json", bad / "models.json")
    with gzip.open(data_dir / "zeroeval" / "prompts.jsonl.gz", "rt", encoding="utf-8") as f:
        first = f.readline()
    row = json.loads(first)
    row["id"] += "-copy"
    del row["quality"]["gpt-4o-2024-08-06"]
    (bad / "prompts.jsonl").write_text(first + json.dumps(row) + "\n")
    one_line_error(ipr("train", "--dataset", str(bad), "--out", str(tmp_path / "x")),
                   "prompts.jsonl:2", "missing model(s) gpt-4o-2024-08-06")
    zeroeval = str(data_dir / "zeroeval")
    one_line_error(ipr("train", "--dataset", zeroeval, "--out", str(tmp_path / "x"),
                       "--layers", "2,x"),
                   "--layers", "'2,x'")
    one_line_error(ipr("evaluate", "--dataset", zeroeval, "--cv", "2",
                       "--json", str(tmp_path / "e.json"), "--layers", "4,9"),
                   "layers must be distinct numbers in [0, 6]", "[4, 9]")
    one_line_error(ipr("train", "--dataset", zeroeval, "--out", str(tmp_path / "x"),
                       "--tail-tokens", "256"),
                   "tail_tokens must be in [0, 255]", "got 256")
    one_line_error(ipr("evaluate", "--dataset", zeroeval, "--artifacts", str(small_artifacts),
                       "--json", str(tmp_path / "e.json"), "--seed", "3"), "--seed apply to --cv")
    assert not (tmp_path / "x").exists() and not (tmp_path / "e.json").exists()


def test_corrupt_partial_and_mismatched_artifacts_are_refused(small_artifacts, tmp_path):
    copy = tmp_path / "a"
    shutil.copytree(small_artifacts, copy)
    read_manifest(copy)  # intact
    card = next((copy / "models").iterdir()) / "card.json"
    card.write_text(card.read_text().replace("{", "{ ", 1))
    with pytest.raises(ArtifactError, match="is corrupt: sha256"):
        read_manifest(copy)
    one_line_error(ipr("route", "--artifacts", str(copy), "hi"), "corrupt")

    partial = tmp_path / "partial"
    shutil.copytree(small_artifacts, partial)
    (partial / "manifest.json").unlink()
    one_line_error(ipr("route", "--artifacts", str(partial), "hi"), "manifest.json", "partial")

    missing = tmp_path / "missing"
    shutil.copytree(small_artifacts, missing)
    (missing / "encoder" / "tokenizer.json").unlink()
    with pytest.raises(
        ArtifactError, match="encoder/tokenizer.json is listed in the manifest but missing"
    ):
        read_manifest(missing)

    other = tmp_path / "other"
    shutil.copytree(small_artifacts, other)
    m = json.loads((other / "manifest.json").read_text())
    m["format"] = "something-else/9"
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="expected format"):
        read_manifest(other)


def test_score_writes_one_line_per_prompt(small_artifacts, data_dir, tmp_path):
    out = tmp_path / "scores.jsonl"
    p = ipr("score", "--artifacts", str(small_artifacts), "--dataset", str(data_dir / "zeroeval"),
            "--split", "test", "--out", str(out))
    assert p.returncode == 0, p.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 559
    assert set(rows[0]) == {"id", "predicted_quality", "estimated_cost_usd"}
    assert all(0 <= v <= 1 for v in rows[0]["predicted_quality"].values())


def train_rows(data_dir: Path, tmp_path: Path, n: int) -> Path:
    """A dataset folder of zeroeval's first ``n`` train rows."""
    small = tmp_path / "small"
    small.mkdir()
    shutil.copy(data_dir / "zeroeval" / "models.json", small / "models.json")
    with gzip.open(data_dir / "zeroeval" / "prompts.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [ln for ln in f if '"train"' in ln]
    (small / "prompts.jsonl").write_text("".join(rows[:n]))
    return small


def test_train_seed_draws_other_mlps_and_the_same_ridge(data_dir, tmp_path):
    import numpy as np

    small = train_rows(data_dir, tmp_path, 120)
    adapters = {}
    for seed in ("0", "3"):
        out = tmp_path / f"a{seed}"
        p = ipr("train", "--dataset", str(small), "--out", str(out), "--seed", seed)
        assert p.returncode == 0, p.stderr
        card = json.loads((out / "models" / "gpt-4o-2024-08-06" / "card.json").read_text())
        assert card["adapter_config"]["seed"] == int(seed)
        assert card["adapter_config"]["ridge_alpha"] == 100.0  # the penalty is recorded
        adapters[seed] = np.load(out / "models" / "gpt-4o-2024-08-06" / "adapter.npz")
    assert not np.allclose(adapters["0"]["w1"], adapters["3"]["w1"])
    np.testing.assert_array_equal(adapters["0"]["lin_w"], adapters["3"]["lin_w"])


def test_evaluate_reports_every_router_and_the_tau_knob(small_artifacts, data_dir, tmp_path):
    out = tmp_path / "eval.json"
    p = ipr("evaluate", "--artifacts", str(small_artifacts),
            "--dataset", str(data_dir / "zeroeval"), "--json", str(out), "--pair", "auto")
    assert p.returncode == 0, p.stderr
    rep = json.loads(out.read_text())
    assert {"ipr", "knn", "linear", "oracle"} <= set(rep["routers"]) and rep["prompts"] == 559
    # two models only: the reference and the cheapest; tau is a knob there, the range a switch
    pair = rep["pair"]
    refs = rep["reference"]
    assert pair["models"] == [refs["ref_model"], refs["cheap_model"]]
    distinct = {v: len({tuple(pt[1:]) for pt in pair[v]["routers"]["ipr"]["points"]})
                for v in ("ipr", "range")}
    assert distinct["range"] == 2 and distinct["ipr"] > 10, distinct  # a knob, not a switch
    assert pair["ipr"]["intervals"]["ipr"]["arqgc"]["point"] == pair["ipr"]["routers"]["ipr"][
        "arqgc"]
    assert "two models only" in p.stdout
    for r in rep["routers"].values():
        assert len(r["points"]) == 101 and r["arqgc_steps"] <= r["arqgc"] + 1e-12
    (knob,) = [ln for ln in p.stdout.splitlines() if ln.startswith("ipr by tau")]
    entries = knob.split(": ", 1)[1].split("; ")
    assert len(entries) == 7
    tau0, ref_cost = rep["routers"]["ipr"]["points"][0], rep["reference"]["ref_cost"]
    assert entries[0] == f"0.00: {tau0[1] / ref_cost:.0%}, {tau0[2]:.3f}"
    assert rep["bootstrap"]["resamples"] == 1000 and "95% intervals" in p.stdout
    for name in (*rep["routers"], "random_mix"):
        iv = rep["intervals"][name]["arqgc"]
        assert iv["lo"] <= iv["point"] <= iv["hi"]
    assert rep["intervals"]["ipr"]["arqgc"]["point"] == rep["routers"]["ipr"]["arqgc"]
    assert set(rep["p_ipr_beats"]) == {*rep["routers"], "random_mix"} - {"ipr"}
    assert set(rep["cost_share"]["ipr"]) == set(rep["routers"]["ipr"]["cost_share"])


def test_cross_validation_pools_the_folds_and_measures_each(data_dir, tmp_path):
    small = train_rows(data_dir, tmp_path, 150)
    out = tmp_path / "cv.json"
    p = ipr("evaluate", "--cv", "3", "--dataset", str(small), "--json", str(out))
    assert p.returncode == 0, p.stderr
    rep = json.loads(out.read_text())
    assert rep["prompts"] == 150 and rep["folds"] == 3 and rep["tail_tokens_per_fold"] == [0, 0, 0]
    assert len(rep["per_fold"]) == 3
    for fold in rep["per_fold"]:
        assert set(fold) == set(rep["routers"])
        # the oracle knows every outcome: in each fold it matches the reference's quality
        assert fold["oracle"]["saving_at_parity"]["reached"]
    for name in ("ipr", "linear", "knn"):
        (line,) = [ln for ln in p.stdout.splitlines() if ln.startswith(f"{name}, each fold")]
        shown = line.split("saving at parity ", 1)[1].split(", ")
        assert shown == [f"{f[name]['saving_at_parity']['saving']:.1%}"
                         if f[name]["saving_at_parity"]["reached"] else "not reached"
                         for f in rep["per_fold"]]
