"""The pure parts of `make soak` (``benchmarks.soak``): what the run sent and got back, the
per-minute summary of it and of the samples, the bar, and the plot. No Kafka, no processes."""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from benchmarks.traffic import LOG_APPEND_TIME
from ipr_model.evaluation.stats import percentiles
from schemas import PromptRequest
from streams.kafka.settings import KafkaSettings

MINUTE = 60.0
RSS_TOLERANCE = 0.03  # the last minute's RSS may exceed the warm-up minute's by this much
LAG_MARGIN_S = 5.0  # seconds of traffic the second half's lag may exceed the first half's by
BAR_SERVICES = ("router", "worker")
SWAPS_PER_30_MIN = 20  # hot swaps the router must adopt in 30 minutes (pro rata when shorter)


def baseline_minute(minutes: int) -> int:
    """The minute warm-up ends: minute 10 of a 30-minute run, ⌈minutes/3⌉ of any run."""
    return max(1, math.ceil(minutes / 3))


def swaps_needed(minutes: int) -> int:
    return math.ceil(SWAPS_PER_30_MIN * minutes / 30)


@dataclass
class Tracker:
    """What the run sent and what came back (this run's prompt ids only)."""

    run: str
    sent: list[float] = field(default_factory=list)
    routed: dict[str, tuple[float, float]] = field(default_factory=dict)
    versions_seen: set[str] = field(default_factory=set)
    dead: set[str] = field(default_factory=set)
    answered: dict[str, float] = field(default_factory=dict)
    response_errors: int = 0
    duplicates: int = 0
    published: list[float] = field(default_factory=list)
    published_versions: set[str] = field(default_factory=set)
    samples: list[dict] = field(default_factory=list)

    def events(self, texts: list[str], until: float):
        """The texts cycled under unique ids, stamped as they go out, until ``until``
        (time.monotonic)."""
        bases = [PromptRequest(prompt_id="x", text=t).model_dump() for t in texts]
        for n in itertools.count():
            if time.monotonic() >= until:
                return
            v = {**bases[n % len(bases)], "prompt_id": f"{self.run}:{n}", "sent_at": time.time()}
            self.sent.append(v["sent_at"])
            yield v["prompt_id"].encode(), orjson.dumps(v)

    def adopted(self) -> int:
        """Versions published in this run that routed at least one prompt (hot swaps taken)."""
        return len(self.published_versions & self.versions_seen)

    def complete(self) -> bool:
        return (len(self.routed) + len(self.dead) >= len(self.sent)
                and len(self.answered) >= len(self.routed))

    def take(self, topic: str, msg, settings: KafkaSettings) -> None:
        key = (msg.key or b"").decode(errors="replace")
        if topic == settings.control:
            if key == "artifacts" and self.run.encode() in (msg.value or b""):
                self.published.append(msg.timestamp / 1000.0)
                self.published_versions.add(orjson.loads(msg.value).get("version") or "")
            return
        if not key.startswith(f"{self.run}:"):
            return
        v = orjson.loads(msg.value)
        if topic == settings.responses:
            self.duplicates += key in self.answered
            self.answered[key] = msg.timestamp / 1000.0
            self.response_errors += bool(v.get("error"))
        elif topic == settings.prompts_dlq:
            if v.get("source_topic") == settings.prompts_in:
                self.dead.add(key)
        elif key in self.routed:
            self.duplicates += 1
        else:
            arrival = (msg.timestamp / 1000.0 if msg.timestamp_type == LOG_APPEND_TIME
                       else time.time())
            self.routed[key] = (v["sent_at"], arrival)
            self.versions_seen.add(v.get("router_version") or "")


