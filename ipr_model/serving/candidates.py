"""The one place where a prompt's candidates are narrowed, and why each model is left out: pure
functions over model ids (no scores but what exploration reads from the feedback).

A prompt's models, narrowed in this order:

1. **allowed**: its ``allowed_models`` (None or empty: every model), already intersected with its
   tenant's when it has a policy (:func:`tenant_allowed`, called by ``streams.router.policy``
   before scoring, so that a prompt left nothing is dead-lettered unscored). A model the router
   does not know is an error in the prompt's list (:func:`unknown_models`), dropped from the
   tenant's. Left out: ``not_allowed``.
2. **served**: the models no live worker serves (``streams.control.serving``: workers announce
   what they serve) are left out, unless that would leave none: then the prompt waits on its
   model's topic for a worker, as before. Left out: ``not_served``.
3. **health**: the unhealthy models (``streams.control.health``) are left out, unless that would
   leave none: then the prompt is routed among its unhealthy candidates (their worker answers with
   an error, and the prompt is not lost). Left out: ``unhealthy``.
4. **onboarding**: a model with prices and no outcomes yet (its card flagged ``onboarding``) is
   left out of the rule's candidates, unless that would leave none; it stays a candidate for
   exploration. Left out of the rule: ``onboarding``.
5. **exploration**: the ``explore_share`` of prompts (by a hash of the prompt id) goes to an
   onboarding candidate, else to the candidate the feedback lowered most (win-back):
   :mod:`ipr_model.serving.explore`.

The rule (:mod:`ipr_model.serving.rule`) then chooses among :attr:`Candidates.ruled` only, and an
explored prompt goes to :attr:`Candidates.explore` instead when that is another model
(:mod:`ipr_model.serving.decision`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from ipr_model.errors import RoutingInputError
from ipr_model.serving.explore import explore_choice, explored

NOT_ALLOWED = "not_allowed"
NOT_SERVED = "not_served"
UNHEALTHY = "unhealthy"
ONBOARDING = "onboarding"


def unknown_models(model_ids: Sequence[str], allowed: Sequence[str] | None) -> list[str]:
    """The ids in ``allowed`` that are not in ``model_ids``, sorted."""
    return sorted(set(allowed or ()) - set(model_ids))


def allowed_mask(model_ids: Sequence[str], allowed: Sequence[str] | None) -> np.ndarray:
    """Boolean mask over ``model_ids``; ``None`` or empty allows every model; an unknown id in
    ``allowed`` is a :class:`RoutingInputError`."""
    if not allowed:
        return np.ones(len(model_ids), dtype=bool)
    unknown = unknown_models(model_ids, allowed)
    if unknown:
        raise RoutingInputError(
            f"unknown model(s) in allowed_models: {', '.join(unknown)}; "
            f"known: {', '.join(model_ids)}"
        )
    wanted = set(allowed)
    return np.array([m in wanted for m in model_ids], dtype=bool)


def tenant_allowed(own: Sequence[str] | None, tenant: Sequence[str] | None,
                   known: Sequence[str] | None) -> list[str] | None:
    """A prompt's allowed models (``own``) under its tenant's (``tenant``, None: no limit): the
    intersection, in the prompt's order (the tenant's when the prompt names none); ids not in
    ``known`` (None: any) are dropped from the tenant's. None allows every model; [] none."""
    if tenant is None:
        return None if own is None else list(own)
    usable = set(tenant) if known is None else set(tenant) & set(known)
    if own is None:
        return [m for m in tenant if m in usable]
    return [m for m in own if m in usable]


@dataclass(frozen=True)
class Candidates:
    """A batch's candidates, [n, m] masks over ``model_ids``, each narrower than the one before."""

    model_ids: Sequence[str]
    allowed: np.ndarray  # what the prompt (under its tenant) allows
    served: np.ndarray  # allowed, without the models no worker serves (all allowed if none is)
    routable: np.ndarray  # served, without the unhealthy models (all served if none is healthy)
    ruled: np.ndarray  # the rule's: routable, without the onboarding models (unless none is left)
    # an explored prompt's model (index) and why (``onboarding`` or ``win_back``); None: the rule's
    explore: list[tuple[int, str] | None]

    def unserved(self, i: int) -> list[str]:
        """The models prompt i left out because no live worker serves them."""
        return self._ids(self.allowed[i] & ~self.served[i])

    def unhealthy(self, i: int) -> list[str]:
        """The models prompt i's health check left out."""
        return self._ids(self.served[i] & ~self.routable[i])

    def _ids(self, mask: np.ndarray) -> list[str]:
        return [m for m, o in zip(self.model_ids, mask, strict=True) if o]

    def left_out(self, i: int) -> dict[str, str]:
        """Every model that is not among prompt i's rule candidates, and why."""
        why = {}
        for j, m in enumerate(self.model_ids):
            if not self.allowed[i, j]:
                why[m] = NOT_ALLOWED
            elif not self.served[i, j]:
                why[m] = NOT_SERVED
            elif not self.routable[i, j]:
                why[m] = UNHEALTHY
            elif not self.ruled[i, j]:
                why[m] = ONBOARDING
        return why


def narrow(
    model_ids: Sequence[str],
    n: int,
    allowed: Sequence[Sequence[str] | None] | None = None,
    unhealthy: Collection[str] = (),
    onboarding: Collection[str] = (),
    prompt_ids: Sequence[str] | None = None,
    explore_share: float = 0.0,
    lowered: np.ndarray | None = None,
    unserved: Collection[str] = (),
) -> Candidates:
    """The candidates of n prompts, each with its ``allowed`` models (None: every prompt all);
    ``lowered`` [n, m]: what the feedback corrections added to each model's predicted quality
    (``Scores.feedback``; None: nothing), read by exploration's win-back."""
    masks = np.stack(
        [allowed_mask(model_ids, (allowed[i] if allowed else None)) for i in range(n)]
    )
    served = _unless_none_left(masks, np.array([m not in unserved for m in model_ids]))
    routable = _unless_none_left(served, np.array([m not in unhealthy for m in model_ids]))
    ruled = _unless_none_left(routable, np.array([m not in onboarding for m in model_ids]))
    picks: list[tuple[int, str] | None] = [None] * n
    if prompt_ids and explore_share > 0:
        for i, pid in enumerate(prompt_ids):
            if explored(pid, explore_share):
                row = None if lowered is None else lowered[i]
                picks[i] = explore_choice(pid, model_ids, routable[i], onboarding, row)
    return Candidates(model_ids, masks, served, routable, ruled, picks)


def _unless_none_left(candidates: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``candidates`` [n, m] narrowed to the models ``keep`` [m] marks, but for the prompts
    that would have none left: those keep all of theirs."""
    kept = candidates & keep
    none = ~kept.any(axis=1)
    kept[none] = candidates[none]
    return kept
