"""Truncated importance sampling (rlcustom.algos.off_policy) against hand-computed numbers, and its wiring into
the learner objectives (``is_cap``)."""
import math

import pytest
import torch

from rlcustom.algos.off_policy import is_weight_stats, logprob_gap, truncated_is_weights
from rlcustom.algos.policy_objectives import clipped_policy_loss
from rlcustom.algos.ppo import ppo_policy_loss

# pi_old / mu per token: 0.5/0.25 = 2, 0.25/0.5 = 0.5, 0.1/0.02 = 5; the last token of row 1 is padding
OLD = torch.log(torch.tensor([[0.5, 0.25], [0.1, 0.3]], dtype=torch.float64))
MU = torch.log(torch.tensor([[0.25, 0.5], [0.02, 0.9]], dtype=torch.float64))
MASK = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)


def test_tis_weights_hand_case():
    w = truncated_is_weights(OLD, MU, MASK, cap=3.0)
    # min(2, 3) = 2, min(0.5, 3) = 0.5, min(5, 3) = 3, padding 0
    assert w.flatten().tolist() == pytest.approx([2.0, 0.5, 3.0, 0.0])
    st = is_weight_stats(OLD, MU, MASK, cap=3.0)
    assert st["is/weight_mean"] == pytest.approx((2 + 0.5 + 3) / 3)
    assert st["is/weight_max"] == pytest.approx(3.0)
    assert st["is/clipfrac"] == pytest.approx(1 / 3)  # only the ratio 5 was truncated
    # a cap of 2: the ratio 2 is not above it, 5 is
    assert truncated_is_weights(OLD, MU, MASK, cap=2.0).flatten().tolist() == pytest.approx([2.0, 0.5, 2.0, 0.0])


def test_tis_weights_are_constants():
    old = OLD.clone().requires_grad_(True)
    w = truncated_is_weights(old, MU, MASK, cap=3.0)
    assert not w.requires_grad
    with pytest.raises(ValueError, match="cap must be > 0"):
        truncated_is_weights(OLD, MU, MASK, cap=0.0)


def test_logprob_gap_hand_case():
    g = logprob_gap(OLD, MU, MASK)
    ln2, ln5 = math.log(2), math.log(5)
    assert g["rollout/logprob_gap_abs"] == pytest.approx((ln2 + ln2 + ln5) / 3)
    # k3 per token: (r - 1) - log r = 1 - ln2, -0.5 + ln2, 4 - ln5
    assert g["rollout/logprob_kl"] == pytest.approx(((1 - ln2) + (-0.5 + ln2) + (4 - ln5)) / 3)


def test_tis_weights_multiply_the_ppo_token_loss():
    # rho = 1 (pi_theta = pi_old): loss_t = -A_t; A = [[1, -2], [0.5, 9]] -> weighted [-1*2, 2*0.5, -0.5*3] / 3 tokens
    adv = torch.tensor([[1.0, -2.0], [0.5, 9.0]], dtype=torch.float64)
    w = truncated_is_weights(OLD, MU, MASK, cap=3.0)
    lp = OLD.clone().requires_grad_(True)
    loss, _ = ppo_policy_loss(lp, OLD, adv, MASK, token_weights=w)
    assert float(loss.detach()) == pytest.approx((-2.0 + 1.0 - 1.5) / 3)
    loss.backward()
    assert lp.grad.flatten().tolist() == pytest.approx([-2 / 3, 1 / 3, -1.5 / 3, 0.0])
    # the clipped branch is weighted too: rho = 1.5 with A = 1 clips at 1.2 -> -1.2 * w = -2.4 (w = 2)
    lp2 = OLD + torch.log(torch.tensor([[1.5, 1.0], [1.0, 1.0]], dtype=torch.float64))
    loss2, _ = clipped_policy_loss(lp2, OLD, adv, MASK, clip_eps=0.2, token_weights=w)
    assert float(loss2) == pytest.approx((-2.4 + 1.0 - 1.5) / 3)
    # without weights the same losses are the plain ones
    assert float(ppo_policy_loss(OLD, OLD, adv, MASK)[0]) == pytest.approx((-1.0 + 2.0 - 0.5) / 3)


def test_reinforce_objective_applies_is_cap(tiny):
    from rlcustom.objectives.policy import reinforce, tis_weights

    model, _ = tiny
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8], [5, 9, 10, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 1],
             [1, 1, 1, 0]]), "response_mask": MASK.float(), "prompt_len": 2,
             "advantages": torch.tensor([[1.0, -2.0], [0.5, 9.0]]), "logprobs": OLD.float(),
             "behaviour_logprobs": MU.float()}
    assert tis_weights(batch, None) is None
    assert tis_weights(batch, 3.0).flatten().tolist() == pytest.approx([2.0, 0.5, 3.0, 0.0])
    from rlcustom.models.forward import response_logprobs

    lp = response_logprobs(model, batch).detach()
    plain, _ = reinforce(model, batch)
    weighted, _ = reinforce(model, batch, is_cap=3.0)
    a = batch["advantages"]
    assert float(plain.detach()) == pytest.approx(float(-(a[0, 0] * lp[0, 0] + a[0, 1] * lp[0, 1] + a[1, 0] * lp[1, 0]) / 3),
                                         rel=1e-5)
    assert float(weighted.detach()) == pytest.approx(float(-(2.0 * a[0, 0] * lp[0, 0] + 0.5 * a[0, 1] * lp[0, 1]
                                                    + 3.0 * a[1, 0] * lp[1, 0]) / 3), rel=1e-5)
    with pytest.raises(ValueError, match="behaviour_logprobs"):
        reinforce(model, {k: v for k, v in batch.items() if k != "behaviour_logprobs"}, is_cap=3.0)
