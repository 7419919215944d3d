"""A lexicon sentiment reward: VADER's compound score (``vaderSentiment``), in [-1, 1].

VADER (Hutto & Gilbert, ICWSM 2014) scores text with a hand-rated lexicon of ~7,500 words, emoticons and
slang plus rules for negation ("not good"), intensifiers ("very"), "but", capitals and exclamation marks.
Its ``compound`` score sums the valences and squashes the sum into [-1, 1] (``x / sqrt(x^2 + 15)``):
+0.85 for "I love this, it is wonderful!", -0.78 for "This is terrible and I hate it.", 0 for a
sentence with no rated word. It is deterministic, runs in microseconds on a CPU and needs no model, so it
is a strong, readable reward for experiments with small models (``benchmarks/dera_135m``).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

from rlcustom.registry import REWARDS

__all__ = ["vader_sentiment"]

_MISSING = ("reward 'vader_sentiment' needs the vaderSentiment package (pip install 'vaderSentiment==3.3.2'; "
            "it is in cluster/requirements-cpu.txt and the 'rewards' extra)")


@functools.lru_cache(maxsize=1)
def _analyzer() -> Any:
    """One ``SentimentIntensityAnalyzer`` per process (it reads its lexicon files once; scoring is read-only)."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        raise ImportError(_MISSING) from None
    return SentimentIntensityAnalyzer()


@REWARDS.register("vader_sentiment")
def vader_sentiment(prompt: str, completion: str, *, response_ids: Sequence[int] = ()) -> float:
    """VADER's ``compound`` score of the completion, in [-1, 1] (> 0 positive, < 0 negative, 0 neutral or empty)."""
    return float(_analyzer().polarity_scores(completion)["compound"])
