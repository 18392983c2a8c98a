"""``ipr shadow report`` as a pure function: the live and the shadow version on the same prompts.

A shadow decision (``router.shadow``) is paired with the live decision (``router.decisions``) of
the same prompt by the version that routed it (its ``shadow_of``); a prompt decided more than once
(a batch routed again after a crash) counts once, its last decision. For each side: the models
chosen and the estimated cost (the sum of each chosen model's ``estimated_cost_usd``). Quality
is compared paired: on the prompts where ``feedback.quality`` holds labels for both sides' choices,
each side's mean quality there (two means over different prompts would compare the prompts, not
the versions). Labels exist only for the model that answered, the live choice: the shadow's
quality is known on the prompts where it agreed, or where a label for its model exists for
another reason; ``labelled_alone`` counts each side's labelled prompts, paired or not.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from schemas import QualityFeedback, RoutingDecision


def shadow_report(
    decisions: Iterable[RoutingDecision], shadow: Iterable[RoutingDecision],
    feedback: Iterable[QualityFeedback] = (), version: str | None = None,
) -> dict:
    """The comparison, as JSON-ready values, of shadow version ``version`` (default: the one
    of the latest shadow decision; every version seen is counted in ``shadow_versions``)."""
    shadow = list(shadow)
    seen = Counter(d.router_version for d in shadow)
    if version is None and shadow:
        version = max(shadow, key=lambda d: d.routed_at).router_version
    live = {(d.prompt_id, d.router_version): d for d in decisions}
    mine = {d.prompt_id: d for d in shadow if d.router_version == version}
    pairs = [(live[(pid, d.shadow_of)], d) for pid, d in sorted(mine.items())
             if (pid, d.shadow_of) in live]
    labels: dict[tuple[str, str], list[float]] = defaultdict(list)
    for f in feedback:
        labels[(f.prompt_id, f.model_id)].append(f.quality)
    both = [(a, b) for a, b in pairs
            if (a.prompt_id, a.model_id) in labels and (b.prompt_id, b.model_id) in labels]
    agreed = sum(a.model_id == b.model_id for a, b in pairs)
    switches = Counter(f"{a.model_id} -> {b.model_id}" for a, b in pairs
                       if a.model_id != b.model_id)
    live_side = _side([a for a, _ in pairs], [a for a, _ in both], labels)
    shadow_side = _side([b for _, b in pairs], [b for _, b in both], labels)
    return {
        "version": version,
        "shadow_versions": dict(sorted(seen.items())),
        "live_versions": dict(sorted(Counter(a.router_version for a, _ in pairs).items())),
        "paired": len(pairs),
        "unpaired_shadow": len(mine) - len(pairs),
        "agreed": agreed,
        "agreement": agreed / len(pairs) if pairs else None,
        "labelled_both": len(both),
        "quality_difference": None if not both else
        shadow_side["quality"] - live_side["quality"],
        "live": live_side,
        "shadow": shadow_side,
        "switches": dict(switches.most_common()),
    }


def _side(chosen: list[RoutingDecision], paired: list[RoutingDecision],
          labels: dict[tuple[str, str], list[float]]) -> dict:
    """Counts per model and estimated cost of one side's choices; the mean quality of its
    choices on the prompts labelled for both sides (``paired``)."""
    def quality(d: RoutingDecision) -> float:
        q = labels[(d.prompt_id, d.model_id)]
        return sum(q) / len(q)

    got = [quality(d) for d in paired]
    return {
        "models": dict(sorted(Counter(d.model_id for d in chosen).items())),
        "estimated_cost_usd": sum(d.estimated_cost_usd[d.model_id] for d in chosen),
        "labelled": len(got),
        "labelled_alone": sum((d.prompt_id, d.model_id) in labels for d in chosen),
        "quality": sum(got) / len(got) if got else None,
    }


def render(report: dict) -> str:
    """The report as a few lines of text."""
    r, lines = report, []
    share = "n/a" if r["agreement"] is None else f"{r['agreement']:.1%}"
    lines.append(f"paired prompts {r['paired']} (shadow versions {r['shadow_versions']}, live "
                 f"{r['live_versions']}; {r['unpaired_shadow']} shadow decisions unpaired)")
    lines.append(f"version {r['version']}: agreement {share} ({r['agreed']} of {r['paired']})")
    for side in ("live", "shadow"):
        s = r[side]
        quality = f"no prompt labelled for both ({s['labelled_alone']} for {side} alone)" \
            if s["quality"] is None else \
            f"quality {s['quality']:.3f} on the {s['labelled']} prompts labelled for both"
        lines.append(f"{side}: estimated cost ${s['estimated_cost_usd']:.6f}; {quality}; "
                     f"models {s['models']}")
    if r["switches"]:
        top = list(r["switches"].items())[:5]
        lines.append("most frequent changes: " + ", ".join(f"{k} ({n})" for k, n in top))
    return "\n".join(lines)
