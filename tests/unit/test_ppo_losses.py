"""PPO clipped policy/value losses, entropy and aggregation against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch

from rlcustom.algos.ppo import (
    aggregate,
    entropy_bonus,
    entropy_from_logits,
    ppo_policy_loss,
    ppo_value_loss,
)
from rlcustom.registry import OBJECTIVES

T = torch.tensor

# One token per case, clip_eps = 0.2, old_logprobs = 0 so ratio = exp(logprobs):
#   ratio  A    -A*rho   -A*clip(rho)   max    clipped?
#   1.1   +1    -1.1     -1.1           -1.1   no   (inside the range)
#   1.5   +1    -1.5     -1.2           -1.2   yes  (too high, A > 0)
#   0.5   +1    -0.5     -0.8           -0.5   no   (too low, A > 0: gradient still flows)
#   0.5   -1    +0.5     +0.8           +0.8   yes  (too low, A < 0)
#   1.5   -1    +1.5     +1.2           +1.5   no   (too high, A < 0: gradient still flows)
RATIOS = [1.1, 1.5, 0.5, 0.5, 1.5]
ADVS = [1.0, 1.0, 1.0, -1.0, -1.0]


def _case(dtype=torch.float64):
    lp = torch.log(T([RATIOS], dtype=dtype)).requires_grad_(True)
    old = torch.zeros(1, 5, dtype=dtype)
    adv = T([ADVS], dtype=dtype)
    mask = torch.ones(1, 5)
    return lp, old, adv, mask


def test_policy_loss_values_and_clipfrac():
    lp, old, adv, mask = _case()
    loss, stats = ppo_policy_loss(lp, old, adv, mask, clip_eps=0.2)
    # (-1.1 - 1.2 - 0.5 + 0.8 + 1.5) / 5 = -0.1
    assert math.isclose(loss.item(), -0.1, abs_tol=1e-12)
    assert math.isclose(float(stats["clipfrac"]), 0.4, abs_tol=1e-12)
    # approx_kl = mean((rho - 1) - log rho)
    expected_kl = sum((r - 1) - math.log(r) for r in RATIOS) / 5
    assert math.isclose(float(stats["approx_kl"]), expected_kl, rel_tol=1e-9)
    assert math.isclose(float(stats["ratio_mean"]), sum(RATIOS) / 5, rel_tol=1e-9)


def test_policy_loss_gradient_zero_on_clipped_tokens():
    lp, old, adv, mask = _case()
    loss, _ = ppo_policy_loss(lp, old, adv, mask, clip_eps=0.2)
    loss.backward()
    # d/dlp of -A*exp(lp)/N = -A*rho/5 on unclipped tokens; 0 on clipped ones
    expected = T([[-1.1 / 5, 0.0, -0.5 / 5, 0.0, 1.5 / 5]], dtype=torch.float64)
    torch.testing.assert_close(lp.grad, expected)


def test_clip_higher():
    # ratio 1.25, A = +1: clipped at 1.2 with symmetric eps, inside with clip_eps_high = 0.28
    lp = torch.log(T([[1.25]]))
    old, adv, mask = torch.zeros(1, 1), T([[1.0]]), torch.ones(1, 1)
    loss_sym, st_sym = ppo_policy_loss(lp, old, adv, mask, clip_eps=0.2)
    loss_hi, st_hi = ppo_policy_loss(lp, old, adv, mask, clip_eps=0.2, clip_eps_high=0.28)
    assert math.isclose(loss_sym.item(), -1.2, rel_tol=1e-6) and float(st_sym["clipfrac"]) == 1.0
    assert math.isclose(loss_hi.item(), -1.25, rel_tol=1e-6) and float(st_hi["clipfrac"]) == 0.0
    # the low side still uses clip_eps: ratio 0.7, A = -1 -> clipped to 0.8 -> loss 0.8
    loss_low, _ = ppo_policy_loss(torch.log(T([[0.7]])), old, T([[-1.0]]), mask, clip_eps=0.2, clip_eps_high=0.28)
    assert math.isclose(loss_low.item(), 0.8, rel_tol=1e-6)


def test_policy_loss_masks_padding_without_nan():
    lp = T([[math.log(1.1), float("-inf")]], requires_grad=True)
    old = T([[0.0, 0.0]])
    adv = T([[1.0, 5.0]])
    mask = T([[1, 0]])
    loss, stats = ppo_policy_loss(lp, old, adv, mask)
    loss.backward()
    assert math.isclose(loss.item(), -1.1, rel_tol=1e-6)
    assert float(stats["clipfrac"]) == 0.0
    assert torch.isfinite(lp.grad).all() and lp.grad[0, 1].item() == 0.0


def test_value_loss_cases_and_gradient():
    # old = 0, clip 0.2:
    #  v=1.0, R=0.5: unclipped 0.25, clipped (0.2-0.5)^2=0.09 -> 0.5*0.25 = 0.125 (unclipped wins)
    #  v=1.0, R=2.0: unclipped 1.0,  clipped (0.2-2)^2 = 3.24 -> 0.5*3.24 = 1.62 (clipped, no grad)
    #  v=0.1, R=1.0: inside range, both 0.81 -> 0.405
    v = T([[1.0, 1.0, 0.1]], dtype=torch.float64, requires_grad=True)
    old = torch.zeros(1, 3, dtype=torch.float64)
    ret = T([[0.5, 2.0, 1.0]], dtype=torch.float64)
    loss, stats = ppo_value_loss(v, old, ret, torch.ones(1, 3), clip_eps=0.2)
    assert math.isclose(loss.item(), (0.125 + 1.62 + 0.405) / 3, rel_tol=1e-12)
    assert math.isclose(float(stats["vf_clipfrac"]), 1 / 3, rel_tol=1e-12)
    loss.backward()
    # d/dv 0.5 (v - R)^2 / 3 = (v - R) / 3
    torch.testing.assert_close(v.grad, T([[0.5 / 3, 0.0, -0.9 / 3]], dtype=torch.float64))


def test_value_loss_unclipped_and_masked():
    v = T([[1.0, 3.0]])
    loss, stats = ppo_value_loss(v, torch.zeros(1, 2), T([[2.0, 0.0]]), T([[1, 0]]), clip_eps=None)
    assert math.isclose(loss.item(), 0.5, rel_tol=1e-6)
    assert float(stats["vf_clipfrac"]) == 0.0


def test_entropy_from_logits():
    # uniform over 4 -> log 4; p = [1/4, 3/4] -> -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.5623351446188083
    logits = T([[[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -1e4, -1e4]]], dtype=torch.float64)
    h = entropy_from_logits(logits)
    assert h.shape == (1, 2)
    torch.testing.assert_close(h, T([[math.log(4.0), 0.5623351446188083]], dtype=torch.float64))
    # invariant to adding a constant to the logits
    torch.testing.assert_close(entropy_from_logits(logits + 7.0), h)


def test_entropy_bonus_masked_mean():
    logits = T([[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0, ], [0.0, math.log(3.0)]]], dtype=torch.float64)
    mask = T([[1, 1], [0, 1]])
    # valid tokens: ln2, ln2, 0.5623351446188083 -> mean
    expected = (2 * math.log(2.0) + 0.5623351446188083) / 3
    assert math.isclose(entropy_bonus(logits, mask).item(), expected, rel_tol=1e-12)


def test_aggregation_modes_on_uneven_batch():
    loss = T([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0], [7.0, 7.0, 7.0]])
    mask = T([[1, 1, 1], [1, 0, 0], [0, 0, 0]])  # lengths 3, 1, 0 (empty row is left out)
    assert math.isclose(aggregate(loss, mask, "token").item(), (1 + 2 + 3 + 4) / 4)  # 2.5
    assert math.isclose(aggregate(loss, mask, "seq").item(), (2.0 + 4.0) / 2)  # 3.0
    assert math.isclose(aggregate(loss, mask, "seq_sum").item(), (6.0 + 4.0) / 2)  # 5.0
    with pytest.raises(ValueError):
        aggregate(loss, mask, "bogus")
    assert aggregate(loss, torch.zeros(3, 3), "seq").item() == 0.0


def test_policy_loss_agg_seq():
    # two sequences: lengths 2 and 1, ratio 1 everywhere -> token loss = -A
    lp = torch.zeros(2, 2)
    adv = T([[1.0, 3.0], [-2.0, 0.0]])
    mask = T([[1, 1], [1, 0]])
    tok, _ = ppo_policy_loss(lp, lp, adv, mask, agg="token")
    seq, _ = ppo_policy_loss(lp, lp, adv, mask, agg="seq")
    assert math.isclose(tok.item(), -(1 + 3 - 2) / 3, rel_tol=1e-6)
    assert math.isclose(seq.item(), -(2.0 - 2.0) / 2, abs_tol=1e-7)


def test_registered():
    import rlcustom.actors.value  # noqa: F401  (registers the value objectives)
    import rlcustom.objectives  # noqa: F401  (registers the policy objectives)

    assert OBJECTIVES.get("ppo_clip").loss is ppo_policy_loss  # the one table: each objective names its loss
    assert OBJECTIVES.get("value_clip").loss is ppo_value_loss
