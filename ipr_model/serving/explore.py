"""Bounded exploration: a share of the traffic goes where the rule cannot learn by itself.

Two kinds of model get no labels under the rule alone:

- an *onboarding* model (a card flagged ``onboarding``: prices, no recorded outcomes yet), which
  the rule leaves out of normal routing because its predicted quality is only a prior;
- a model the feedback correction lowered for a prompt (``Scores.feedback`` < 0): once lowered
  it is no longer chosen there, so it gets no label that could show it recovered.

A prompt is explored when a hash of its ``prompt_id`` falls under ``share``: replays and
restarts decide the same, and the share holds over any set of ids. An explored prompt goes to an
onboarding model among its candidates (one of several picked by a second hash), else to the
candidate the feedback lowered most for it; a prompt with neither is routed by the rule. Only
``candidates`` (the allowed, healthy models) are ever picked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence

import numpy as np

_SCALE = float(2**64)


def _hash(prompt_id: str, salt: bytes) -> int:
    digest = hashlib.blake2b(prompt_id.encode(), digest_size=8, person=salt).digest()
    return int.from_bytes(digest, "big")


def explored(prompt_id: str, share: float) -> bool:
    """Whether ``prompt_id`` falls in the explored ``share`` (0 explores nothing)."""
    return share > 0 and _hash(prompt_id, b"ipr-explore") / _SCALE < share


def explore_choice(
    prompt_id: str,
    model_ids: Sequence[str],
    candidates: np.ndarray,
    onboarding: Collection[str],
    lowered: np.ndarray | None = None,
    min_drop: float = 1e-6,
) -> tuple[int, str] | None:
    """The model index an explored prompt goes to and why (``onboarding`` or ``win_back``), or
    None. ``candidates``: [m] boolean, the prompt's allowed and healthy models; ``lowered``:
    [m] what the feedback corrections added to each model's predicted quality (None: none)."""
    new = [j for j, m in enumerate(model_ids) if candidates[j] and m in onboarding]
    if new:
        return new[_hash(prompt_id, b"ipr-onboard") % len(new)], "onboarding"
    if lowered is None:
        return None
    drop = np.where(candidates, np.asarray(lowered, dtype=np.float64), 0.0)
    j = int(drop.argmin())
    return (j, "win_back") if drop[j] <= -min_drop else None
