"""Q-Adapter math (Eqs. 4, 9, 10) against hand-computed numbers."""
from __future__ import annotations

import math

import pytest
import torch

from rlcustom.algos.qadapter import qadapter_logits, qadapter_loss, residual_rewards
from rlcustom.registry import OBJECTIVES

LN = math.log
F64 = torch.float64


def _case():
    """B=2, T=2, V=3. Row 0: both tokens valid. Row 1: one valid token, then padding."""
    q = torch.tensor(
        [
            [[1.0, 2.0, 3.0], [0.0, LN(2.0), LN(2.0)]],
            [[0.5, -1.0, 2.0], [100.0, 100.0, 100.0]],  # padded position: finite garbage
        ],
        dtype=F64,
    )
    base = torch.log(
        torch.tensor(
            [
                [[1 / 3, 1 / 3, 1 / 3], [0.5, 0.25, 0.25]],
                [[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]],
            ],
            dtype=F64,
        )
    )
    actions = torch.tensor([[2, 0], [1, -100]])
    mask = torch.tensor([[1, 1], [1, 0]])
    return q, base, actions, mask


def test_residual_rewards_hand_case():
    q, base, actions, mask = _case()
    r = residual_rewards(q, base, actions, mask, alpha=1.0, alpha0=1.0, gamma=1.0)
    # row 0, t=0: Q(s0, a=2) = 3; next state: Q + log pi1 = [ln .5, ln2 + ln .25, ln2 + ln .25]
    #   = ln .5 each, so alpha*logsumexp = ln 1.5.  t=1 is terminal: r = Q(s1, a=0) = 0.
    # row 1, t=0 is the last valid token (terminal): r = Q(s0, a=1) = -1; padding -> 0.
    expected = torch.tensor([[3.0 - LN(1.5), 0.0], [-1.0, 0.0]], dtype=F64)
    torch.testing.assert_close(r, expected, rtol=0, atol=1e-12)


def test_residual_rewards_gamma_alpha_alpha0():
    q, base, actions, mask = _case()
    r = residual_rewards(q, base, actions, mask, alpha=1.0, alpha0=1.0, gamma=0.5)
    assert r[0, 0].item() == pytest.approx(3.0 - 0.5 * LN(1.5), abs=1e-12)
    # alpha = 2: 2 * ln(sum exp(ln(.5)/2)) = 2 ln(3 sqrt(.5))
    r = residual_rewards(q, base, actions, mask, alpha=2.0, alpha0=1.0, gamma=1.0)
    assert r[0, 0].item() == pytest.approx(3.0 - 2.0 * LN(3.0 * math.sqrt(0.5)), abs=1e-12)
    assert r[1, 0].item() == pytest.approx(-1.0, abs=1e-12)
    # paper default alpha0 = 0.01: exp(0 + .01 ln .5) + 2 * exp(ln 2 + .01 ln .25)
    r = residual_rewards(q, base, actions, mask)
    assert r[0, 0].item() == pytest.approx(3.0 - LN(0.5**0.01 + 4.0 * 0.25**0.01), abs=1e-12)


def test_residual_rewards_gradient():
    q, base, actions, mask = _case()
    q.requires_grad_(True)
    r = residual_rewards(q, base, actions, mask, alpha=1.0, alpha0=1.0)
    r[0, 0].backward()
    g = q.grad
    # d r_00 / d Q(s0, .) = one-hot(a=2); d r_00 / d Q(s1, .) = -softmax(ln .5, ln .5, ln .5)
    torch.testing.assert_close(g[0, 0], torch.tensor([0.0, 0.0, 1.0], dtype=F64))
    torch.testing.assert_close(g[0, 1], torch.full((3,), -1.0 / 3.0, dtype=F64))
    assert torch.count_nonzero(g[1]) == 0


def test_residual_rewards_interior_gap():
    q = torch.tensor([[[1.0, 0.0], [7.0, 7.0], [0.0, 0.0]]], dtype=F64)
    base = torch.log(torch.full((1, 3, 2), 0.5, dtype=F64))
    # position 1 is masked: position 0's next state term comes from position 2
    r = residual_rewards(q, base, torch.tensor([[0, 0, 1]]), torch.tensor([[1, 0, 1]]), alpha=1.0, alpha0=1.0)
    # logsumexp(ln .5, ln .5) = 0  ->  r_0 = 1 - 0; r_2 terminal = Q(s2, a=1) = 0
    torch.testing.assert_close(r, torch.tensor([[1.0, 0.0, 0.0]], dtype=F64))


