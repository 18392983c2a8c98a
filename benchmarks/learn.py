"""`make learn`: learning from live labels, on stationary traffic.

A dataset's test split, shuffled once with a seed, is streamed through the running router, replay
workers and feedback service. Each routed prompt's label is the recorded quality of the model it
was sent to (in production the only label there is); the feedback service recalibrates that
model from its labels and publishes versions the router hot-swaps. The same stream runs again,
as the control, without the feedback service. Both runs share one broker, each with topics of its
own (``benchmarks.loop.run_topics``).

The figures come offline from the scores each prompt was routed with
(:mod:`benchmarks.learn_report`): the section-1 quality-cost figures of both runs over the
last half of the stream with paired 95% intervals and on - off, and per window, to
``build/learn.json`` and ``build/learn.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.cpu import Steal
from benchmarks.learn_report import (
    Routed,
    compare,
    last_half,
    paired,
    stream_arrays,
    window_rows,
)
from benchmarks.loop import (
    announced_versions,
    recalibrations,
    run_topics,
    start_services,
    stream,
)
from benchmarks.traffic import Collected, prompt_events, wait_until_routing
from ipr_model.artifacts.manifest import read_manifest
from ipr_model.training.datasets import Dataset, load_dataset
from schemas.topics import model_topic
from streams.kafka.admin import create_topics
from streams.kafka.local import kafka_bootstrap
from streams.kafka.settings import KafkaSettings


@dataclass(frozen=True)
class LearnConfig:
    """The scenario's settings (all recorded in the report)."""

    tolerance: float = 0.2  # the router's default tau (IPR_ROUTER_DEFAULT_TOLERANCE)
    rate: float = 15.0  # prompts per second
    seed: int = 0  # of the stream's order
    limit: int | None = None  # stream only the first prompts of the shuffled split
    min_labels: int = 20  # new labels of a model that trigger its recalibration
    recal_interval_s: float = 10.0  # a model with fewer new labels recalibrates after this long
    min_publish_interval_s: float = 0.0  # publish as often as the labels allow
    windows: int = 8
    resamples: int = 1000

    def feedback_env(self) -> dict[str, str]:
        return {"IPR_FEEDBACK_MIN_LABELS": str(self.min_labels),
                "IPR_FEEDBACK_RECAL_INTERVAL_S": str(self.recal_interval_s),
                "IPR_FEEDBACK_MIN_PUBLISH_INTERVAL_S": str(self.min_publish_interval_s)}


def stream_order(n: int, seed: int, limit: int | None = None) -> list[int]:
    """The split's rows in the stream's fixed random order (the first ``limit`` of it)."""
    order = np.random.default_rng(seed).permutation(n)
    return [int(i) for i in order[:limit]]


