"""`make learn`'s pure figures: stream positions, windows, the last half, pairing by prompt, and
the paired comparison on hand-made streams whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.learn_report import (
    Routed,
    Stream,
    compare,
    last_half,
    paired,
    stream_arrays,
    window_rows,
    windows,
)

MODELS = ["cheap", "ref"]
COST = {"cheap": 1.0, "ref": 10.0}


def test_windows_cut_the_stream_into_contiguous_near_equal_stretches() -> None:
    assert windows(10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert windows(3, 3) == [(0, 1), (1, 2), (2, 3)]
    with pytest.raises(ValueError):
        windows(3, 4)


def test_the_last_half_takes_the_middle_prompt_of_an_odd_stream() -> None:
    assert last_half(10) == (5, 10)
    assert last_half(9) == (4, 9)


def test_stream_arrays_lay_out_what_routed_each_prompt_by_position() -> None:
    got = {"r:b": Routed("ref", {"cheap": 0.2, "ref": 0.9}, COST, "v2"),
           "r:a": Routed("cheap", {"cheap": 0.7, "ref": 0.8}, COST, "v1")}
    s = stream_arrays(got, ["r:a", "r:missing", "r:b"], MODELS)
    assert s.chosen.tolist() == [0, -1, 1]
    assert s.routed.tolist() == [True, False, True]
    assert s.versions == ["v1", None, "v2"]
    np.testing.assert_array_equal(s.pred_q[[0, 2]], [[0.7, 0.8], [0.2, 0.9]])
    assert np.isnan(s.pred_q[1]).all() and np.isnan(s.est_cost[1]).all()
    np.testing.assert_array_equal(s.est_cost[2], [1.0, 10.0])


def _stream(routed: list[bool]) -> Stream:
    n = len(routed)
    return Stream(np.zeros((n, 2)), np.zeros((n, 2)), np.where(routed, 0, -1), ["v"] * n)


def test_a_prompt_counts_only_where_both_runs_routed_it() -> None:
    on, off = _stream([True, True, False, True]), _stream([True, False, True, True])
    assert paired(on, off, 0, 4).tolist() == [0, 3]
    assert paired(on, off, 1, 4).tolist() == [3]
    assert paired(on, off, 1, 3).tolist() == []


def oracle_and_constant(n: int = 40) -> tuple[Stream, Stream, np.ndarray, np.ndarray]:
    """Half the prompts only the reference model answers; on knows which (its scores are the
    truth), off scores every prompt alike (cheap 0.5, ref 0.9)."""
    true_q = np.array([[1.0, 1.0] if i % 2 else [0.0, 1.0] for i in range(n)])
    true_cost = np.tile([1.0, 10.0], (n, 1))
    on = Stream(true_q.copy(), true_cost.copy(), np.where(true_q[:, 0] == 1, 0, 1),
                ["v1"] * (n // 2) + ["v2"] * (n - n // 2))
    off = Stream(np.tile([0.5, 0.9], (n, 1)), true_cost.copy(), np.ones(n, dtype=int), ["v1"] * n)
    return on, off, true_q, true_cost


def test_compare_measures_both_runs_on_the_same_prompts_and_their_difference() -> None:
    on, off, tq, tc = oracle_and_constant()
    r = compare(on, off, np.arange(40), tq, tc, MODELS, resamples=300, seed=1)
    assert r["prompts"] == 40 and r["refs"]["ref_model"] == "ref"
    # on reaches the reference's quality sending only the prompts that need it there: half the
    # prompts at 10, half at 1 -> 5.5 of the reference's 10; off needs the reference for all
    assert r["on"]["cost_share_1.0"]["point"] == pytest.approx(0.55)
    assert r["off"]["cost_share_1.0"]["point"] == pytest.approx(1.0)
    d = r["difference"]["cost_share_1.0"]
    assert d["point"] == pytest.approx(-0.45)
    assert d["lo"] <= d["point"] <= d["hi"] < 0
    assert d["p_on_ahead"] == 1.0  # lower cost is ahead, in every resample
    assert r["difference"]["arqgc"]["p_on_ahead"] == 1.0
    for side in ("on", "off"):
        cell = r[side]["arqgc"]
        assert cell["lo"] <= cell["point"] <= cell["hi"]
    # at the tau they ran: on chose the oracle's model, off always the reference
    live = r["realised"]
    assert live["on"]["quality"] == {"point": 1.0, "lo": 1.0, "hi": 1.0}
    assert live["on"]["cost_usd"]["point"] == 5.5
    assert live["off"]["cost_usd"] == {"point": 10.0, "lo": 10.0, "hi": 10.0}
    saved = live["difference"]["cost_usd"]
    assert saved["lo"] <= saved["point"] == -4.5 <= saved["hi"] < 0 and saved["p_on_ahead"] == 1.0
    assert live["difference"]["quality"]["p_on_ahead"] == 0.5  # the same quality: a tie


def test_identical_runs_differ_by_nothing() -> None:
    on, _, tq, tc = oracle_and_constant()
    r = compare(on, on, np.arange(40), tq, tc, MODELS, resamples=200)
    for cell in r["difference"].values():
        if cell["point"] is not None:
            assert cell["point"] == cell["lo"] == cell["hi"] == 0.0
        assert cell["p_on_ahead"] == 0.5


def test_window_rows_pair_each_window_and_name_the_versions_that_routed_it() -> None:
    on, off, tq, tc = oracle_and_constant()
    off.chosen[3] = -1  # dead-lettered in the control run: left out of both
    rows = window_rows(on, off, tq, tc, MODELS, k=2, resamples=100)
    assert [(r["start"], r["stop"], r["prompts"]) for r in rows] == [(0, 20, 19), (20, 40, 20)]
    assert [r["versions_on"] for r in rows] == [["v1"], ["v2"]]
    assert all(r["difference"]["cost_share_1.0"]["point"] < 0 for r in rows)