def minute_rows(t0: float, minutes: int, sent: list[float], routed: list[tuple[float, float]],
                answered: list[float], versions: list[float], samples: list[dict]) -> list[dict]:
    """One row per minute of the run from ``t0``. ``sent``: send times; ``routed``: (sent_at,
    arrival on the model topic); ``answered``, ``versions``: times; ``samples``: the sampler's
    dicts (``t``, ``rss_mb`` and ``cpu_s`` per service, ``lag`` per group, ``load1``, ``ticks``
    (steal, total))."""
    def minute(t: float) -> int:
        return int((t - t0) // MINUTE)

    def count(times) -> list[int]:
        c = np.bincount([m for m in map(minute, times) if 0 <= m < minutes], minlength=minutes)
        return [int(x) for x in c]

    sent_n, answered_n, versions_n = count(sent), count(answered), count(versions)
    routed_n = count(a for _, a in routed)
    lat: list[list[float]] = [[] for _ in range(minutes)]
    for s, a in routed:
        if 0 <= minute(s) < minutes:
            lat[minute(s)].append((a - s) * 1000.0)
    rows = []
    for m in range(minutes):
        got = [s for s in samples if minute(s["t"]) == m]
        p = percentiles(lat[m])
        rows.append({
            "minute": m + 1, "sent": sent_n[m], "routed": routed_n[m],
            "answered": answered_n[m], "versions_published": versions_n[m],
            "latency_ms": {"p50": p["p50"], "p99": p["p99"]},
            **_sampled(got),
        })
    return rows


def _sampled(got: list[dict]) -> dict:
    """A minute's samples: mean and peak RSS, peak and last lag, load, steal, CPU per service."""
    if not got:
        return {"rss_mb": {}, "rss_max_mb": {}, "lag_max": {}, "lag_end": {}, "load1": None,
                "steal_percent": None, "cpu_percent": {}}
    first, last = got[0], got[-1]
    lags = sorted({k for s in got for k in s["lag"]})
    span = max(1e-9, last["t"] - first["t"])
    steal, total = (last["ticks"][i] - first["ticks"][i] for i in (0, 1))
    return {
        "rss_mb": {k: round(float(np.mean([s["rss_mb"][k] for s in got])), 1)
                   for k in last["rss_mb"]},
        "rss_max_mb": {k: max(s["rss_mb"][k] for s in got) for k in last["rss_mb"]},
        # a sample taken while the broker was down has no lag
        "lag_max": {k: max(s["lag"][k] for s in got if k in s["lag"]) for k in lags},
        "lag_end": next((dict(s["lag"]) for s in reversed(got) if s["lag"]), {}),
        "load1": round(float(np.mean([s["load1"] for s in got])), 2),
        "steal_percent": round(100.0 * steal / total, 1) if total > 0 else None,
        "cpu_percent": {k: round(100.0 * (last["cpu_s"][k] - first["cpu_s"][k]) / span, 1)
                        for k in last["cpu_s"]} if len(got) > 1 else {},
    }


def soak_bar(rows: list[dict], drain: dict, lost: int, rate: float, alive: bool,
             bar_groups: list[str], adopted: int | None = None,
             restart: dict | None = None) -> dict:
    """Whether the run passed (``benchmarks.soak``'s docstring says what is checked), and each
    check. ``adopted``: the hot swaps the router took (None: not checked); ``restart``: the
    broker's restart (``minute``, 1-based, and ``ok``), whose minute and the next are left out of
    the lag comparison (the stall is what a restart is; the drain and the losses still count)."""
    base = rows[min(baseline_minute(len(rows)), len(rows)) - 1]
    last = rows[-1]
    rss = {}
    for name in BAR_SERVICES:
        b, x = base["rss_mb"].get(name), last["rss_mb"].get(name)
        change = (x - b) / b if b and x is not None else None
        rss[name] = {"baseline_mb": b, "last_mb": x,
                     "change": None if change is None else round(change, 4),
                     "ok": change is not None and change <= RSS_TOLERANCE}
    stalled = {restart["minute"], restart["minute"] + 1} if restart else set()
    steady = [r for r in rows if r["minute"] not in stalled] or rows
    half = max(1, len(steady) // 2)
    first, second = steady[:half], steady[half:] or steady[-1:]
    margin = max(10.0, LAG_MARGIN_S * rate)
    lag = {}
    for g in bar_groups:
        a = max((r["lag_max"].get(g, 0) for r in first), default=0)
        b = max((r["lag_max"].get(g, 0) for r in second), default=0)
        lag[g] = {"first_half_max": a, "second_half_max": b, "ok": b <= a + margin}
    checks = {
        "rss_growth_within_3_percent": all(v["ok"] for v in rss.values()),
        "lag_bounded": all(v["ok"] for v in lag.values()),
        "lag_drained": bool(drain.get("drained")),
        "nothing_lost": lost == 0,
        "services_alive": alive,
    }
    if adopted is not None:
        checks["hot_swaps_adopted"] = adopted >= swaps_needed(len(rows))
    if restart is not None:
        checks["broker_restarted"] = bool(restart.get("ok"))
    return {"passed": all(checks.values()), "checks": checks, "rss": rss, "lag": lag,
            "lag_margin_records": round(margin, 1), "rss_tolerance": RSS_TOLERANCE,
            "baseline_minute": base["minute"], "last_minute": last["minute"],
            "swaps_adopted": adopted, "swaps_needed": swaps_needed(len(rows)),
            "lag_minutes_left_out": sorted(stalled)}


def plot(report: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["per_minute"]
    x = [r["minute"] for r in rows]
    fig, ((a, b), (c, d)) = plt.subplots(2, 2, figsize=(11, 7))
    for name in rows[-1]["rss_mb"]:
        a.plot(x, [r["rss_mb"].get(name) for r in rows], "o-", label=name)
    workers = [g for g in rows[-1]["lag_max"] if g.startswith("worker.")]
    b.plot(x, [r["lag_max"].get("router") for r in rows], "o-", label="router")
    b.plot(x, [max((r["lag_max"].get(g, 0) for g in workers), default=0) for r in rows], "o-",
           label=f"worker (highest of {len(workers)} groups)")
    b.plot(x, [r["lag_max"].get("feedback") for r in rows], "o--", label="feedback (no bar)")
    for p in ("p50", "p99"):
        c.plot(x, [r["latency_ms"][p] for r in rows], "o-", label=p)
    for k in ("sent", "routed", "answered"):
        d.plot(x, [r[k] for r in rows], "o-", label=k)
    d2 = d.twinx()
    d2.plot(x, [r["load1"] for r in rows], "k:", label="load avg (1 min)")
    d2.set_ylabel("load average", fontsize=8)
    for ax, title in ((a, "RSS, mean per minute (MB)"), (b, "consumer lag, max per minute"),
                      (c, "routing latency, produce -> model topic (ms)"),
                      (d, f"prompts per minute ({report['rate_per_s']}/s offered)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("minute")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"soak: {'PASS' if report['passed'] else 'FAIL'}, lost {report['lost']}, "
                 f"{report['versions_published']} versions, steal {report['steal_percent']}%",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
