"""Group-relative advantage estimators and the uniform estimator interface."""
from __future__ import annotations

import math

import pytest
import torch

from rlcustom.algos.advantages import (
    broadcast_to_tokens,
    grpo_advantages,
    rloo_advantages,
    whiten_advantages,
)
from rlcustom.registry import ADV_ESTIMATORS

T = torch.tensor
S2 = 1.0 / math.sqrt(2.0)


def test_grpo_two_interleaved_groups():
    # group 5: scores [1, 3]: mean 2, unbiased std sqrt((1+1)/1) = sqrt(2)  -> -1/sqrt2, +1/sqrt2
    # group 7: scores [4, 0]: mean 2, unbiased std sqrt((4+4)/1) = 2 sqrt(2) -> +1/sqrt2, -1/sqrt2
    scores = T([1.0, 4.0, 3.0, 0.0], dtype=torch.float64)
    gid = T([5, 7, 5, 7])
    adv = grpo_advantages(scores, gid, eps=0.0)
    torch.testing.assert_close(adv, T([-S2, S2, S2, -S2], dtype=torch.float64))
    # eps enters the denominator: (1 - 2) / (sqrt2 + 1e-6)
    adv_eps = grpo_advantages(scores, gid)
    assert math.isclose(adv_eps[0].item(), -1.0 / (math.sqrt(2.0) + 1e-6), rel_tol=1e-12)


def test_grpo_three_sample_group_and_constant_group():
    # group 0: [1, 2, 3] mean 2, unbiased std = sqrt((1+0+1)/2) = 1 -> [-1, 0, 1]
    # group 1: [10, 10] std 0 -> 0 advantage (not nan)
    scores = T([1.0, 2.0, 3.0, 10.0, 10.0])
    gid = T([0, 0, 0, 1, 1])
    adv = grpo_advantages(scores, gid, eps=1e-6)
    torch.testing.assert_close(adv, T([-1.0, 0.0, 1.0, 0.0, 0.0]), atol=1e-5, rtol=1e-5)


def test_grpo_no_scale_and_singleton():
    scores = T([1.0, 4.0, 3.0, 0.0, 7.0])
    gid = T([5, 7, 5, 7, 9])
    torch.testing.assert_close(grpo_advantages(scores, gid, scale=False), T([-1.0, 2.0, 1.0, -2.0, 0.0]))
    assert grpo_advantages(scores, gid)[4].item() == 0.0


def test_rloo_two_groups_and_singleton():
    # group 0 [1, 2, 3]: 1 - (2+3)/2 = -1.5 ; 2 - (1+3)/2 = 0 ; 3 - (1+2)/2 = 1.5
    # group 1 [5]: singleton -> 0
    scores = T([1.0, 5.0, 2.0, 3.0])
    gid = T([0, 1, 0, 0])
    torch.testing.assert_close(rloo_advantages(scores, gid), T([-1.5, 0.0, 0.0, 1.5]))


def test_rloo_pair():
    # group of two: each sample's baseline is the other one
    torch.testing.assert_close(rloo_advantages(T([1.0, 4.0]), T([3, 3])), T([-3.0, 3.0]))


def test_integer_scores_are_promoted():
    adv = rloo_advantages(T([1, 4]), T([0, 0]))
    assert adv.dtype.is_floating_point
    torch.testing.assert_close(adv, T([-3.0, 3.0]))


def test_broadcast_to_tokens():
    adv = T([2.0, -1.0, 3.0])
    mask = T([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    torch.testing.assert_close(broadcast_to_tokens(adv, mask), T([[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))


def test_whiten_advantages():
    # valid values [1, 2, 3]: mean 2, unbiased var 1 -> [-1, 0, 1]; padding -> 0
    adv = T([[1.0, 2.0], [3.0, 100.0]])
    mask = T([[1, 1], [1, 0]])
    torch.testing.assert_close(whiten_advantages(adv, mask), T([[-1.0, 0.0], [1.0, 0.0]]), atol=1e-6, rtol=1e-6)


UNIFORM = dict(
    token_rewards=T([[0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [2.0, 0.0, 0.0]]),
    values=None,
    mask=T([[1, 1, 0], [1, 1, 1], [1, 0, 0]]),
    scores=T([1.0, 3.0, 2.0]),
    group_ids=T([0, 0, 1]),
    gamma=1.0,
    lam=1.0,
)


def test_registry_has_all_estimators():
    for name in ("gae", "grpo", "rloo", "reinforce"):
        assert name in ADV_ESTIMATORS


def test_uniform_grpo_rloo_reinforce():
    m = UNIFORM["mask"]
    adv, ret = ADV_ESTIMATORS.get("grpo")(**UNIFORM)
    assert ret is None
    # group 0 [1, 3]: -1/sqrt2, +1/sqrt2 (eps 1e-6 negligible); group 1 singleton -> 0
    torch.testing.assert_close(adv, T([[-S2, -S2, 0.0], [S2, S2, S2], [0.0, 0.0, 0.0]]), atol=1e-5, rtol=1e-5)
    adv, ret = ADV_ESTIMATORS.get("rloo")(**UNIFORM)
    assert ret is None
    torch.testing.assert_close(adv, T([[-2.0, -2.0, 0.0], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0]]))
    adv, ret = ADV_ESTIMATORS.get("reinforce")(**UNIFORM)
    assert ret is None
    torch.testing.assert_close(adv, T([[1.0, 1.0, 0.0], [3.0, 3.0, 3.0], [2.0, 0.0, 0.0]]))
    assert adv.shape == m.shape


def test_uniform_scores_fallback():
    kw = dict(UNIFORM, scores=None)  # (unknown options are a TypeError: test_a_misspelt_option_is_an_error_not_ignored)
    # scores from masked token-reward sums: [1, 3, 2] (the same as above)
    adv, _ = ADV_ESTIMATORS.get("reinforce")(**kw)
    torch.testing.assert_close(adv, T([[1.0, 1.0, 0.0], [3.0, 3.0, 3.0], [2.0, 0.0, 0.0]]))
    adv, _ = ADV_ESTIMATORS.get("grpo")(**dict(kw, scale=False))
    torch.testing.assert_close(adv, T([[-1.0, -1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))


def test_uniform_gae_and_missing_groups():
    values = T([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    adv, ret = ADV_ESTIMATORS.get("gae")(**dict(UNIFORM, values=values))
    # gamma = lam = 1: return = sum of future rewards within the valid part
    torch.testing.assert_close(ret, T([[1.0, 1.0, 0.0], [3.0, 3.0, 3.0], [2.0, 0.0, 0.0]]))
    torch.testing.assert_close(adv, T([[0.5, 0.5, 0.0], [3.0, 3.0, 3.0], [1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError):
        ADV_ESTIMATORS.get("grpo")(**dict(UNIFORM, group_ids=None))


@pytest.mark.parametrize("name", ["grpo", "rloo", "reinforce", "gae"])
def test_a_misspelt_option_is_an_error_not_ignored(name):
    kw = dict(UNIFORM, values=torch.zeros_like(UNIFORM["mask"], dtype=torch.float32)) if name == "gae" else UNIFORM
    with pytest.raises(TypeError):
        ADV_ESTIMATORS.get(name)(**kw, sclae=False)
    if name == "grpo":  # the real option still works
        adv, _ = ADV_ESTIMATORS.get(name)(**kw, scale=False)
        assert adv.shape == UNIFORM["mask"].shape
