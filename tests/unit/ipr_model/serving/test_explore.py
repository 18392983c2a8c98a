"""Bounded exploration's pure decisions: which prompts explore, and where they go."""

from __future__ import annotations

import numpy as np
import pytest

from ipr_model.serving.explore import explore_choice, explored

IDS = ["a", "b", "new"]
ALL = np.ones(3, dtype=bool)


@pytest.mark.parametrize("share", [0.01, 0.05, 0.3])
def test_the_share_holds_over_many_ids(share):
    n = 40_000
    hits = sum(explored(f"p-{i}", share) for i in range(n))
    # binomial: 4 standard deviations
    assert abs(hits / n - share) <= 4 * np.sqrt(share * (1 - share) / n)


def test_nothing_explores_at_share_0_and_everything_at_1():
    assert not any(explored(f"p-{i}", 0.0) for i in range(5000))
    assert all(explored(f"p-{i}", 1.0) for i in range(5000))


def test_the_decision_is_a_function_of_the_id_alone():
    first = [explored(f"x{i}", 0.2) for i in range(2000)]
    assert first == [explored(f"x{i}", 0.2) for i in range(2000)]
    # a larger share explores a superset (raising it never un-explores a prompt)
    assert all(explored(f"x{i}", 0.4) for i, e in enumerate(first) if e)


def test_an_onboarding_model_comes_first_and_only_when_allowed():
    assert explore_choice("p", IDS, ALL, {"new"}, np.array([-0.3, 0, 0])) == (2, "onboarding")
    no_new = np.array([True, True, False])
    assert explore_choice("p", IDS, no_new, {"new"}) is None
    # not allowed: win-back among the allowed ones instead
    assert explore_choice("p", IDS, no_new, {"new"}, np.array([0.0, -0.2, -0.5])) == (
        1, "win_back")


def test_several_onboarding_models_share_the_explored_prompts():
    ids = ["n1", "n2", "old"]
    picks = {explore_choice(f"p{i}", ids, ALL, {"n1", "n2"})[0] for i in range(200)}
    assert picks == {0, 1}


def test_win_back_goes_to_the_model_lowered_most_and_needs_a_drop():
    assert explore_choice("p", IDS, ALL, (), np.array([-0.1, -0.4, 0.2])) == (1, "win_back")
    assert explore_choice("p", IDS, ALL, (), np.array([0.0, 0.1, 0.0])) is None
    assert explore_choice("p", IDS, ALL, ()) is None
