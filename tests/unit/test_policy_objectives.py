"""Objectives checked against hand-computed cases (rlcustom.algos.policy_objectives), dynamic sampling, plans."""
import math

import pytest
import torch

from rlcustom.algos.advantages import grpo_advantages
from rlcustom.algos.policy_objectives import (clipped_policy_loss, gspo_loss, overlong_penalty, reinforce_pp_estimator,
                                              returns_to_go)
from rlcustom.engines.base import Rollouts
from rlcustom.errors import ConfigError
from rlcustom.trainers.filters import dynamic_sampling
from rlcustom.trainers.objective_plan import plan_objective


def lp_for(ratios):
    """(logprobs, old_logprobs) with the given ratios per token."""
    r = torch.tensor(ratios, dtype=torch.float64)
    return torch.log(r), torch.zeros_like(r)


def test_dapo_decoupled_clip_hand_case():
    # rho = 1.5 with A = +1: clipped at 1 + 0.28 -> -1.28; rho = 0.5 with A = -1: clipped at 1 - 0.2 -> +0.8
    lp, old = lp_for([[1.5, 0.5]])
    loss, st = clipped_policy_loss(lp, old, torch.tensor([[1.0, -1.0]], dtype=torch.float64), torch.ones(1, 2),
                                   clip_eps=0.2, clip_eps_high=0.28)
    assert float(loss) == pytest.approx((-1.28 + 0.8) / 2)
    assert float(st["clipfrac"]) == 1.0
    # symmetric clip would give -1.2 for the first token
    loss_sym, _ = clipped_policy_loss(lp, old, torch.tensor([[1.0, -1.0]], dtype=torch.float64), torch.ones(1, 2))
    assert float(loss_sym) == pytest.approx((-1.2 + 0.8) / 2)


def test_dual_clip_bounds_negative_advantages_only():
    lp, old = lp_for([[5.0, 5.0]])
    adv = torch.tensor([[-1.0, 1.0]], dtype=torch.float64)
    loss, st = clipped_policy_loss(lp, old, adv, torch.ones(1, 2), dual_clip_c=3.0, agg="seq_sum")
    # A=-1: max(5, 1.2) = 5, bounded by -cA = 3; A=+1: max(-5, -1.2) = -1.2 (no dual bound)
    assert float(loss) == pytest.approx(3.0 - 1.2)
    assert float(st["dual_clipfrac"]) == 0.5
    plain, _ = clipped_policy_loss(lp, old, adv, torch.ones(1, 2), agg="seq_sum")
    assert float(plain) == pytest.approx(5.0 - 1.2)
    with pytest.raises(ValueError):
        clipped_policy_loss(lp, old, adv, torch.ones(1, 2), dual_clip_c=1.0)


def test_dr_grpo_constant_normaliser_and_unscaled_advantages():
    lp, old = lp_for([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.float64)
    adv = -torch.ones(2, 4, dtype=torch.float64)  # every valid token's loss is +1
    const, _ = clipped_policy_loss(lp, old, adv, mask, agg="const", max_len=4)
    assert float(const) == pytest.approx(4 / (2 * 4))  # sum of 4 token losses / (G=2 * L=4)
    seq, _ = clipped_policy_loss(lp, old, adv, mask, agg="seq")
    assert float(seq) == pytest.approx(1.0)
    a = grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 3.0]), torch.tensor([0, 0, 1, 1]), scale=False)
    assert a.tolist() == [0.5, -0.5, -1.5, 1.5]


