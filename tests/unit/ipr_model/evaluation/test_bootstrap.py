"""The paired bootstrap over prompts (ipr_model.evaluation.bootstrap) on small synthetic splits."""

import numpy as np
import pytest

from ipr_model.evaluation import bootstrap as B
from ipr_model.evaluation import quality_cost as M

IDS = ["big", "mid", "small"]


@pytest.fixture
def split():
    """60 prompts x 3 models: big (cost 10) right 85%, mid (cost 4) 70%, small (cost 1) 50%."""
    rng = np.random.default_rng(7)
    n = 60
    q = (rng.random((n, 3)) < [0.85, 0.7, 0.5]).astype(float)
    c = np.tile([10.0, 4.0, 1.0], (n, 1)) * rng.uniform(0.8, 1.2, (n, 1))
    return q, c


def methods(q, c):
    noisy = np.clip(q * 0.6 + np.random.default_rng(1).random(q.shape) * 0.4, 0, 1)
    return {
        "ipr": B.per_prompt(noisy, c, q, c, IDS),
        "oracle": B.per_prompt(q, c, q, c, IDS),
        "random_mix": B.single_models(q, c),
    }


def test_per_prompt_averages_to_the_operating_points(split):
    q, c = split
    pred = np.clip(q * 0.5 + 0.25, 0, 1)
    pp = B.per_prompt(pred, c, q, c, IDS)
    assert pp.cost.shape == (len(M.TAU_GRID), len(q))
    np.testing.assert_allclose(pp.points(), M.operating_points(pred, c, q, c, IDS))


def test_weights_count_the_draws():
    idx = np.array([[0, 0, 2], [1, 2, 2]])
    np.testing.assert_array_equal(B.weights(idx, 3), [[2, 0, 1], [0, 1, 2]])


def test_resampled_points_are_the_means_over_the_drawn_prompts(split):
    q, c = split
    pp = methods(q, c)["ipr"]
    idx = B.resample_indices(len(q), 5, seed=3)
    got = pp.points(B.weights(idx, len(q)))
    for b in range(5):
        want = np.stack([pp.cost[:, idx[b]].mean(1), pp.quality[:, idx[b]].mean(1)], axis=1)
        np.testing.assert_allclose(got[b], want)


def test_figures_match_the_metrics_on_the_full_set(split):
    q, c = split
    refs = M.reference_and_cheapest(q, c)
    pts = methods(q, c)["ipr"].points()
    f = B.figures(pts, refs)
    s = M.summarize("ipr", pts, refs)
    assert f["arqgc"] == pytest.approx(s["arqgc"]) and f["arqgc_steps"] == s["arqgc_steps"]
    sp = s["saving_at_parity"]
    assert f["saving_at_parity"] == (pytest.approx(sp["saving"]) if sp["reached"] else None)
    assert f["cost_share_0.95"] == s["cost_share"]["0.95"]


def test_interval_covers_the_point_and_is_deterministic_under_a_seed(split):
    q, c = split
    refs = M.reference_and_cheapest(q, c)
    a = B.paired_bootstrap(methods(q, c), q, c, refs, resamples=200, seed=5)
    b = B.paired_bootstrap(methods(q, c), q, c, refs, resamples=200, seed=5)
    other = B.paired_bootstrap(methods(q, c), q, c, refs, resamples=200, seed=6)
    assert a["intervals"] == b["intervals"] and a["p_beats"] == b["p_beats"]
    assert a["intervals"] != other["intervals"]
    for name in ("ipr", "oracle", "random_mix"):
        iv = a["intervals"][name]["arqgc"]
        assert iv["lo"] < iv["point"] < iv["hi"], (name, iv)
        assert iv["reached_share"] == 1.0


