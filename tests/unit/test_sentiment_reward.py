"""The lexicon sentiment reward (VADER's compound score) against hand-checked sentences."""
from __future__ import annotations

import math

import pytest

pytest.importorskip("vaderSentiment")

from rlcustom.rewards import apply_reward, resolve_reward  # noqa: E402
from rlcustom.rewards.sentiment import vader_sentiment  # noqa: E402


def _compound(s: float) -> float:
    """VADER's normalisation of a summed valence: s / sqrt(s^2 + 15)."""
    return s / math.sqrt(s * s + 15.0)


def test_registered_and_scores_hand_checked_sentences():
    assert resolve_reward("vader_sentiment") is vader_sentiment
    pos = vader_sentiment("p", "I love this, it is wonderful!")
    neg = vader_sentiment("p", "This is terrible and I hate it.")
    # lexicon: love 3.2, wonderful 2.7, one '!' adds 0.292; terrible -2.1, hate -2.7
    assert pos == pytest.approx(_compound(3.2 + 2.7 + 0.292), abs=1e-3) and pos > 0.5
    assert neg == pytest.approx(_compound(-2.1 - 2.7), abs=1e-3) and neg < -0.5
    # negation flips and damps: "not good" = 1.9 * -0.74
    assert vader_sentiment("p", "This is not good.") == pytest.approx(_compound(-0.74 * 1.9), abs=1e-3)
    assert vader_sentiment("p", "The meeting is at 3 pm in room 204.") == 0.0  # no rated word
    assert vader_sentiment("p", "") == 0.0


def test_in_range_deterministic_and_through_apply_reward():
    texts = ["Great!!! Thanks so much :)", "awful, awful, AWFUL", "ok", "I don't know.",
             "Sure, here is a recipe: mix the flour and eggs."]
    first = apply_reward("vader_sentiment", ["p"] * len(texts), texts, [[1]] * len(texts))
    again = apply_reward("vader_sentiment", ["p"] * len(texts), texts, [[1]] * len(texts))
    assert first == again
    assert all(-1.0 <= v <= 1.0 for v in first)
    assert first[0] > 0.5 > -0.5 > first[1]
