"""L3M barrier math (Eqs. 9-12, Section 5) and the min-max baseline, against hand numbers."""
from __future__ import annotations

import math

import pytest
import torch

from rlcustom.algos.l3m import (
    ConstraintEMA,
    barrier_derivative,
    barrier_weights,
    constraint_values,
    implied_multipliers,
    interval_constraint,
    l3m_constraint_loss,
    lagrangian_loss,
    mu_schedule,
    relaxed_log_barrier,
    signed_constraint_rewards,
    update_multipliers,
)

F64 = torch.float64


def _t(x):
    return torch.tensor(x, dtype=F64)


# ---------------------------------------------------------------- barrier (Eq. 9)

def test_barrier_values_both_regimes():
    mu = 0.5  # s = 0.25
    z = _t([-1.0, -0.5, 0.0, 1.0])
    expected = [
        0.0,  # -0.5*log(1)
        0.5 * math.log(2.0),  # -0.5*log(0.5)
        0.5 + 0.5 * math.log(4.0),  # (0.5/0.25)*0 + 0.5 - 0.5*log(0.25)
        2.0 + 0.5 + 0.5 * math.log(4.0),  # 2*1 + same constant
    ]
    torch.testing.assert_close(relaxed_log_barrier(z, mu), _t(expected), rtol=0, atol=1e-12)


def test_barrier_derivative_closed_form():
    mu = 0.5
    z = _t([-1.0, -0.5, -0.25, 0.0, 1.0])
    # mu/(-z) for z <= -s, else mu/s = 2
    torch.testing.assert_close(barrier_derivative(z, mu), _t([0.5, 1.0, 2.0, 2.0, 2.0]), rtol=0, atol=1e-12)


def test_continuity_at_minus_s():
    for mu in (1.0, 0.5, 0.1, 1e-2):
        s = mu * mu
        eps = 1e-9 * s
        left, right = _t([-s - eps]), _t([-s + eps])
        at = _t([-s])
        assert relaxed_log_barrier(at, mu).item() == pytest.approx(-mu * math.log(s), rel=1e-12)
        assert relaxed_log_barrier(left, mu).item() == pytest.approx(relaxed_log_barrier(right, mu).item(), rel=0, abs=4 * eps / mu)  # slope mu/s
        assert barrier_derivative(left, mu).item() == pytest.approx(barrier_derivative(right, mu).item(), rel=1e-6)
        assert barrier_derivative(at, mu).item() == pytest.approx(1.0 / mu, rel=1e-12)


def test_autograd_matches_closed_form_and_no_nan():
    mu = 0.3
    z = torch.cat([torch.linspace(-3.0, 2.0, 41, dtype=F64), _t([-0.09, 0.0, 5.0])]).requires_grad_(True)
    out = relaxed_log_barrier(z, mu)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(z.grad).all()
    torch.testing.assert_close(z.grad, barrier_derivative(z.detach(), mu), rtol=1e-12, atol=1e-12)


def test_bad_mu():
    with pytest.raises(ValueError):
        relaxed_log_barrier(_t([0.0]), 0.0)
    with pytest.raises(ValueError):
        barrier_derivative(_t([0.0]), -1.0)


# ---------------------------------------------------------------- multipliers (Section 5.2)

def test_implied_multipliers_and_weights():
    c = _t([-1.0, 0.1])
    # mu/(k*max(-C, mu^2)), k = 2, mu = 0.5: 0.5/(2*1) and 0.5/(2*0.25)
    torch.testing.assert_close(implied_multipliers(c, 0.5), _t([0.25, 1.0]))
    torch.testing.assert_close(barrier_weights(c, 0.5), _t([0.25, 1.0]))
    # inactive constraint -> multiplier mu/(k|C|) -> 0; active -> 1/(k mu)
    lam = implied_multipliers(_t([-1.0, 0.0]), 1e-3)
    torch.testing.assert_close(lam, _t([1e-3 / 2, 1.0 / (2 * 1e-3)]))