def test_p_beats_is_one_for_a_method_better_on_every_prompt_and_half_for_a_copy(split):
    q, c = split
    refs = M.reference_and_cheapest(q, c)
    base = methods(q, c)["ipr"]
    better = B.PerPrompt(cost=base.cost, quality=base.quality + 0.1)
    out = B.paired_bootstrap({"ipr": better, "worse": base, "copy": better}, q, c, refs,
                             resamples=300, seed=0)
    assert out["p_beats"]["worse"]["arqgc"] == 1.0
    assert out["p_beats"]["worse"]["cost_share_0.95"] >= 0.5  # never costlier: ties count half
    assert out["p_beats"]["copy"] == {"arqgc": 0.5, "cost_share_0.95": 0.5}
    assert set(out["p_beats"]) == {"worse", "copy"}


def test_resamples_are_paired_across_methods(split):
    q, c = split
    refs = M.reference_and_cheapest(q, c)
    m = methods(q, c)
    twin = {"ipr": m["ipr"], "twin": B.PerPrompt(m["ipr"].cost.copy(), m["ipr"].quality.copy())}
    out = B.paired_bootstrap(twin, q, c, refs, resamples=100, seed=2)
    np.testing.assert_array_equal(out["draws"]["ipr"]["arqgc"], out["draws"]["twin"]["arqgc"])
    assert out["resample_indices"].shape == (100, len(q))
    # a method's draw b is its figure on the prompts of resample b, against that resample's refs
    idx = out["resample_indices"][17]
    r = M.Refs(refs.ref_idx, c[idx, refs.ref_idx].mean(), q[idx, refs.ref_idx].mean(),
               refs.cheap_idx, c[idx, refs.cheap_idx].mean(), q[idx, refs.cheap_idx].mean())
    pts = np.stack([m["ipr"].cost[:, idx].mean(1), m["ipr"].quality[:, idx].mean(1)], axis=1)
    assert out["draws"]["ipr"]["arqgc"][17] == pytest.approx(B.figures(pts, r)["arqgc"])


def test_unreached_figures_rank_worst_and_interval_ends_read_none():
    q = np.array([[1.0, 0.0]] * 10 + [[1.0, 1.0]] * 10)
    c = np.tile([10.0, 1.0], (20, 1))
    refs = M.reference_and_cheapest(q, c)
    never = B.PerPrompt(cost=c[:, 1][None, :], quality=q[:, 1][None, :])  # always small: Q 0.5
    out = B.paired_bootstrap({"ipr": never}, q, c, refs, resamples=50, seed=0)
    iv = out["intervals"]["ipr"]
    assert iv["cost_share_0.95"] == {"point": None, "lo": None, "hi": None, "reached_share": 0.0}
    assert iv["saving_at_parity"]["point"] is None
    assert np.isinf(out["draws"]["ipr"]["cost_share_0.95"]).all()


def test_bad_input_says_what_was_expected(split):
    q, c = split
    refs = M.reference_and_cheapest(q, c)
    short = B.PerPrompt(cost=np.ones((2, 5)), quality=np.ones((2, 5)))
    with pytest.raises(ValueError, match="has 5 prompts, expected 60"):
        B.paired_bootstrap({"ipr": short}, q, c, refs, resamples=10)
    with pytest.raises(ValueError, match="resamples >= 1"):
        B.resample_indices(10, 0)
    with pytest.raises(ValueError, match=r"\[k points, n prompts\]"):
        B.PerPrompt(cost=np.ones((2, 5)), quality=np.ones((2, 4)))


def test_report_keys_and_cost_share_view(split):
    q, c = split
    refs = M.reference_and_cheapest(q, c)
    rep = B.bootstrap_report(methods(q, c), q, c, refs, resamples=50, seed=0)
    assert set(rep) == {"bootstrap", "intervals", "cost_share", "p_ipr_beats"}
    assert rep["bootstrap"]["resamples"] == 50 and rep["bootstrap"]["paired"]
    assert set(rep["cost_share"]["ipr"]) == {"0.95", "0.975", "0.99", "1.0"}
    assert rep["cost_share"]["ipr"]["0.95"] is rep["intervals"]["ipr"]["cost_share_0.95"]
    assert set(rep["p_ipr_beats"]) == {"oracle", "random_mix"}
