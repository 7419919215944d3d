"""KL estimators, KL-penalised rewards, KL loss and KL controllers."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcustom.algos.kl import (
    AdaptiveKLController,
    FixedKLController,
    kl_k1,
    kl_k2,
    kl_k3,
    kl_loss,
    kl_penalty_rewards,
)
from rlcustom.registry import KL_ESTIMATORS

T = torch.tensor


def test_known_values():
    # lp - ref = +1: k1 = 1, k2 = 0.5, k3 = e^-1 + 1 - 1 = e^-1
    # lp - ref = -1: k1 = -1, k2 = 0.5, k3 = e^1 - 1 - 1 = e - 2
    lp = T([-1.0, -2.0], dtype=torch.float64)
    ref = T([-2.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(kl_k1(lp, ref), T([1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(kl_k2(lp, ref), T([0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(kl_k3(lp, ref), T([math.exp(-1.0), math.e - 2.0], dtype=torch.float64))
    assert kl_k3(T([0.3]), T([0.3])).item() == 0.0


def test_registered():
    assert KL_ESTIMATORS.get("k1") is kl_k1
    assert KL_ESTIMATORS.get("k2") is kl_k2
    assert KL_ESTIMATORS.get("k3") is kl_k3


@settings(max_examples=50, deadline=None)
@given(st.floats(-20.0, 0.0), st.floats(-20.0, 0.0))
def test_k3_and_k2_nonnegative(lp, ref):
    assert kl_k3(T([lp], dtype=torch.float64), T([ref], dtype=torch.float64)).item() >= 0.0
    assert kl_k2(T([lp]), T([ref])).item() >= 0.0


def test_k1_k3_exact_expectation_is_kl():
    # p = [1/2, 1/2], q = [1/4, 3/4]: KL(p||q) = 1/2 ln 2 + 1/2 ln(2/3) = 0.5 ln(4/3) = 0.14384103622589045
    p = T([0.5, 0.5], dtype=torch.float64)
    q = T([0.25, 0.75], dtype=torch.float64)
    kl = 0.14384103622589045
    assert math.isclose((p * kl_k1(p.log(), q.log())).sum().item(), kl, rel_tol=1e-12)
    assert math.isclose((p * kl_k3(p.log(), q.log())).sum().item(), kl, rel_tol=1e-12)


def test_kl_penalty_rewards():
    # k1 = lp - ref = [[1, 0, 0.5], [-0.5, 1, *]]; coef 0.1
    # row 0: [-0.1, 0, -0.05 + 1] ; row 1 (length 2): [0.05, -0.1 + 2, 0] ; row 2 empty: zeros
    lp = torch.zeros(3, 3)
    ref = T([[-1.0, 0.0, -0.5], [0.5, -1.0, 7.0], [1.0, 1.0, 1.0]])
    mask = T([[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    r = kl_penalty_rewards(T([1.0, 2.0, 5.0]), lp, ref, mask, kl_coef=0.1)
    torch.testing.assert_close(r, T([[-0.1, 0.0, 0.95], [0.05, 1.9, 0.0], [0.0, 0.0, 0.0]]))


def test_kl_penalty_rewards_k3_and_zero_coef():
    lp = T([[-1.0, -2.0]])
    ref = T([[-2.0, -1.0]])
    mask = T([[1, 1]])
    r = kl_penalty_rewards(T([3.0]), lp, ref, mask, kl_coef=0.0)
    torch.testing.assert_close(r, T([[0.0, 3.0]]))
    r = kl_penalty_rewards(T([3.0]), lp, ref, mask, kl_coef=1.0, estimator="k3")
    torch.testing.assert_close(r, T([[-math.exp(-1.0), 3.0 - (math.e - 2.0)]]))


def test_kl_loss_aggregation_and_padding():
    # valid k3 values: e^-1 (row 0, t 0), e - 2 (row 1, t 0); padding holds -inf
    lp = T([[-1.0, float("-inf")], [-2.0, 0.0]], requires_grad=True)
    ref = T([[-2.0, 0.0], [-1.0, 0.0]])
    mask = T([[1, 0], [1, 1]])
    loss = kl_loss(lp, ref, mask)  # k3, token mean over 3 valid tokens (third is 0)
    assert math.isclose(loss.item(), (math.exp(-1.0) + math.e - 2.0) / 3, rel_tol=1e-6)
    loss.backward()
    # d k3 / d lp = 1 - exp(ref - lp)
    expected = T([[(1 - math.exp(-1.0)) / 3, 0.0], [(1 - math.e) / 3, 0.0]])
    torch.testing.assert_close(lp.grad, expected)
    seq = kl_loss(lp.detach(), ref, mask, estimator="k1", agg="seq")
    # k1 per row: row0 mean 1, row1 mean (-1 + 0)/2 = -0.5 -> 0.25
    assert math.isclose(seq.item(), 0.25, rel_tol=1e-6)


def test_fixed_controller():
    c = FixedKLController(0.05)
    assert c.update(100.0, 1000) == 0.05 and c.value == 0.05


def test_adaptive_controller():
    c = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    # KL 9: error 9/6 - 1 = 0.5 -> clipped 0.2; mult = 1 + 0.2 * 256/10000 = 1.00512
    assert math.isclose(c.update(9.0, 256), 0.1 * 1.00512, rel_tol=1e-12)
    # KL 6.6: error 0.1 (inside the clip); mult = 1 + 0.1 * 1000/10000 = 1.01
    assert math.isclose(c.update(6.6, 1000), 0.1 * 1.00512 * 1.01, rel_tol=1e-12)
    # KL 3: error -0.5 -> -0.2; mult = 1 - 0.2 * 100/10000 = 0.998
    assert math.isclose(c.update(3.0, 100), 0.1 * 1.00512 * 1.01 * 0.998, rel_tol=1e-12)
    assert math.isclose(c.value, 0.1 * 1.00512 * 1.01 * 0.998, rel_tol=1e-12)
    # at target: unchanged
    v = c.value
    assert c.update(6.0, 5000) == v
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, target=0.0, horizon=10)