def test_gspo_sequence_ratio_hand_case_and_gradient():
    lp = torch.tensor([[0.1, 0.3], [-0.002, 0.0]], dtype=torch.float64)
    old = torch.zeros_like(lp)
    mask = torch.tensor([[1, 1], [1, 0]], dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    loss, st = gspo_loss(lp, old, adv, mask, clip_eps=3e-4, clip_eps_high=4e-4)
    # s_1 = e^0.2 = 1.2214 -> clipped 1.0004 (A>0): -1.0004; s_2 = e^-0.002 = 0.998 -> max(0.998, 0.9997) = 0.9997
    assert float(loss) == pytest.approx((-1.0004 + 0.9997) / 2)
    assert float(st["seq_ratio_mean"]) == pytest.approx((math.exp(0.2) + math.exp(-0.002)) / 2)
    # at rho = 1 (on-policy) the gradient w.r.t. each token's log-prob is -A_i / (|y_i| G)
    x = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    gspo_loss(x, torch.zeros(2, 2, dtype=torch.float64), adv, mask)[0].backward()
    assert sum(x.grad.tolist(), []) == pytest.approx([-0.25, -0.25, 0.5, 0.0])


def test_overlong_penalty_eq13():
    got = overlong_penalty(torch.tensor([5, 6, 8, 10, 11]), max_len=10, buffer=4)
    assert got.tolist() == pytest.approx([0.0, 0.0, -0.5, -1.0, -1.0])
    with pytest.raises(ValueError):
        overlong_penalty(torch.tensor([1]), max_len=10, buffer=0)


def test_reinforce_pp_global_normalisation():
    tr = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    assert returns_to_go(tr, mask).tolist() == [[1.0, 1.0, 1.0], [2.0, 2.0, 0.0]]
    adv, ret = reinforce_pp_estimator(token_rewards=tr, mask=mask)
    # valid returns 1,1,1,2,2: mean 1.4, unbiased var 1.2/4 = 0.3
    s = math.sqrt(0.3)
    assert ret is None
    assert sum(adv.tolist(), []) == pytest.approx([-0.4 / s, -0.4 / s, -0.4 / s, 0.6 / s, 0.6 / s, 0.0], rel=1e-4)


def rollouts(groups):
    """Rollouts whose prompt_index follows ``groups`` (sample i answers prompt groups[i])."""
    n = len(groups)
    return Rollouts([[1]] * n, [[2]] * n, [[0.0]] * n, ["stop"] * n, list(groups))


def test_dynamic_sampling_keeps_batch_size_and_counts_dropped():
    first = rollouts([0, 0, 1, 1])  # group 0 all-equal, group 1 informative
    calls = []

    def draw(k):
        calls.append(k)
        return rollouts([0, 0, 1, 1]), torch.tensor([0.0, 0.0, 1.0, 0.0])  # one more of each kind

    ro, scores, st = dynamic_sampling(first, torch.tensor([1.0, 1.0, 1.0, 0.0]), draw, target=2, max_rounds=3)
    assert calls == [1] and len(ro) == 4 and scores.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert st["rollout/dropped_groups"] == 2 and st["rollout/padded_groups"] == 0
    assert len(set(ro.prompt_index)) == 2


def test_dynamic_sampling_pads_with_dropped_groups_when_rounds_run_out():
    draw = lambda k: (rollouts([0, 0]), torch.tensor([0.0, 0.0]))  # noqa: E731 - never informative
    ro, scores, st = dynamic_sampling(rollouts([0, 0, 1, 1]), torch.tensor([1.0, 1.0, 1.0, 0.0]), draw, target=2,
                                      max_rounds=2)
    assert len(ro) == 4 and st["rollout/extra_rounds"] == 2 and st["rollout/padded_groups"] == 1
    assert st["rollout/dropped_groups"] == 3


def test_plans():
    d = plan_objective("dapo", {}, clip_eps=0.2, agg="seq", max_new_tokens=20)
    assert d.loss == "policy_clip" and d.loss_kwargs["clip_eps_high"] == 0.28 and d.loss_kwargs["agg"] == "token"
    assert d.dynamic_sampling and d.overlong_buffer == 4 and d.advantage == "grpo"
    g = plan_objective("dr_grpo", {}, clip_eps=0.2, agg="token", max_new_tokens=20)
    assert g.adv_kwargs == {"scale": False} and g.loss_kwargs["agg"] == "const" and g.weighting == "rows"
    assert plan_objective("gspo", {}, clip_eps=0.2, agg="token", max_new_tokens=8).loss == "gspo"
    assert plan_objective("reinforce_pp", {}, clip_eps=0.2, agg="token", max_new_tokens=8).advantage == "reinforce_pp"
    assert plan_objective("dual_clip", {"dual_clip_c": 2}, clip_eps=0.2, agg="token",
                          max_new_tokens=8).loss_kwargs["dual_clip_c"] == 2.0
    with pytest.raises(ConfigError, match="did you mean 'dapo'"):
        plan_objective("dapp", {}, clip_eps=0.2, agg="token", max_new_tokens=8)
    with pytest.raises(ConfigError, match="algo.objective_kwargs.clip_high"):
        plan_objective("dapo", {"clip_high": 1}, clip_eps=0.2, agg="token", max_new_tokens=8)
