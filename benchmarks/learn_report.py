"""`make learn`'s figures, offline from what the routers recorded (pure numpy).

Each routed prompt carries the predicted quality and the estimated cost of every candidate, by the
version that routed it. Routing those scores again at every tau of ``metrics.TAU_GRID`` and reading
the dataset's recorded quality and cost of the chosen model gives a run's whole quality-cost curve
on any stretch of the stream (:mod:`ipr_model.evaluation.bootstrap`): the section-1 figures (ARQGC,
the cost
share at 95/97.5/99/100% of the reference model's quality, the saving at parity) with paired
bootstrap intervals, the loop-on run against the loop-off run on the same prompts.

Positions are places in the stream (the shuffled order both runs share). A prompt counts in a
stretch only when both runs routed it (paired by prompt).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ipr_model.evaluation import bootstrap
from ipr_model.evaluation import quality_cost as metrics


class Routed(NamedTuple):
    """What a router recorded for one prompt (a RoutedPrompt's numbers)."""

    model_id: str
    predicted_quality: Mapping[str, float]
    estimated_cost_usd: Mapping[str, float]
    router_version: str


@dataclass(frozen=True)
class Stream:
    """One run over the stream, by position: the routing version's scores [n, m] (nan where the
    prompt was not routed), the chosen model's column (-1: not routed) and the version."""

    pred_q: np.ndarray
    est_cost: np.ndarray
    chosen: np.ndarray
    versions: list[str | None]

    @property
    def routed(self) -> np.ndarray:
        return self.chosen >= 0


def stream_arrays(got: Mapping[str, Routed], keys: Sequence[str],
                  model_ids: Sequence[str]) -> Stream:
    """``got`` (prompt key -> what routed it) laid out by stream position (``keys``)."""
    n, m = len(keys), len(model_ids)
    q, c = np.full((n, m), np.nan), np.full((n, m), np.nan)
    chosen = np.full(n, -1)
    versions: list[str | None] = [None] * n
    for i, key in enumerate(keys):
        r = got.get(key)
        if r is None:
            continue
        q[i] = [r.predicted_quality[x] for x in model_ids]
        c[i] = [r.estimated_cost_usd[x] for x in model_ids]
        chosen[i] = list(model_ids).index(r.model_id)
        versions[i] = r.router_version
    return Stream(q, c, chosen, versions)


def windows(n: int, k: int) -> list[tuple[int, int]]:
    """``k`` contiguous stretches [start, stop) of positions 0..n, as equal as can be."""
    if n < k or k < 1:
        raise ValueError(f"cannot cut {n} positions into {k} windows")
    return [(i * n // k, (i + 1) * n // k) for i in range(k)]


def last_half(n: int) -> tuple[int, int]:
    """The last half of the stream: positions n//2 .. n (the middle one, if odd, with it)."""
    return n // 2, n


def paired(on: Stream, off: Stream, start: int, stop: int) -> np.ndarray:
    """The positions of [start, stop) that both runs routed."""
    pos = np.arange(start, stop)
    return pos[on.routed[start:stop] & off.routed[start:stop]]


def realised(on: Stream, off: Stream, idx: np.ndarray, true_q: np.ndarray,
             true_cost: np.ndarray, resamples: int, seed: int) -> dict:
    """The mean recorded quality and cost of the models each run chose (at the tau it ran: what
    the live router delivered), with 95% intervals and on - off, on the same resamples as
    :func:`compare`'s (same ``seed``)."""
    w = bootstrap.weights(bootstrap.resample_indices(len(idx), resamples, seed), len(idx))
    out: dict = {"on": {}, "off": {}, "difference": {}}
    for key, table, higher in (("quality", true_q, True), ("cost_usd", true_cost, False)):
        per = {name: np.asarray(table, np.float64)[idx, s.chosen[idx]]
               for name, s in (("on", on), ("off", off))}
        draws = {name: w @ v / len(idx) for name, v in per.items()}
        for name, v in per.items():
            out[name][key] = _cell(float(v.mean()), draws[name])
        d = draws["on"] - draws["off"]
        out["difference"][key] = {**_cell(float(per["on"].mean() - per["off"].mean()), d),
                                  "p_on_ahead": bootstrap.p_beats(draws["on"], draws["off"],
                                                                  higher)}
    return out


def _cell(point: float, draws: np.ndarray) -> dict:
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"point": point, "lo": float(lo), "hi": float(hi)}


def _difference(on: dict, off: dict, d_on: np.ndarray, d_off: np.ndarray, key: str) -> dict:
    """on - off: the point, the interval over the resamples where both reached the figure, and
    P(on ahead) over every resample (an unreached figure ranked worst, a tie counted half)."""
    both = np.isfinite(d_on) & np.isfinite(d_off)
    diff = d_on[both] - d_off[both]
    lo, hi = np.percentile(diff, [2.5, 97.5]) if len(diff) else (np.nan, np.nan)
    point = None if on["point"] is None or off["point"] is None else on["point"] - off["point"]
    return {"point": point, "lo": float(lo) if len(diff) else None,
            "hi": float(hi) if len(diff) else None, "both_reached_share": float(both.mean()),
            "p_on_ahead": bootstrap.p_beats(d_on, d_off, key in bootstrap.HIGHER_IS_BETTER)}


def compare(on: Stream, off: Stream, idx: np.ndarray, true_q: np.ndarray, true_cost: np.ndarray,
            model_ids: Sequence[str], resamples: int = bootstrap.DEFAULT_RESAMPLES,
            seed: int = 0) -> dict:
    """Both runs' figures on the positions ``idx`` with 95% intervals, and on - off, from one
    paired bootstrap over those prompts (the reference and cheapest models: those of ``idx``)."""
    tq, tc = np.asarray(true_q, np.float64)[idx], np.asarray(true_cost, np.float64)[idx]
    refs = metrics.reference_and_cheapest(tq, tc)
    methods = {name: bootstrap.per_prompt(s.pred_q[idx], s.est_cost[idx], tq, tc, model_ids)
               for name, s in (("on", on), ("off", off))}
    out = bootstrap.paired_bootstrap(methods, tq, tc, refs, resamples, seed, against="on")
    iv, draws = out["intervals"], out["draws"]
    return {
        "prompts": len(idx),
        "refs": refs.as_dict(list(model_ids)),
        "on": iv["on"],
        "off": iv["off"],
        "difference": {k: _difference(iv["on"][k], iv["off"][k], draws["on"][k],
                                      draws["off"][k], k) for k in bootstrap.FIGURES},
        "realised": realised(on, off, idx, true_q, true_cost, resamples, seed),
    }


def window_rows(on: Stream, off: Stream, true_q: np.ndarray, true_cost: np.ndarray,
                model_ids: Sequence[str], k: int, resamples: int, seed: int = 0) -> list[dict]:
    """:func:`compare` on each of ``k`` windows of the stream, with the versions that routed
    them in the loop-on run."""
    rows = []
    for w, (start, stop) in enumerate(windows(len(on.chosen), k)):
        idx = paired(on, off, start, stop)
        used = sorted({v for v in on.versions[start:stop] if v is not None})
        rows.append({"window": w, "start": start, "stop": stop, "versions_on": used,
                     **compare(on, off, idx, true_q, true_cost, model_ids, resamples, seed)})
    return rows
