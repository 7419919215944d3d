"""Rule rewards on hand cases; spec resolution; errors name the reward and the sample."""
import math

import pytest

from rlcustom.registry import REWARDS
from rlcustom.rewards import (
    RewardFunctionError, RewardSpecError, apply_reward, check_reward_value, resolve_reward,
)


def test_builtins_registered():
    for name in ("length_tokens", "length_words", "count_token", "contains", "politeness", "no_refusal"):
        assert name in REWARDS


def test_length_rewards():
    f = resolve_reward("length_tokens")
    assert f("p", "whatever", response_ids=[5, 6, 7, 2]) == 4.0
    assert f("p", "", response_ids=[]) == 0.0
    assert f("p", "x", response_ids=[1, 2, 3], scale=-1) == -3.0  # L3M's r_2 = -|y|
    g = resolve_reward("length_words")
    assert g("p", "  two   words\n", response_ids=[]) == 2.0
    assert g("p", "", response_ids=[]) == 0.0


def test_count_token_and_contains():
    c = resolve_reward("count_token")
    assert c("p", "t", response_ids=[3, 9, 3, 3, 1], token_id=3) == 3.0
    assert c("p", "t", response_ids=[3, 9, 3, 3, 1], token_id=[9, 1]) == 2.0
    assert c("p", "t", response_ids=[], token_id=3) == 0.0
    k = resolve_reward("contains")
    assert k("p", "the Answer is 42", response_ids=[], text="42") == 1.0
    assert k("p", "the Answer is 42", response_ids=[], text="answer") == 0.0
    assert k("p", "the Answer is 42", response_ids=[], text="answer", case_sensitive=False) == 1.0


def test_politeness_and_no_refusal():
    p = resolve_reward("politeness")
    assert p("q", "Thank you, thanks! Please sit.", response_ids=[]) == 3.0
    assert p("q", "pleased to meet you", response_ids=[]) == 0.0  # whole words only
    assert p("q", "Please please please", response_ids=[], cap=2) == 2.0
    r = resolve_reward("no_refusal")
    assert r("q", "Sure, here it is.", response_ids=[]) == 1.0
    assert r("q", "I\u2019m sorry, but I can\u2019t help with that.", response_ids=[]) == 0.0
    assert r("q", "As an AI, I cannot do that", response_ids=[]) == 0.0


def test_resolve_module_function_and_errors():
    assert resolve_reward("math:fabs") is math.fabs
    import os.path
    assert resolve_reward("os:path.join") is os.path.join  # dotted attribute
    with pytest.raises(RewardSpecError, match=r"'lenght_tokens'.*did you mean 'length_tokens'"):
        resolve_reward("lenght_tokens")
    with pytest.raises(RewardSpecError, match=r"'no_such_mod_xyz:f'.*cannot import module 'no_such_mod_xyz'"):
        resolve_reward("no_such_mod_xyz:f")
    with pytest.raises(RewardSpecError, match=r"'math:nope'.*no attribute 'nope'"):
        resolve_reward("math:nope")
    with pytest.raises(RewardSpecError, match=r"'math:pi'.*not a function"):
        resolve_reward("math:pi")
    with pytest.raises(RewardSpecError):
        resolve_reward("")


def _boom(prompt, completion, *, response_ids, **kw):
    return 1.0 / (len(response_ids) - 2)


def test_raising_reward_names_function_and_sample():
    ids = [[1], [1, 2, 3], [4], [5, 6]]  # sample 3 has length 2 -> ZeroDivisionError
    with pytest.raises(RewardFunctionError) as ei:
        apply_reward(_boom, ["p"] * 4, ["c"] * 4, ids, name="boom")
    msg = str(ei.value)
    assert msg.startswith("reward 'boom' failed on sample 3: ZeroDivisionError")
    assert "\n" not in msg
    assert isinstance(ei.value.__cause__, ZeroDivisionError)


def test_bad_kwarg_is_reported_with_the_reward_name():
    with pytest.raises(RewardFunctionError, match=r"reward 'count_token' failed on sample 0: TypeError: .*tokn_id"):
        apply_reward("count_token", ["p"], ["c"], [[1]], {"tokn_id": 1})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_reward_is_reported(bad):
    with pytest.raises(RewardFunctionError, match=r"reward 'nanny' failed on sample 1: returned non-finite value"):
        apply_reward(lambda p, c, *, response_ids: bad if p == "b" else 0.0, ["a", "b"], ["x", "y"], [[1], [2]],
                     name="nanny")


def test_non_numeric_reward_is_reported():
    with pytest.raises(RewardFunctionError, match=r"failed on sample 0: returned 'high' \(str\)"):
        check_reward_value("high", "r", 0)
    assert check_reward_value(True, "r", 0) == 1.0


def test_apply_reward_passes_kwargs_and_lengths_checked():
    assert apply_reward("count_token", ["a", "b"], ["x", "y"], [[7, 7], [1]], {"token_id": 7}) == [2.0, 0.0]
    with pytest.raises(ValueError, match="equally long"):
        apply_reward("length_tokens", ["a"], ["x", "y"], [[1], [2]])


def test_registered_custom_reward_resolves():
    @REWARDS.register("_test_const", override=True)
    def const(prompt, completion, *, response_ids, value=1.5):
        return value

    assert apply_reward("_test_const", ["p"], ["c"], [[1]], {"value": 2}) == [2.0]


def test_token_range_fraction():
    from rlcustom.rewards import token_range

    assert token_range("p", "c", response_ids=[5, 2000, 999, 1000], lo=0, hi=1000) == 0.5
    assert token_range("p", "", response_ids=[]) == 0.0


def test_target_length():
    from rlcustom.rewards import target_length

    assert target_length("p", "a b c d", target=4) == 1.0
    assert target_length("p", "a b", target=4) == 0.5
    assert target_length("p", " ".join("x" * 9), target=4) == 0.0
    assert target_length("p", "", response_ids=[1, 2, 3], target=3, unit="tokens") == 1.0