def run_summary(part: Dataset, run: str, loop: bool, got: Collected, announced: list[str],
                recal: list[dict]) -> dict:
    """What one run sent, routed, dead-lettered and lost, its labels and its versions."""
    n = len(part)
    labelled = Counter(got.routed[k].model_id for k in got.feedback if k in got.routed)
    first = {f"{run}:{pid}" for pid in part.ids[: n // 2]}
    return {
        "run": run,
        "loop": loop,
        "sent": n,
        "routed": len(got.routed),
        "dead_lettered": len(got.dead),
        "lost": n - len(got.routed) - len(got.dead),
        "responses": len(got.responses),
        "labels": len(got.feedback),
        "labels_dead_lettered": got.other_dead,
        "labels_per_model": dict(labelled.most_common()),
        "labels_first_half_per_model": dict(Counter(
            got.routed[k].model_id for k in got.feedback if k in first and k in got.routed
        ).most_common()),
        "versions_announced": len(announced),
        "versions_adopted": len({r.router_version for r in got.routed.values()}) - 1,
        "recalibrations": recal,
    }


def run_scenario(settings: KafkaSettings, artifacts: Path, dataset: Path, part: Dataset,
                 loop: bool, cfg: LearnConfig, run: str) -> tuple[dict, dict[str, Routed]]:
    """Stream ``part`` once through a router, replay workers and (``loop``) the feedback
    service, on topics of the run's own; returns the run's summary and what routed each
    prompt."""
    settings, topic_env = run_topics(settings, run)
    log_dir = Path("build") / "logs" / f"learn-{run}"
    topics = sorted({model_topic(m) for m in part.model_ids})
    outputs = [settings.responses, settings.prompts_dlq, settings.feedback, *topics]
    asyncio.run(create_topics(settings, [settings.prompts_in, settings.decisions,
                                         settings.control, *outputs], settings.topic_partitions))
    env = {"IPR_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, **topic_env}
    services = start_services(artifacts, dataset, env, run, "learn", cfg.tolerance,
                              cfg.feedback_env() if loop else None, log_dir)
    try:
        asyncio.run(wait_until_routing(settings, settings, run, topics))
        t0 = time.monotonic()
        with Steal() as steal:
            got = asyncio.run(stream(settings, outputs, run, prompt_events(part, run), cfg.rate,
                                     settings))
        seconds = time.monotonic() - t0
        announced = asyncio.run(announced_versions(settings))
        exited = [s.name for s in services if not s.alive()]
    finally:
        for s in services:
            s.stop()
    summary = {**run_summary(part, run, loop, got, announced,
                             recalibrations(log_dir / "feedback.log")),
               "services_exited_early": exited, "seconds": round(seconds, 1),
               "steal_percent": steal.percent}
    routed = {k: Routed(v.model_id, v.predicted_quality, v.estimated_cost_usd, v.router_version)
              for k, v in got.routed.items()}
    print(f"loop {'on ' if loop else 'off'}: sent {summary['sent']}, routed {summary['routed']}, "
          f"dead-lettered {summary['dead_lettered']}, labels {summary['labels']}, versions "
          f"adopted {summary['versions_adopted']} ({seconds:.0f} s, steal {steal.percent}%)",
          flush=True)
    return summary, routed


def figures(part: Dataset, runs: dict[str, str], routed: dict[str, dict[str, Routed]],
            cfg: LearnConfig) -> dict:
    """The last half's and each window's figures of both runs, paired by prompt."""
    on, off = (stream_arrays(routed[k], [f"{runs[k]}:{pid}" for pid in part.ids], part.model_ids)
               for k in ("on", "off"))
    start, stop = last_half(len(part))
    idx = paired(on, off, start, stop)
    return {
        "last_half": {"start": start, "stop": stop, **compare(
            on, off, idx, part.quality, part.cost, part.model_ids, cfg.resamples, cfg.seed)},
        "windows": window_rows(on, off, part.quality, part.cost, part.model_ids, cfg.windows,
                               cfg.resamples, cfg.seed),
    }


def run_learn(artifacts: Path, dataset: Path, cfg: LearnConfig = LearnConfig(),
              out: Path = Path("build/learn.json"), bootstrap: str | None = None) -> dict:
    """Both runs on one broker (``bootstrap``, else IPR_KAFKA_BOOTSTRAP or a local one), the
    figures, ``out`` and its plot (``out`` with ``.png``)."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    manifest = read_manifest(artifacts)
    data = load_dataset(dataset)
    test = data.split("test") if data.has_split("test") else data
    test = test.restrict(manifest.models)
    part = test.subset(stream_order(len(test), cfg.seed, cfg.limit))
    runs = {"on": uuid.uuid4().hex[:6], "off": uuid.uuid4().hex[:6]}
    print(f"streaming {len(part)} {data.name} test prompts in a fixed random order (seed "
          f"{cfg.seed}) at {cfg.rate:g}/s, tau {cfg.tolerance}: loop on, then off", flush=True)
    summaries, routed = {}, {}
    with (contextlib.nullcontext(bootstrap) if bootstrap else kafka_bootstrap()) as kafka:
        settings = KafkaSettings(kafka_bootstrap=kafka)
        for name in ("on", "off"):
            summaries[name], routed[name] = run_scenario(
                settings, artifacts, dataset, part, name == "on", cfg, runs[name])
    report = {
        "dataset": data.name,
        "artifacts_version": manifest.version,
        "date": time.strftime("%Y-%m-%d"),
        "prompts": len(part),
        "config": asdict(cfg),
        "runs": summaries,
        "lost": sum(s["lost"] for s in summaries.values()),
        **figures(part, runs, routed, cfg),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    plot(report, out.with_suffix(".png"))
    return report


PLOTTED = (("arqgc", "ARQGC (higher is better)"),
           ("cost_share_0.95", "cost share at 95% of Q_ref (lower is better)"),
           ("realised.quality", "quality at the router's tau (live)"),
           ("realised.cost_usd", "cost per prompt at the router's tau, USD (live)"))


def _cell(row: dict, side: str, key: str) -> dict:
    """A window's figure ``key`` of ``side`` (on, off, difference); ``realised.*``: at tau."""
    if key.startswith("realised."):
        return row["realised"][side][key.split(".", 1)[1]]
    return row[side][key]


def plot(report: dict, png: Path) -> None:
    """Each window's figures, loop on and off with their 95% intervals, and on - off."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["windows"]
    x = np.array([(r["start"] + r["stop"]) / 2 for r in rows])
    fig, axes = plt.subplots(2, len(PLOTTED), figsize=(18, 7), sharex=True)
    for col, (key, title) in enumerate(PLOTTED):
        top, bottom = axes[0, col], axes[1, col]
        for name, label, dx, style in (("on", "feedback loop on", -2, "o-"),
                                        ("off", "loop off (control)", 2, "s--")):
            _errorbars(top, x + dx, [_cell(r, name, key) for r in rows], style, label)
        _errorbars(bottom, x, [_cell(r, "difference", key) for r in rows], "d-", "on - off")
        bottom.axhline(0, color="grey", lw=0.8)
        top.set_title(title, fontsize=9)
        bottom.set_xlabel("position in the stream (window midpoints)")
        for ax in (top, bottom):
            ax.axvspan(report["last_half"]["start"], report["prompts"], color="grey", alpha=0.08)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    on = report["runs"]["on"]
    fig.suptitle(f"{report['dataset']}: {report['prompts']} test prompts in a fixed random "
                 f"order; loop on: {on['versions_adopted']} versions adopted from "
                 f"{on['labels']} labels (shaded: the last half)", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=130)
    plt.close(fig)


def _errorbars(ax, x: np.ndarray, cells: list[dict], style: str, label: str) -> None:
    """Points with their intervals; a figure not reached (None) is left out."""
    keep = [i for i, c in enumerate(cells) if c["point"] is not None]
    pts = np.array([cells[i]["point"] for i in keep], dtype=float)
    lo = np.array([cells[i]["lo"] if cells[i]["lo"] is not None else np.nan for i in keep])
    hi = np.array([cells[i]["hi"] if cells[i]["hi"] is not None else np.nan for i in keep])
    err = np.vstack([np.nan_to_num(pts - lo), np.nan_to_num(hi - pts)]).clip(min=0)
    ax.errorbar(x[keep], pts, yerr=err, fmt=style, capsize=3, label=label, ms=4)