def test_constraint_ema():
    ema = ConstraintEMA(2, smoothing=0.1)
    assert not ema.initialized
    with pytest.raises(RuntimeError):
        _ = ema.value
    torch.testing.assert_close(ema.update(_t([1.0, 2.0])), _t([1.0, 2.0]))  # first update = x
    torch.testing.assert_close(ema.update(_t([2.0, 0.0])), _t([1.1, 1.8]))  # 0.9*old + 0.1*new
    other = ConstraintEMA(2)
    other.load_state_dict(ema.state_dict())
    torch.testing.assert_close(other.value, _t([1.1, 1.8]))
    assert other.num_updates == 2
    with pytest.raises(ValueError):
        ema.update(_t([1.0, 2.0, 3.0]))


def test_mu_schedule():
    assert mu_schedule(0, 100) == 1.0
    assert mu_schedule(100, 100) == 1e-6
    assert mu_schedule(50, 100) == pytest.approx(1e-3, rel=1e-9)
    assert mu_schedule(250, 100) == 1e-6
    mus = [mu_schedule(s, 10, 0.5, 1e-4) for s in range(11)]
    assert mus[0] == 0.5 and mus[-1] == 1e-4
    assert all(a > b for a, b in zip(mus, mus[1:]))
    # constant ratio (mu_t = gamma * mu_{t-1}, Section 5.1)
    ratios = [b / a for a, b in zip(mus, mus[1:])]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-9)


def test_interval_and_signed_rewards():
    assert interval_constraint(50, 100) == [(1.0, 50.0), (-1.0, -100.0)]
    with pytest.raises(ValueError):
        interval_constraint(3, 2)
    rewards, bounds = signed_constraint_rewards(_t([60.0, 120.0]), interval_constraint(50, 100))
    torch.testing.assert_close(rewards, _t([[60.0, -60.0], [120.0, -120.0]]))
    torch.testing.assert_close(bounds, _t([50.0, -100.0]))
    # C_1 = mean(50 - 60, 50 - 120) = -40; C_2 = mean(-100 + 60, -100 + 120) = -10
    torch.testing.assert_close(constraint_values(rewards, bounds), _t([-40.0, -10.0]))


# ---------------------------------------------------------------- REINFORCE surrogate (Eqs. 11-12)

def test_constraint_loss_hand_values():
    lp = _t([-1.0, -2.0]).requires_grad_(True)
    # c = b - r = [1, -1]; loss = mean(0.5*1*(-1), 0.5*(-1)*(-2)) = mean(-0.5, 1.0)
    loss = l3m_constraint_loss(lp, _t([[1.0], [3.0]]), _t([2.0]), _t([0.5]))
    assert loss.item() == pytest.approx(0.25)
    loss.backward()
    torch.testing.assert_close(lp.grad, _t([0.25, -0.25]))

    # two constraints: per-sample sum_i w_i (b_i - r_i) = [0.5*1 + 1*(-1.5), 0.5*(-1) + 1*0.5] = [-1, 0]
    loss2 = l3m_constraint_loss(
        _t([-1.0, -2.0]), _t([[1.0, -1.0], [3.0, -3.0]]), _t([2.0, -2.5]), _t([0.5, 1.0])
    )
    assert loss2.item() == pytest.approx(0.5)

    # leave-one-out baseline: c = [0.5, -0.5] -> [0.5 - (-0.5), -0.5 - 0.5] = [1, -1]
    loss3 = l3m_constraint_loss(_t([-1.0, -2.0]), _t([[1.0], [3.0]]), _t([2.0]), _t([0.5]), loo_baseline=True)
    assert loss3.item() == pytest.approx(0.5)


def _toy_sample(theta, n, gen, rewards):
    probs = torch.softmax(theta.detach(), -1)
    ys = torch.multinomial(probs, n, replacement=True, generator=gen)
    logp = torch.log_softmax(theta, -1)[ys]
    return logp, rewards[ys]