def test_rewards_telescope_to_policy_logratio():
    """Sum_t r_t = sum_t [alpha log pi~(a_t) - alpha0 log pi_1(a_t)] + Vsoft(s_0) (gamma = 1), where
    pi~ = softmax(qadapter_logits): Eq. 9 and Eq. 4 describe the same policy."""
    g = torch.Generator().manual_seed(0)
    B, T, V = 3, 4, 5
    q = torch.randn(B, T, V, generator=g, dtype=F64)
    base_logits = torch.randn(B, T, V, generator=g, dtype=F64)
    base = torch.log_softmax(base_logits, -1)
    actions = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    alpha, alpha0 = 0.7, 0.3
    r = residual_rewards(q, base, actions, mask, alpha=alpha, alpha0=alpha0)
    logpi = torch.log_softmax(qadapter_logits(q, base_logits, alpha=alpha, alpha0=alpha0), -1)
    lp_a = logpi.gather(-1, actions[..., None]).squeeze(-1)
    lb_a = base.gather(-1, actions[..., None]).squeeze(-1)
    v0 = alpha * torch.logsumexp((q[:, 0] + alpha0 * base[:, 0]) / alpha, -1)
    torch.testing.assert_close(r.sum(-1), (alpha * lp_a - alpha0 * lb_a).sum(-1) + v0)


def test_qadapter_loss_single_pair():
    cw = torch.tensor([[1.0, 2.0]], requires_grad=True)
    rl = torch.tensor([[0.5, 9.0]])
    loss, stats = qadapter_loss(cw, torch.tensor([[1, 1]]), rl, torch.tensor([[1, 0]]), beta=0.1)
    # BT: -log sigmoid(3 - 0.5) = log(1 + e^-2.5); L2: 0.1 * (1 + 4 + 0.25) / 3 tokens
    bt = math.log1p(math.exp(-2.5))
    assert loss.item() == pytest.approx(bt + 0.175, abs=1e-6)
    assert stats["bt_loss"].item() == pytest.approx(bt, abs=1e-6)
    assert stats["l2_loss"].item() == pytest.approx(0.175, abs=1e-6)
    assert stats["accuracy"].item() == 1.0
    loss.backward()
    # d/d r_w,t = -sigmoid(-2.5) + 0.1 * 2 r_t / 3
    s = 1.0 / (1.0 + math.exp(2.5))
    torch.testing.assert_close(cw.grad, torch.tensor([[-s + 0.2 / 3, -s + 0.4 / 3]]))

    ln_loss, _ = qadapter_loss(cw.detach(), torch.tensor([[1, 1]]), rl, torch.tensor([[1, 0]]), beta=0.1, length_normalize=True)
    # means: 1.5 vs 0.5
    assert ln_loss.item() == pytest.approx(math.log1p(math.exp(-1.0)) + 0.175, abs=1e-6)


def test_qadapter_loss_batch_and_registry():
    chosen = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    chosen_mask = torch.tensor([[1, 1], [1, 0]])
    rejected = torch.tensor([[0.5, 0.0], [1.0, 0.0]])
    rejected_mask = torch.tensor([[1, 0], [1, 1]])
    loss, stats = qadapter_loss(chosen, chosen_mask, rejected, rejected_mask, beta=0.1)
    # margins 2.5 and -1; squares over 6 valid tokens: 1 + 4 + 0 + 0.25 + 1 + 0 = 6.25
    bt = 0.5 * (math.log1p(math.exp(-2.5)) + math.log1p(math.exp(1.0)))
    assert loss.item() == pytest.approx(bt + 0.1 * 6.25 / 6, abs=1e-6)
    assert stats["accuracy"].item() == 0.5
    assert stats["margin"].item() == pytest.approx(0.75)
    import rlcustom.objectives  # noqa: F401  (registers the objectives)

    assert OBJECTIVES.get("qadapter").loss is qadapter_loss  # the one table: the objective applies this loss


def test_qadapter_logits():
    out = qadapter_logits(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), alpha=2.0, alpha0=1.0)
    torch.testing.assert_close(out, torch.tensor([[(1.0 + LN(0.5)) / 2.0, LN(0.5) / 2.0]]))
    # base given as logits shifted by a constant: same result
    out2 = qadapter_logits(torch.tensor([[1.0, 0.0]]), torch.tensor([[5.0, 5.0]]), alpha=2.0, alpha0=1.0)
    torch.testing.assert_close(out, out2)
    # policy: pi~ ∝ pi1^(alpha0/alpha) exp(Q/alpha)
    q = torch.tensor([[0.3, -0.2, 1.0]], dtype=F64)
    p1 = torch.tensor([[0.5, 0.3, 0.2]], dtype=F64)
    pol = torch.softmax(qadapter_logits(q, torch.log(p1), alpha=0.5, alpha0=0.01), -1)
    unnorm = p1 ** (0.01 / 0.5) * torch.exp(q / 0.5)
    torch.testing.assert_close(pol, unnorm / unnorm.sum())
    with pytest.raises(ValueError):
        qadapter_logits(q, torch.log(p1), alpha=0.0)


