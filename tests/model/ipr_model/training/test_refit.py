"""Recalibration from feedback: labels move the next version's predictions the right way where
they were observed and nowhere else, the guardrail refuses a worse candidate, and untouched models
keep their files."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from ipr_model.artifacts.manifest import read_manifest
from ipr_model.serving.decision import decide
from ipr_model.serving.scorer import Scorer
from ipr_model.training.refit import RecalConfig, recalibrate
from ipr_model.training.train import embed

pytestmark = pytest.mark.model
MODEL = "gpt-4o-2024-08-06"


def test_bad_outcomes_on_a_task_lower_that_models_predictions_there_only(
    small_artifacts, zeroeval, tmp_path
):
    test = zeroeval.split("test")
    math = [i for i, t in enumerate(test.tasks) if t == test.tasks[0]][:120]
    other = [i for i, t in enumerate(test.tasks) if t != test.tasks[0]][:120]
    texts = [test.prompts[i] for i in math]
    emb = embed(small_artifacts / "encoder", texts)
    before = Scorer.load(small_artifacts)
    j = before.model_ids.index(MODEL)
    probe = [test.prompts[i] for i in math[80:]] + [test.prompts[i] for i in other[:40]]
    q0 = before.score(probe).quality[:, j]

    # The model now fails the task every time (what a bad provider update looks like).
    res = recalibrate(small_artifacts, {MODEL: (emb[:80], np.zeros(80))}, tmp_path / "v2")
    assert res.version and res.models[0].published
    assert res.models[0].brier_candidate < res.models[0].brier_uncorrected
    after = Scorer.load(res.location)
    q1 = after.score(probe).quality[:, j]
    assert q1[:40].mean() < q0[:40].mean() - 0.2  # held-out prompts of the degraded task
    # The other tasks keep their estimates (a refitted calibration moved them all).
    assert np.abs(q1[40:] - q0[40:]).mean() < 0.01
    # Adapter and calibration as trained; the labels live in the model's correction.
    card = after.cards[j]
    np.testing.assert_array_equal(card.calibration.y, before.cards[j].calibration.y)
    assert card.correction is not None and len(card.correction.residual) == 80
    assert card.info["feedback_labels"] == 80
    # Decisions say what feedback added: negative for this model on the degraded task.
    moved = [d.feedback_adjustment for d in decide(after, after.score(probe[:40]), [0.1] * 40)]
    assert sum(1 for m in moved if m and m[MODEL] < -0.05) >= 30
    assert all(m is None or set(m) == {MODEL} for m in moved)
    assert decide(before, before.score(probe[:1]), [0.1])[0].feedback_adjustment is None
    new, old = read_manifest(res.location), read_manifest(small_artifacts)
    assert new.data["parent_version"] == old.version and new.version != old.version
    changed = {f for f in new.data["files"] if new.data["files"][f] != old.data["files"].get(f)}
    assert changed == {f"models/{MODEL}/card.json", f"models/{MODEL}/feedback.npz"}

    # The next recalibration replaces the correction (every label is passed each time), fitted
    # against the estimator without it: labels that agree with the first correction change nothing.
    again = recalibrate(res.location, {MODEL: (emb[:80], np.zeros(80))}, tmp_path / "v3")
    q2 = Scorer.load(again.location).score(probe).quality[:, j]
    np.testing.assert_allclose(q2, q1, atol=1e-6)

    # The model recovered: labels that agree with the estimator without correction take the
    # correction away (a version is published; the model's estimates are as before the failure).
    agree = before.score_embeddings(emb[:80], texts[:80]).quality[:, j]
    back = recalibrate(res.location, {MODEL: (emb[:80], agree)}, tmp_path / "v6")
    assert back.version and back.models[0].published
    recovered = Scorer.load(back.location)
    assert recovered.cards[j].correction is None
    np.testing.assert_allclose(recovered.score(probe).quality[:, j], q0, atol=1e-6)

    # Labels fade with age: three half-lives old, they pull an eighth as hard; ten, not at all.
    half = RecalConfig().half_life_s
    old = recalibrate(small_artifacts, {MODEL: (emb[:80], np.zeros(80), np.full(80, 3 * half))},
                      tmp_path / "v4")
    q_old = Scorer.load(old.location).score(probe).quality[:, j]
    assert q1[:40].mean() < q_old[:40].mean() - 0.1 and q_old[:40].mean() < q0[:40].mean() - 0.01
    ancient = recalibrate(
        small_artifacts, {MODEL: (emb[:80], np.zeros(80), np.full(80, 10.5 * half))},
        tmp_path / "v5",
    )
    assert ancient.version is None and not ancient.models


def test_guardrail_refuses_a_candidate_that_is_worse_on_held_out_labels(
    small_artifacts, zeroeval, tmp_path
):
    from ipr_model.training.refit import HOLDOUT

    test = zeroeval.split("test")
    n = 60
    emb = embed(small_artifacts / "encoder", test.prompts[:n])
    scorer = Scorer.load(small_artifacts)
    j = scorer.model_ids.index(MODEL)
    current = scorer.score_embeddings(emb, test.prompts[:n]).quality[:, j]
    # The held-out labels agree with the current version, the training labels contradict it:
    # the candidate learns the contradiction and must be refused.
    perm = np.random.default_rng(RecalConfig().seed).permutation(n)
    held = perm[: int(round(n * HOLDOUT))]
    labels = 1.0 - np.round(current)
    labels[held] = np.round(current[held])
    res = recalibrate(small_artifacts, {MODEL: (emb, labels)}, tmp_path / "v2")
    m = res.models[0]
    assert not m.published and m.brier_candidate > m.brier_uncorrected
    assert res.version is None and not (tmp_path / "v2").exists()


def test_a_correction_of_another_dimension_is_refused(small_artifacts, tmp_path):
    import shutil

    from ipr_model.artifacts.manifest import write_manifest
    from ipr_model.errors import ArtifactError
    from ipr_model.serving.corrections import Correction

    root = tmp_path / "copy"
    shutil.copytree(small_artifacts, root)
    Correction.fit(np.zeros(3), np.eye(3, 8), np.zeros(3)).save(
        root / "models" / MODEL / "feedback.npz"
    )
    m = read_manifest(root)
    write_manifest(root, m.models, m.carried_over(), parent=m.version)  # a consistent manifest
    with pytest.raises(ArtifactError, match="feedback.npz has 8-d embeddings"):
        Scorer.load(root)


def test_a_new_version_shares_the_unchanged_files_and_never_writes_its_parents(
    small_artifacts, zeroeval, tmp_path
):
    parent = tmp_path / "parent"
    shutil.copytree(small_artifacts, parent)
    texts = zeroeval.split("test").prompts[:60]
    emb = embed(parent / "encoder", texts)
    res = recalibrate(parent, {MODEL: (emb, np.zeros(60))}, tmp_path / "child")
    assert res.version
    child, files = res.location, read_manifest(res.location).data["files"]
    shared = {f for f in files
              if (parent / f).exists() and os.path.samefile(parent / f, child / f)}
    mine = {f for f in files if f.startswith(f"models/{MODEL}/")}
    assert shared == set(files) - mine  # the encoder, the memory, every other model
    assert "encoder/model.onnx" in shared and f"models/{MODEL}/adapter.npz" in mine
    read_manifest(parent)  # every file of the parent still has its bytes (sha256 checked)
