"""The feedback service's pure decisions: which labels it refuses, when a model recalibrates."""

from __future__ import annotations

from schemas import QualityFeedback


def judge(fb: QualityFeedback, decision: dict | None, models: frozenset[str],
          version: str) -> tuple[str, str] | None:
    """Why a label cannot be used (error kind, message), or None when it can. ``models`` are
    those of the artifacts' ``version``; ``decision`` is the routing decision of its prompt."""
    if decision is None:
        return "unknown_prompt", f"no routing decision for prompt {fb.prompt_id!r} (or it expired)"
    if fb.model_id not in models:
        return "unknown_model", f"model {fb.model_id!r} is not in artifacts {version}"
    if fb.model_id != decision["model"]:
        return "wrong_model", (
            f"prompt {fb.prompt_id!r} was routed to {decision['model']!r}, not {fb.model_id!r}"
        )
    return None


def due(new_labels: int, since_last_s: float, min_labels: int, interval_s: float,
        since_publish_s: float = float("inf"), min_publish_s: float = 0.0) -> bool:
    """Recalibrate when ``min_labels`` new labels exist, or when some exist and the last
    recalibration (or the service's start) is ``interval_s`` old; never sooner than
    ``min_publish_s`` after the last published version (a burst of labels waits, and counts)."""
    if since_publish_s < min_publish_s:
        return False
    return new_labels >= min_labels or (new_labels > 0 and since_last_s >= interval_s)


def versions_to_remove(versions: list[tuple[float, str]], keep: int,
                       protected: set[str]) -> list[str]:
    """Of ``(created_at, path)`` versions, the paths beyond the ``keep`` newest, never one in
    ``protected`` (the version being served, the one a router may still be loading)."""
    newest_first = sorted(versions, reverse=True)
    return [path for _, path in newest_first[max(keep, 0):] if path not in protected]
