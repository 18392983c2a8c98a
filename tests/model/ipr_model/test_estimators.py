"""The quality estimators on real data: held-out predictions carry signal, the kNN / ridge parts
are what they claim, the fused serving path blends parts like each adapter, and adding a model
leaves every existing artifact file byte-identical."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ipr_model.serving.adapters import Neighbours, knn_weights, unit
from ipr_model.training.fitting import AdapterConfig, fit_knn, fit_ridge

pytestmark = pytest.mark.model

FAST = AdapterConfig(hidden=16, epochs=60, lr=5e-3)


def _embed(root, texts):
    from ipr_model.training.train import embed

    return embed(root / "encoder", list(texts))


def test_held_out_predictions_carry_signal(zeroeval_slice, small_artifacts):
    from ipr_model.serving.scorer import Scorer

    train, test = zeroeval_slice
    scorer = Scorer.load(small_artifacts)
    assert scorer.model_ids == train.model_ids
    q = scorer.score_embeddings(_embed(small_artifacts, test.prompts), test.prompts).quality
    assert q.shape == test.quality.shape and np.all((q >= 0) & (q <= 1))

    best = test.quality.max(axis=1)
    top1 = np.mean(test.quality[np.arange(len(test)), q.argmax(axis=1)] == best)
    always_best = np.mean(test.quality[:, train.quality.mean(axis=0).argmax()] == best)
    assert top1 > always_best, (top1, always_best)

    corr = [
        np.corrcoef(q[:, j], test.quality[:, j])[0, 1]
        for j in range(q.shape[1])
        if np.std(test.quality[:, j]) > 0 and np.std(q[:, j]) > 0
    ]
    assert np.mean(corr) > 0.1, np.mean(corr)


def test_stacked_cards_score_like_each_card(zeroeval_slice, small_artifacts):
    """Serving evaluates every card at once; each column is that card's own quality (a feedback
    correction included) and cost."""
    from ipr_model.serving.costs import prompt_tokens
    from ipr_model.serving.scorer import Scorer
    from ipr_model.training.refit import RecalConfig, candidate_card

    _, test = zeroeval_slice
    texts = test.prompts[:40]
    emb = _embed(small_artifacts, texts)
    scorer = Scorer.load(small_artifacts)
    labels = (test.quality[:40, 1] > 0.5).astype(float)
    fixed = candidate_card(scorer.cards[1], emb, 1.0 - labels, np.ones(40), RecalConfig())
    assert fixed.correction is not None
    scorer = Scorer(scorer.manifest, scorer.encoder, [scorer.cards[0], fixed, *scorer.cards[2:]])
    scores = scorer.score_embeddings(emb, texts)
    each = np.stack([c.quality(emb) for c in scorer.cards], axis=1)
    np.testing.assert_allclose(scores.quality, each, atol=1e-6)
    assert np.abs(scores.feedback[:, 1]).max() > 0.01 and not scores.feedback[:, 0].any()
    cost = np.stack([c.cost.estimate(prompt_tokens(texts)) for c in scorer.cards], axis=1)
    np.testing.assert_allclose(scores.cost, cost, rtol=1e-12)


def test_fused_stack_blends_each_adapters_parts_like_the_adapter(zeroeval_slice, small_artifacts):
    from dataclasses import replace

    from ipr_model.serving.adapters import AdapterStack
    from ipr_model.serving.scorer import Scorer

    _, test = zeroeval_slice
    emb = _embed(small_artifacts, test.prompts[:30])
    rng = np.random.default_rng(0)
    parts = rng.dirichlet(np.ones(4), size=8).astype(np.float32)
    parts[1] = (0.5, 0.5, 0.0, 0.0)  # an adapter without the joint part among ones with it
    adapters = [
        replace(c.adapter, parts=parts[j % len(parts)])
        for j, c in enumerate(Scorer.load(small_artifacts).cards)
    ]
    each = np.stack([a.raw(emb) for a in adapters], axis=1)
    stack = AdapterStack(adapters)
    assert stack.fused
    np.testing.assert_allclose(stack.raw(emb), each, atol=1e-6)
    a = adapters[0]
    w = a.parts
    # The joint part: the members' mean of sigmoid(theta . ability + intercept), theta = emb P.
    logit = np.einsum("nd,kdr,kr->nk", emb, a.prompt.weights, a.ability) + a.intercept
    joint = (1.0 / (1.0 + np.exp(-logit))).mean(axis=1)
    assert joint.std() > 0.01
    np.testing.assert_allclose(
        each[:, 0],
        w[0] * a.mlp(emb) + w[1] * a.linear(emb) + w[2] * a.knn(emb) + w[3] * joint, atol=1e-5
    )


def test_knn_weights_match_brute_force_count_ties_and_leave_one_out():
    rng = np.random.default_rng(0)
    mem, query = unit(rng.standard_normal((50, 8))), unit(rng.standard_normal((7, 8)))
    labels = rng.random(50)
    expect = labels[np.argsort(-(query @ mem.T), axis=1)[:, :5]].mean(axis=1)
    w5, w500 = knn_weights(mem, query, [5, 500])
    np.testing.assert_allclose(w5 @ labels, expect, rtol=1e-6)
    np.testing.assert_allclose(w500 @ labels, labels.mean(), rtol=1e-6)  # k capped at the memory
    # Querying the memory with itself: row i is its own nearest neighbour unless excluded.
    (w1,) = knn_weights(mem, mem, [1])
    np.testing.assert_array_equal(w1, np.eye(50))
    (loo,) = knn_weights(mem, mem, [3], exclude=np.arange(50))
    assert np.all(np.diag(loo) == 0) and np.all((loo > 0).sum(axis=1) == 3)
    # Six prompts with one embedding (a long shared template, truncated): all six are the
    # nearest, so k=2 averages the six labels, not two chosen by the order of the memory.
    dup = np.concatenate([np.repeat(mem[:1], 6, axis=0), mem[1:]])
    y = np.concatenate([[1, 1, 0, 0, 0, 0], labels[1:]])
    (w2,) = knn_weights(dup, mem[:1], [2])
    assert w2 @ y == pytest.approx(2 / 6)
    # Shared between adapters: one look-up per (memory, k), whatever the labels.
    nb = Neighbours(query)
    np.testing.assert_allclose(nb.mean(mem, labels, 5), expect, rtol=1e-6)
    np.testing.assert_allclose(nb.mean(mem, 1 - labels, 5), 1 - expect, rtol=1e-6)
    assert len(nb._w) == 1


def test_fit_knn_is_out_of_sample_and_picks_k():
    rng = np.random.default_rng(1)
    # Two tight clusters with opposite labels: the out-of-sample estimate recovers the label.
    centres = unit(rng.standard_normal((2, 16)))
    side = np.repeat([0, 1], 100)
    mem = unit(centres[side] + 0.05 * rng.standard_normal((200, 16)))
    labels = side[:, None].astype(float)
    ks, pred = fit_knn(mem, labels, mem, labels, exclude=np.arange(200))
    assert ks.shape == (1,) and ks[0] in (5, 10, 20, 50)  # 100 would reach the other cluster
    assert np.allclose(pred[:, 0], side)
    # A pure-noise label: leave-one-out keeps a row from predicting itself (no 100% fit).
    noise = rng.integers(0, 2, (200, 1)).astype(float)
    _, pred = fit_knn(mem, noise, mem, noise, exclude=np.arange(200))
    assert np.mean((pred[:, 0] > 0.5) == noise[:, 0]) < 0.8


def test_fit_ridge_leave_one_out_is_exact():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 5))
    y = (x @ rng.standard_normal(5) > 0).astype(float)[:, None] * 0.8 + 0.1
    alpha = 3.0
    w, b, loo = fit_ridge(x, y, alpha)

    def ridge(xs, ys, a):
        mu, ym = xs.mean(0), ys.mean()
        wa = np.linalg.solve((xs - mu).T @ (xs - mu) + a * np.eye(5), (xs - mu).T @ (ys - ym))
        return wa, ym - mu @ wa

    full_w, full_b = ridge(x, y[:, 0], alpha)
    assert np.allclose(w[:, 0], full_w) and b[0] == pytest.approx(full_b)
    for i in (0, 17, 39):
        keep = np.arange(40) != i
        wi, bi = ridge(x[keep], y[keep, 0], alpha)
        assert loo[i, 0] == pytest.approx(np.clip(x[i] @ wi + bi, 0, 1), abs=1e-8)


def test_memory_rows_map_by_text_in_any_order():
    from ipr_model.serving.texts import text_sha256
    from ipr_model.training.train import memory_rows

    hashes = [text_sha256(t) for t in ("a", "b", "c")]
    assert memory_rows(["c", "x", "a", "b", "a"], hashes).tolist() == [2, -1, 0, 1, 0]
    assert memory_rows(["a", "b"], hashes) is None  # "c" has no label: no shared memory


def test_add_model_leaves_existing_files_identical(tmp_path, zeroeval_slice):
    from ipr_model.artifacts.manifest import read_manifest, sha256_file
    from ipr_model.serving.scorer import Scorer
    from ipr_model.training.train import add_model, train

    data, test = zeroeval_slice
    *base, shared, own = data.model_ids
    root = tmp_path / "art"
    train(data.restrict(base), root, cfg=FAST)
    for model_id, subset in ((shared, data), (own, data.subset(np.arange(len(data) // 2)))):
        before = read_manifest(root).data["files"]
        add_model(root, subset, model_id, cfg=FAST)
        after = read_manifest(root).data["files"]
        for rel, sha in before.items():
            assert after[rel] == sha == sha256_file(root / rel), rel
        new = {rel for rel in after if rel not in before}
        assert {r.rsplit("/", 1)[1] for r in new} == {"adapter.npz", "card.json"}
    # The first new adapter uses the shared memory (labels only); the second, trained on a
    # dataset missing half the memory prompts, carries its own memory.
    scorer = Scorer.load(root)
    assert scorer.model_ids == base + [shared, own]
    by_id = {c.id: c.adapter for c in scorer.cards}
    assert not by_id[shared].own_memory and by_id[shared].memory is by_id[base[0]].memory
    assert by_id[own].own_memory and len(by_id[own].knn_y) == len(data) // 2
    # Each new model fitted only its joint ability, against the artifact's prompt side.
    side = by_id[base[0]].prompt
    for m in (shared, own):
        assert by_id[m].prompt is side and by_id[m].ability.shape == side.shape[::2]
        assert np.std(by_id[m].joint(scorer.encoder.encode(test.prompts[:20]))) > 0
    # New adapters blend their parts as the artifact's training chose (the manifest carries it).
    blend = read_manifest(root).data["part_weights"]
    for m in (base[0], shared, own):
        np.testing.assert_allclose(by_id[m].parts, blend, rtol=1e-6)
    q = scorer.score(test.prompts[:20]).quality
    assert q.shape == (20, len(data.model_ids)) and np.all(np.isfinite(q))
    j = scorer.model_ids.index(shared)
    assert np.std(q[:, j]) > 0
    card = json.loads((root / "models" / own / "card.json").read_text())
    assert card["id"] == own


def test_corrupt_memory_is_refused(tmp_path, small_artifacts):
    from ipr_model.errors import ArtifactError
    from ipr_model.serving.scorer import Scorer

    root = tmp_path / "copy"
    shutil.copytree(small_artifacts, root)
    with open(root / "memory" / "embeddings.npy", "r+b") as f:
        f.seek(-2, 2)
        f.write(b"\x00\x7f")
    with pytest.raises(ArtifactError, match="memory/embeddings.npy is corrupt"):
        Scorer.load(root)


def test_manifest_counts_the_train_prompts_the_encoder_cut(zeroeval_slice, small_artifacts):
    """The count the trainer reports agrees with transformers' own tokenizer."""
    from transformers import AutoTokenizer

    from ipr_model.artifacts.manifest import read_manifest
    from ipr_model.training.export import default_source

    tokenizer = AutoTokenizer.from_pretrained(default_source(), local_files_only=True)
    tokenizer.model_max_length = 1 << 30
    longer = sum(len(tokenizer(t)["input_ids"]) > 256 for t in zeroeval_slice[0].prompts)
    manifest = read_manifest(small_artifacts)
    assert longer > 0 and manifest.data["train_prompts_cut"] == longer


