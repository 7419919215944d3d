"""Rewards: the rule rewards and the reward API (:mod:`rlcustom.rewards.core`), the verifiable rewards
(exact match, format, math through math-verify, code tests in a sandbox, composites), a lexicon sentiment
score (VADER, :mod:`rlcustom.rewards.sentiment`) and HTTP rewards.

Importing this package registers every built-in reward; ``from rlcustom.rewards import resolve_reward``
and the other names of :mod:`rlcustom.rewards.core` work from here. See :mod:`rlcustom.rewards.core` for
the reward function's signature and how to add one.
"""
from rlcustom.rewards.core import (POLITE_PHRASES, REFUSAL_PHRASES, NonFiniteRewardError, RewardFn,  # noqa: F401
                                   RewardFunctionError, RewardSpecError, apply_reward, check_reward_value,
                                   contains, count_token, length_tokens, length_words, no_refusal, politeness,
                                   prompt_snippet, resolve_reward, reward_name, target_length, token_range)

# the verifiable rewards register themselves (exact_match, format_match, math_verify, code_tests, composite),
# and so does the lexicon sentiment reward (vader_sentiment)
from rlcustom.rewards import code, composite, math_answers, sentiment, verifiable  # noqa: E402,F401

__all__ = [
    "RewardFunctionError", "NonFiniteRewardError", "RewardSpecError", "resolve_reward", "apply_reward",
    "check_reward_value", "prompt_snippet", "reward_name",
    "length_tokens", "length_words", "count_token", "contains", "politeness", "no_refusal",
]