def test_bt_temperature_paper_and_official():
    from rlcustom.algos.qadapter import bt_temperature

    assert bt_temperature("paper", 7) == 1.0
    assert bt_temperature("official", 7) == 6.0  # the released code: logits / (L - 1), L = padded length
    with pytest.raises(ValueError, match="bt_scale"):
        bt_temperature("offical", 7)
    with pytest.raises(ValueError, match="length"):
        bt_temperature("official", 1)
    with pytest.raises(ValueError, match="bt_temperature"):
        qadapter_loss(torch.zeros(1, 1), torch.ones(1, 1), torch.zeros(1, 1), torch.ones(1, 1), bt_temperature=0.0)


def test_qadapter_loss_bt_temperature_divides_the_logit_only():
    cw = torch.tensor([[1.0, 2.0]], requires_grad=True)
    rl = torch.tensor([[0.5, 9.0]])
    loss, stats = qadapter_loss(cw, torch.tensor([[1, 1]]), rl, torch.tensor([[1, 0]]), beta=0.1, bt_temperature=5.0)
    # BT: -log sigmoid((3 - 0.5) / 5) = log(1 + e^-0.5); the L2 term is unchanged: 0.1 * 5.25 / 3 = 0.175
    assert stats["bt_loss"].item() == pytest.approx(math.log1p(math.exp(-0.5)), abs=1e-6)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.5)) + 0.175, abs=1e-6)
    assert stats["margin"].item() == pytest.approx(2.5)  # reported before the division
    loss.backward()
    s = 1.0 / (1.0 + math.exp(0.5))  # d/d r_w,t = -sigmoid(-0.5) / 5 + 0.1 * 2 r_t / 3
    torch.testing.assert_close(cw.grad, torch.tensor([[-s / 5 + 0.2 / 3, -s / 5 + 0.4 / 3]]))


@pytest.mark.parametrize("bt_scale,tau", [("paper", 1.0), ("official", 4.0)])
def test_qadapter_objective_bt_scale(bt_scale, tau):
    """One pair, prompt 2 columns + reply 3 columns (L = 5): official divides by L - 1 = 4."""
    import rlcustom.objectives  # noqa: F401  (registers the objectives)
    from rlcustom.models.forward import LOGITS

    V = 3
    q = torch.zeros(2, 3, V)
    q[0, 0, 1] = 2.0  # chosen's first token; every other Q is 0
    base = torch.full((2, 3, V), -LN(V))  # uniform pi_1
    batch = {"input_ids": torch.tensor([[7, 7, 1, 0, 0], [7, 7, 2, 2, 0]]), "prompt_len": 2,
             "attention_mask": torch.ones(2, 5, dtype=torch.long),
             "response_mask": torch.tensor([[1, 0, 0], [1, 1, 0]]), LOGITS: q, "base_logprobs": base}
    loss, stats = OBJECTIVES.get("qadapter")(None, batch, alpha=1.0, alpha0=0.0, beta=0.0, bt_scale=bt_scale)
    # Eq. 9 with alpha0 = 0, gamma = 1: chosen has one token, r = Q(s1, 1) - 0 (terminal) = 2.
    # rejected: r1 = Q(s1, 2) - Vsoft(s2) = 0 - log 3, r2 = 0 (terminal); R_l = -log 3.
    margin = 2.0 + LN(3.0)
    assert stats["train/margin"] == pytest.approx(margin, abs=1e-6)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-margin / tau)), abs=1e-6)


def test_bt_scale_is_a_validated_algo_key():
    from pathlib import Path

    from rlcustom.config import load_config
    from rlcustom.errors import ConfigError

    cfg = Path(__file__).resolve().parents[2] / "configs" / "qadapter.yaml"
    assert load_config(cfg).algo.bt_scale == "paper"
    assert load_config(cfg, ["algo.bt_scale=official"]).algo.bt_scale == "official"
    with pytest.raises(ConfigError, match="algo.bt_scale"):
        load_config(cfg, ["algo.bt_scale=offical"])
