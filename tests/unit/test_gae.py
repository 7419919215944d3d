"""GAE against hand-computed values (Schulman et al. 2016, Eq. 16)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcustom.algos.gae import gae_advantages
from rlcustom.registry import ADV_ESTIMATORS

T = torch.tensor


def test_hand_computed_1x3():
    # gamma=0.9, lam=0.8 -> gamma*lam = 0.72
    # t=2: delta = 1 + 0.9*0   - 0.3 = 0.7                 A2 = 0.7
    # t=1: delta = 0 + 0.9*0.3 - 0.4 = -0.13               A1 = -0.13 + 0.72*0.7   = 0.374
    # t=0: delta = 0 + 0.9*0.4 - 0.5 = -0.14               A0 = -0.14 + 0.72*0.374 = 0.12928
    r = T([[0.0, 0.0, 1.0]], dtype=torch.float64)
    v = T([[0.5, 0.4, 0.3]], dtype=torch.float64)
    m = T([[1, 1, 1]])
    adv, ret = gae_advantages(r, v, m, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, T([[0.12928, 0.374, 0.7]], dtype=torch.float64))
    torch.testing.assert_close(ret, T([[0.62928, 0.774, 1.0]], dtype=torch.float64))


def test_lambda_one_gives_discounted_monte_carlo_return():
    r = T([[0.0, 0.0, 1.0]])
    v = T([[0.5, 0.4, 0.3]])
    _, ret = gae_advantages(r, v, torch.ones(1, 3), gamma=0.9, lam=1.0)
    torch.testing.assert_close(ret, T([[0.81, 0.9, 1.0]]))


def test_lambda_zero_gives_td_error():
    r = T([[0.0, 0.0, 1.0]])
    v = T([[0.5, 0.4, 0.3]])
    adv, _ = gae_advantages(r, v, torch.ones(1, 3), gamma=0.9, lam=0.0)
    torch.testing.assert_close(adv, T([[-0.14, -0.13, 0.7]]))


def test_right_padding_and_zero_row():
    # row 0: valid length 2; values in the padding are garbage (must not leak in).
    #   t=1: delta = 1 - 0.2 = 0.8                     A1 = 0.8
    #   t=0: delta = 0 + 0.9*0.2 - 0.5 = -0.32         A0 = -0.32 + 0.72*0.8 = 0.256
    # row 1: all masked -> zeros.
    r = T([[0.0, 1.0, 5.0, 5.0], [1.0, 2.0, 3.0, 4.0]])
    v = T([[0.5, 0.2, 9.0, float("inf")], [1.0, 1.0, 1.0, 1.0]])
    m = T([[1, 1, 0, 0], [0, 0, 0, 0]])
    adv, ret = gae_advantages(r, v, m, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, T([[0.256, 0.8, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(ret, T([[0.756, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    assert torch.isfinite(adv).all() and torch.isfinite(ret).all()


def test_batch_rows_are_independent():
    r = T([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    v = T([[0.5, 0.4, 0.3], [0.5, 0.2, 7.0]])
    m = T([[1, 1, 1], [1, 1, 0]])
    adv, _ = gae_advantages(r, v, m, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, T([[0.12928, 0.374, 0.7], [0.256, 0.8, 0.0]]))


def test_interior_gap_is_skipped():
    # mask [1, 0, 1]: the masked slot is transparent, the valid tokens form [r0, r2].
    # compact sequence r=[0, 1], V=[0.5, 0.3]: A1 = 0.7; A0 = 0.9*0.3 - 0.5 + 0.72*0.7 = 0.274
    r = T([[0.0, 9.0, 1.0]])
    v = T([[0.5, 9.0, 0.3]])
    adv, ret = gae_advantages(r, v, T([[1, 0, 1]]), gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, T([[0.274, 0.0, 0.7]]))
    torch.testing.assert_close(ret, T([[0.774, 0.0, 1.0]]))


def test_registered_estimator_uniform_call():
    est = ADV_ESTIMATORS.get("gae")
    r = T([[0.0, 0.0, 1.0]])
    v = T([[0.5, 0.4, 0.3]])
    m = torch.ones(1, 3)
    adv, ret = est(token_rewards=r, values=v, mask=m, scores=T([1.0]), group_ids=T([0]), gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, T([[0.12928, 0.374, 0.7]]))
    torch.testing.assert_close(ret, T([[0.62928, 0.774, 1.0]]))
    with pytest.raises(ValueError):
        est(token_rewards=r, values=None, mask=m, scores=None, group_ids=None, gamma=0.9, lam=0.8)


@settings(max_examples=30, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 6),
    pad=st.integers(0, 3),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
)
def test_matches_closed_form_sum_and_ignores_padding(data, n, pad, gamma, lam):
    fl = st.floats(-3.0, 3.0, allow_nan=False)
    r = data.draw(st.lists(fl, min_size=n, max_size=n))
    v = data.draw(st.lists(fl, min_size=n, max_size=n))
    # closed form: A_t = sum_l (gamma*lam)^l delta_{t+l}, V_n = 0
    vv = v + [0.0]
    delta = [r[t] + gamma * vv[t + 1] - vv[t] for t in range(n)]
    expected = [sum((gamma * lam) ** (l - t) * delta[l] for l in range(t, n)) for t in range(n)]
    rt = T([r + [100.0] * pad], dtype=torch.float64)
    vt = T([v + [-100.0] * pad], dtype=torch.float64)
    mt = T([[1] * n + [0] * pad])
    adv, ret = gae_advantages(rt, vt, mt, gamma=gamma, lam=lam)
    torch.testing.assert_close(adv[0], T(expected + [0.0] * pad, dtype=torch.float64), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(ret[0, :n], adv[0, :n] + T(v, dtype=torch.float64))
    assert math.isclose(float(ret[0, n:].abs().sum()), 0.0)