def test_the_cut_is_chosen_by_how_well_it_routes_the_train_split(zeroeval_slice):
    """``choose_cut`` keeps the embeddings that route out of fold best: the real ones over the same
    rows shuffled (no signal left), whichever order they come in."""
    from ipr_model.training.export import cached_export
    from ipr_model.training.train import choose_cut, embed

    train = zeroeval_slice[0]
    real = embed(cached_export(), train.prompts)
    shuffled = real[np.random.default_rng(0).permutation(len(real))]
    cfg = AdapterConfig(hidden=8, epochs=20, lr=5e-3)
    tail, cards, scores = choose_cut({0: real, 128: shuffled}, train, cfg)
    assert tail == 0 and scores[0] > scores[128] + 0.02
    assert cards[0].info["train"]["oof_arqgc_steps"] == scores[0]
    tail, _, swapped = choose_cut({0: shuffled, 128: real}, train, cfg)
    assert tail == 128 and swapped[128] == pytest.approx(scores[0])


def test_a_second_cut_is_a_candidate_only_when_many_prompts_are_long(zeroeval_slice):
    from ipr_model.training.train import cut_candidates

    prompts = zeroeval_slice[0].prompts[:200]
    few, cut = cut_candidates(prompts)
    assert list(few) == [0] and cut < 0.1 * len(prompts)
    many = prompts[:180] + ["the cat sat on the mat " * 100] * 20
    candidates, cut = cut_candidates(many)
    assert list(candidates) == [0, 128] and cut >= 20
    assert list(cut_candidates(many, tail_tokens=0)[0]) == [0]  # a given cut is the only one


def test_adapter_files_from_before_the_joint_part_still_load(tmp_path, small_artifacts):
    from ipr_model.serving.adapters import Adapter
    from ipr_model.serving.cards import load_memory

    path = next((small_artifacts / "models").glob("*/adapter.npz"))
    with np.load(path) as z:
        old = {k: z[k] for k in z.files if k not in ("ability", "intercept")}
    old["parts"] = np.array([0.25, 0.25, 0.5], np.float32)
    with open(tmp_path / "adapter.npz", "wb") as f:
        np.savez(f, **old)
    a = Adapter.load(tmp_path / "adapter.npz", lambda: load_memory(small_artifacts))
    assert a.parts.tolist() == [0.25, 0.25, 0.5, 0.0] and a.ability is None
    emb = unit(np.random.default_rng(0).standard_normal((3, a.dim)))
    np.testing.assert_allclose(a.raw(emb), 0.25 * a.mlp(emb) + 0.25 * a.linear(emb)
                               + 0.5 * a.knn(emb), atol=1e-6)
