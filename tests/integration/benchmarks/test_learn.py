"""`make learn` on a slice: 100 shuffled zeroeval test prompts through a real router, replay
workers and feedback service, the loop on then off, and the report's figures."""

from __future__ import annotations

import json

import pytest

from benchmarks.learn import LearnConfig, run_learn

pytestmark = pytest.mark.integration


def _in_order(cells: dict) -> list[str]:
    """The areas whose interval does not hold its point (lo <= point <= hi). Only the areas: a
    percentile interval of a step figure (a cost share) over 50 prompts may miss its point."""
    return [k for k in ("arqgc", "arqgc_steps") if k in cells
            and not cells[k]["lo"] <= cells[k]["point"] <= cells[k]["hi"]]


def test_learn_streams_every_prompt_both_ways_and_only_the_loop_recalibrates(
    kafka_bootstrap, small_artifacts, data_dir, tmp_path
):
    # 100 prompts: about eight recalibrations; on stationary traffic most corrections stay
    # inside their band, so few or none are published (docs/measurements.md, "the band")
    cfg = LearnConfig(limit=100, rate=10.0, min_labels=10, windows=4, resamples=200)
    out = tmp_path / "learn.json"
    run_learn(small_artifacts, data_dir / "zeroeval", cfg, out=out, bootstrap=kafka_bootstrap)
    r = json.loads(out.read_text())
    on, off = r["runs"]["on"], r["runs"]["off"]
    for run in (on, off):
        assert run["sent"] == 100 == run["routed"] + run["dead_lettered"], run
        assert run["lost"] == 0 and not run["services_exited_early"], run
        assert run["labels"] == run["routed"]  # every routed prompt's replay answer is labelled
    assert on["recalibrations"], on  # the loop ran; each published one was announced
    assert on["versions_announced"] == sum(x["published"] for x in on["recalibrations"]), on
    assert off["recalibrations"] == [] and off["versions_announced"] == off["versions_adopted"] == 0
    assert r["config"]["seed"] == 0 and r["config"]["min_labels"] == 10
    assert out.with_suffix(".png").stat().st_size > 0

    half = r["last_half"]
    assert half["start"] == 50 and half["prompts"] == 100 - 50  # nothing dead-lettered
    for side in ("on", "off"):
        assert half[side]["arqgc"]["point"] is not None
        assert not _in_order(half[side]), half[side]
    assert not _in_order(half["difference"])
    assert 0.0 <= half["difference"]["arqgc"]["p_on_ahead"] <= 1.0
    assert [w["prompts"] for w in r["windows"]] == [25] * 4
