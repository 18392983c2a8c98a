"""Onboarding a prices-only model: the rule leaves it out, exploration sends it prompts, and its
labels fit a card that is routed normally once it has enough of them."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.onboard import pick_model, without
from ipr_model.artifacts.manifest import read_manifest
from ipr_model.serving.decision import decide
from ipr_model.serving.scorer import Scorer
from ipr_model.training.onboard import ONBOARDING
from ipr_model.training.refit import RecalConfig, recalibrate, yardstick
from ipr_model.training.train import embed

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def onboarding(small_artifacts, zeroeval_slice, tmp_path_factory):
    train = zeroeval_slice[0]
    model = pick_model(train)
    root = without(small_artifacts, tmp_path_factory.mktemp("onb") / "a", model,
                   train.model(model))
    return root, model, train


def test_a_prices_only_card_loads_and_only_exploration_routes_to_it(onboarding):
    root, model, train = onboarding
    assert model == "deepseek-v2.5-0908"  # best quality per dollar above the median
    scorer = Scorer.load(root)  # verified: every file in the manifest
    assert scorer.onboarding == {model} and scorer.model_ids[-1] == model
    scores = scorer.score(train.prompts[:40])
    ids = [f"p{i}" for i in range(40)]
    ruled = decide(scorer, scores, [1.0] * 40, prompt_ids=ids, explore_share=0.0)
    assert model not in {d.model_id for d in ruled}
    explored = decide(scorer, scores, [1.0] * 40, prompt_ids=ids, explore_share=1.0)
    assert {d.model_id for d in explored} == {model}
    assert {(d.rule, d.reason) for d in explored} == {("explore", "onboarding")}
    allowed = decide(scorer, scores, [1.0] * 40, [["gemma-2-9b-it", "Qwen2-7B-Instruct"]] * 40,
                     prompt_ids=ids, explore_share=1.0)
    assert {d.model_id for d in allowed} <= {"gemma-2-9b-it", "Qwen2-7B-Instruct"}


def test_labels_fit_it_and_it_graduates_past_the_threshold(onboarding, tmp_path):
    root, model, train = onboarding
    x = embed(root / "encoder", train.prompts)
    y = train.quality[:, train.model_ids.index(model)]
    before = read_manifest(root)
    cfg = RecalConfig(graduate_labels=150)
    few = recalibrate(root, {model: (x[:80], y[:80])}, tmp_path / "v1", cfg)
    assert few.manifest is not None  # beat the constant prior on the held-out labels
    mid = Scorer.load(few.location)
    assert mid.onboarding == {model}  # 80 < 150: still onboarding
    # the next refit is judged against the prior, not against this fit (it saw those labels)
    fit = mid.cards[mid.model_ids.index(model)]
    assert np.ptp(fit.quality(x[:50])) > 0.01 and np.ptp(yardstick(fit).quality(x[:50])) < 1e-6
    many = recalibrate(few.location, {model: (x[:300], y[:300])}, tmp_path / "v2", cfg)
    assert many.manifest is not None
    scorer = Scorer.load(many.location)
    assert scorer.onboarding == frozenset()
    card = scorer.cards[scorer.model_ids.index(model)]
    assert not card.info[ONBOARDING] and card.info["onboarding_labels"] == 300
    # it learned: better than the prior on prompts it never saw, and not constant
    q = card.quality(x[300:])
    prior = Scorer.load(root).cards[-1].quality(x[300:])
    assert np.ptp(q) > 0.1 and np.ptp(prior) < 1e-6
    assert np.mean((q - y[300:]) ** 2) < np.mean((prior - y[300:]) ** 2)
    # every other model's files kept their bytes
    after = read_manifest(many.location).data["files"]
    assert all(after[k] == v for k, v in before.data["files"].items()
               if not k.startswith(f"models/{model}/") and k != "manifest.json")
