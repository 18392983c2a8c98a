"""The IPR routing rule: a pure function of predicted quality and estimated cost.

For a prompt and its candidate models (``allowed``: narrowed by :mod:`ipr_model.serving.candidates`,
the rule only chooses among them):

- ``ipr`` (default): r = max q - tau * (max q - min q) among three or more candidates; between
  exactly two, r = max q - tau. The range from the best candidate down to the worst makes tau a
  share of how far apart the candidates are predicted to be; with two candidates that range ends
  at the other one, so it would be feasible only at tau = 1 (a switch, not a knob). The range then
  spans the whole quality scale (width 1): tau is the predicted quality the prompt may lose, and
  the weaker model takes the prompts where it is predicted to lose least (docs/design.md).
  :func:`applied_rule` names the rule each prompt got (``ipr`` or ``ipr_pair``).
- ``range``: r = max q - tau * (max q - min q) for every candidate set (a switch between two).
- ``dynamic_max`` (IPR's deployed form): r = (1 - tau) * max q - delta

Feasible F = {m : q_m >= r}; choose argmin over F of cost; ties go to the higher q, then to the
lexicographically smaller model id. The best predicted model is always feasible, so F is never
empty. :func:`ranking` orders all of F that way (the choice first): the failover order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ipr_model.errors import RoutingInputError
from ipr_model.serving.candidates import allowed_mask

Variant = Literal["ipr", "range", "dynamic_max"]
VARIANTS: tuple[str, ...] = ("ipr", "range", "dynamic_max")


@dataclass(frozen=True)
class Choice:
    index: int
    threshold: float


def check_tolerance(tau: float) -> float:
    tau = float(tau)
    if not (0.0 <= tau <= 1.0) or np.isnan(tau):
        raise RoutingInputError(f"tolerance must be in [0, 1], got {tau}")
    return tau


def route_batch(
    quality: np.ndarray,
    cost: np.ndarray,
    tau: float | np.ndarray,
    model_ids: Sequence[str],
    allowed: np.ndarray | None = None,
    variant: Variant = "ipr",
    delta: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Route n prompts at once.

    quality, cost: [n, m]; tau: scalar or [n]; allowed: [m] or [n, m] boolean (None: all).
    Returns (chosen model index [n], threshold r [n]).
    """
    q = np.asarray(quality, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    if q.ndim != 2 or q.shape != c.shape or q.shape[1] != len(model_ids):
        raise ValueError(
            f"quality and cost must both be [n, {len(model_ids)}], got {q.shape} and {c.shape}"
        )
    if variant not in VARIANTS:
        raise RoutingInputError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if delta < 0:
        raise RoutingInputError(f"delta must be >= 0, got {delta}")
    n, m = q.shape
    t = np.broadcast_to(np.asarray(tau, dtype=np.float64), (n,))
    if np.any((t < 0) | (t > 1)) or np.any(np.isnan(t)):
        raise RoutingInputError("tolerance must be in [0, 1]")
    mask = np.ones((n, m), dtype=bool) if allowed is None else np.broadcast_to(allowed, (n, m))
    if not mask.any(axis=1).all():
        raise RoutingInputError("no candidate model left for a prompt")

    q_max = np.where(mask, q, -np.inf).max(axis=1)
    if variant in ("ipr", "range"):
        q_min = np.where(mask, q, np.inf).min(axis=1)
        if variant == "ipr":  # between two candidates the range is the whole scale: r = q_max - tau
            q_min = np.where(mask.sum(axis=1) == 2, np.minimum(q_min, q_max - 1.0), q_min)
        r = q_max - t * (q_max - q_min)
        # At tau = 1 every candidate is feasible: q_max - (q_max - q_min) can round one ulp above
        # q_min (e.g. 0.9350724237877682 and 0.05624275855897737), which would drop the cheapest.
        r = np.where(t >= 1.0, q_min, r)
    else:
        r = (1.0 - t) * q_max - delta
    feasible = feasible_mask(q, r, mask)
    c_f = np.where(feasible, c, np.inf)
    cheapest = feasible & (c_f == c_f.min(axis=1, keepdims=True))
    q_c = np.where(cheapest, q, -np.inf)
    best = cheapest & (q_c == q_c.max(axis=1, keepdims=True))
    # Lexicographic id order breaks the last ties.
    rank = np.empty(m, dtype=np.int64)
    rank[np.argsort(np.asarray(model_ids, dtype=object), kind="stable")] = np.arange(m)
    chosen = np.where(best, rank[None, :], m).argmin(axis=1)
    return chosen, r


def feasible_mask(quality: np.ndarray, r: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """F per prompt [n, m]: the ``allowed`` models whose quality reaches the threshold ``r`` [n];
    the best allowed model is always in it, even under floating-point rounding of r."""
    q = np.asarray(quality, dtype=np.float64)
    mask = np.broadcast_to(allowed, q.shape)
    q_max = np.where(mask, q, -np.inf).max(axis=1)
    return mask & ((q >= np.asarray(r)[:, None]) | (q == q_max[:, None]))


def ranking(
    quality: Sequence[float], cost: Sequence[float], feasible: Sequence[bool],
    model_ids: Sequence[str],
) -> list[str]:
    """One prompt's feasible models in the rule's order of preference: cheapest first, ties to
    the higher quality, then to the smaller id; the first is the rule's choice (``route_batch``).
    A worker forwards a prompt whose model failed to the next one (failover)."""
    keys = [
        (float(cost[j]), -float(quality[j]), m)
        for j, m in enumerate(model_ids) if feasible[j]
    ]
    return [m for _, _, m in sorted(keys)]


def applied_rule(allowed: np.ndarray, variant: Variant = "ipr") -> np.ndarray:
    """The rule each prompt got, from its candidates ``allowed`` [n, m]: ``ipr_pair`` where the
    ``ipr`` variant chose between exactly two models, else the variant's name."""
    two = np.asarray(allowed).sum(axis=1) == 2
    return np.where(two & (variant == "ipr"), "ipr_pair", variant)


def route(
    quality: Sequence[float],
    cost: Sequence[float],
    tau: float,
    model_ids: Sequence[str],
    allowed: Sequence[str] | None = None,
    variant: Variant = "ipr",
    delta: float = 0.0,
) -> Choice:
    """Route one prompt; ``allowed`` names model ids (unknown ones are an error)."""
    check_tolerance(tau)
    mask = allowed_mask(model_ids, allowed)
    idx, r = route_batch(
        np.asarray([quality]), np.asarray([cost]), tau, model_ids, mask, variant, delta
    )
    return Choice(index=int(idx[0]), threshold=float(r[0]))