def test_gradient_direction_toy_policy():
    """A categorical policy over 3 one-token responses with r = 0, 1, 2 and the constraint
    E[r] >= 1.5 (violated at the uniform start, E[r] = 1). The surrogate's gradient must
    match -w * dE[r]/dtheta and gradient *descent* must raise E[r] until the constraint holds."""
    gen = torch.Generator().manual_seed(0)
    r = _t([0.0, 1.0, 2.0])
    bounds = _t([1.5])
    theta = torch.zeros(3, dtype=F64, requires_grad=True)
    mu = 0.1
    w = barrier_weights(_t([1.5 - 1.0]), mu)  # C = 0.5 > 0 (violated) -> w = 1/(k mu) = 10
    assert w.item() == pytest.approx(10.0)

    logp, rew = _toy_sample(theta, 40000, gen, r)
    l3m_constraint_loss(logp, rew[:, None], bounds, w).backward()
    # exact: dE[r]/dtheta = pi * (r - E[r]) = [-1/3, 0, 1/3]  ->  expected grad = -w * that
    expected = -10.0 * _t([-1.0 / 3.0, 0.0, 1.0 / 3.0])
    torch.testing.assert_close(theta.grad, expected, rtol=0, atol=0.1)
    assert torch.dot(theta.grad, _t([-1.0, 0.0, 1.0])) < 0  # descent increases E[r]

    # a few SGD steps with the EMA-weighted barrier gradient satisfy the constraint
    ema = ConstraintEMA(1)
    opt = torch.optim.SGD([theta], lr=0.05)
    for _ in range(30):
        opt.zero_grad()
        logp, rew = _toy_sample(theta, 256, gen, r)
        ema.update(constraint_values(rew[:, None], bounds))
        l3m_constraint_loss(logp, rew[:, None], bounds, barrier_weights(ema.value, mu)).backward()
        opt.step()
    expected_r = torch.dot(torch.softmax(theta.detach(), -1), r).item()
    assert expected_r > 1.5


def test_gradient_direction_upper_bound():
    """Interval [0, 0.5] on r = 0, 1, 2: the upper constraint -r >= -0.5 is violated at the
    uniform start (E[r] = 1), so descent must *decrease* E[r]."""
    gen = torch.Generator().manual_seed(1)
    r = _t([0.0, 1.0, 2.0])
    rewards_all, bounds = signed_constraint_rewards(r, interval_constraint(0.0, 0.5))
    theta = torch.zeros(3, dtype=F64, requires_grad=True)
    c = constraint_values(rewards_all, bounds)  # uniform policy: [0 - 1, -0.5 + 1] = [-1, 0.5]
    torch.testing.assert_close(c, _t([-1.0, 0.5]))
    w = barrier_weights(c, 0.1)
    assert w[1] > w[0] > 0
    probs = torch.softmax(theta.detach(), -1)
    ys = torch.multinomial(probs, 40000, replacement=True, generator=gen)
    logp = torch.log_softmax(theta, -1)[ys]
    l3m_constraint_loss(logp, rewards_all[ys], bounds, w).backward()
    assert torch.dot(theta.grad, _t([-1.0, 0.0, 1.0])) > 0  # descent lowers E[r]


# ---------------------------------------------------------------- min-max baseline (Eq. 8)

def test_lagrangian_loss_and_multiplier_projection():
    loss = lagrangian_loss(torch.tensor(2.0, dtype=F64), _t([-1.0, -2.0]), _t([[1.0], [3.0]]), _t([2.0]), _t([0.5]))
    assert loss.item() == pytest.approx(2.25)  # 2 + 0.25 (see test_constraint_loss_hand_values)
    new = update_multipliers(_t([0.5, 0.1]), _t([1.0, -2.0]), lr=0.1)
    # max(0, 0.5 + 0.1*1) = 0.6; max(0, 0.1 - 0.2) = 0
    torch.testing.assert_close(new, _t([0.6, 0.0]))
    with pytest.raises(ValueError):
        update_multipliers(_t([0.5]), _t([1.0, 2.0]), lr=0.1)
