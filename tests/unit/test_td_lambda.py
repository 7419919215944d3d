"""TD(lambda) targets (VAS Section 3.3) against hand-computed numbers."""
from __future__ import annotations

import pytest
import torch

from rlcustom.algos.td_lambda import td_lambda_targets, value_mse_loss
from rlcustom.registry import OBJECTIVES

# One episode of 3 tokens: V(s_0..s_2) = 1, 2, 3; the reward 1 arrives at the last token.
V = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
R = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
M = torch.ones(1, 3)


def _close(a, b):
    torch.testing.assert_close(a, torch.as_tensor(b, dtype=a.dtype), rtol=0, atol=1e-12)


def test_td0():
    # G_2 = r_2 = 1 (terminal); G_1 = r_1 + V_2 = 3; G_0 = r_0 + V_1 = 2
    _close(td_lambda_targets(V, R, M, gamma=1.0, lam=0.0), [[2.0, 3.0, 1.0]])


def test_td1_is_monte_carlo_return():
    # lam = 1: every prefix regresses on the final reward (online FUDGE)
    _close(td_lambda_targets(V, R, M, gamma=1.0, lam=1.0), [[1.0, 1.0, 1.0]])
    # discounted: 0.9^2, 0.9, 1
    _close(td_lambda_targets(V, R, M, gamma=0.9, lam=1.0), [[0.81, 0.9, 1.0]])


def test_lambda_half():
    # G_2 = 1; G_1 = 0 + 0.5*V_2 + 0.5*G_2 = 1.5 + 0.5 = 2; G_0 = 0.5*V_1 + 0.5*G_1 = 1 + 1 = 2
    _close(td_lambda_targets(V, R, M, gamma=1.0, lam=0.5), [[2.0, 2.0, 1.0]])


def test_lambda_half_gamma_half():
    # G_2 = 1; G_1 = 0.5*(0.5*3 + 0.5*1) = 1.0; G_0 = 0.5*(0.5*2 + 0.5*1.0) = 0.75
    _close(td_lambda_targets(V, R, M, gamma=0.5, lam=0.5), [[0.75, 1.0, 1.0]])


def test_padding_and_empty_row():
    values = torch.tensor(
        [[1.0, 2.0, 3.0], [5.0, 7.0, float("inf")], [float("nan"), 4.0, 4.0]], dtype=torch.float64
    )
    rewards = torch.tensor([[0.0, 0.0, 1.0], [1.0, 2.0, 99.0], [3.0, 3.0, 3.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    g = td_lambda_targets(values, rewards, mask, gamma=1.0, lam=0.5)
    # row 1: position 1 is terminal: G_1 = 2; G_0 = 1 + 0.5*7 + 0.5*2 = 5.5; padded G_2 = 0
    _close(g, [[2.0, 2.0, 1.0], [5.5, 2.0, 0.0], [0.0, 0.0, 0.0]])


def test_no_grad_and_validation():
    values = V.clone().requires_grad_(True)
    g = td_lambda_targets(values, R, M, lam=0.5)
    assert not g.requires_grad
    with pytest.raises(ValueError):
        td_lambda_targets(V, R[:, :2], M)
    with pytest.raises(ValueError):
        td_lambda_targets(V, R, M, lam=1.5)


def test_value_mse_loss():
    values = torch.tensor([[1.0, 2.0, float("nan")]], requires_grad=True)
    targets = torch.tensor([[2.0, 2.0, 1.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, stats = value_mse_loss(values, targets, mask)
    # ((1-2)^2 + 0^2) / 2 valid tokens
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    # d/dV_0 = 2*(1-2)/2 = -1; padded position gets exactly 0 gradient despite nan
    torch.testing.assert_close(values.grad, torch.tensor([[-1.0, 0.0, 0.0]]))
    assert stats["value_mean"].item() == pytest.approx(1.5)
    assert stats["target_mean"].item() == pytest.approx(2.0)
    import rlcustom.actors.value  # noqa: F401  (registers the value objectives)

    assert OBJECTIVES.get("value_mse").loss is value_mse_loss
    empty, _ = value_mse_loss(values.detach(), targets, torch.zeros_like(mask))
    assert empty.item() == 0.0
