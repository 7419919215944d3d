"""Value Augmented Sampling scores (VAS Eq. 5) against hand-computed numbers."""
from __future__ import annotations

import math

import pytest
import torch

from rlcustom.algos.vas import compose_values, topk_children, vas_blackbox_scores, vas_scores

LN = math.log
BASE = torch.tensor([[LN(0.4), LN(0.3), LN(0.2), LN(0.1)]], dtype=torch.float64)


def _close(a, b):
    torch.testing.assert_close(a, torch.as_tensor(b, dtype=a.dtype), rtol=0, atol=1e-12)


def test_topk_children():
    ids, lps = topk_children(torch.tensor([[LN(0.1), LN(0.5), LN(0.4)]]), 2)
    assert ids.tolist() == [[1, 2]]
    torch.testing.assert_close(lps, torch.tensor([[LN(0.5), LN(0.4)]]))
    with pytest.raises(ValueError):
        topk_children(BASE, 5)


def test_hand_case():
    ids = torch.tensor([[0, 1]])
    vals = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    s = vas_scores(BASE, ids, vals, beta=0.5)
    # top-k: log p + 0.5*V; others: log p + 0.5*mean(1, 3) = log p + 1.0
    _close(s, [[LN(0.4) + 0.5, LN(0.3) + 1.5, LN(0.2) + 1.0, LN(0.1) + 1.0]])
    # the sampling distribution of Eq. 5
    w = [0.4 * math.exp(0.5), 0.3 * math.exp(1.5), 0.2 * math.exp(1.0), 0.1 * math.exp(1.0)]
    _close(torch.softmax(s, -1), [[x / sum(w) for x in w]])


def test_ids_in_any_order():
    ids = torch.tensor([[3, 1]])
    vals = torch.tensor([[2.0, -2.0]], dtype=torch.float64)
    s = vas_scores(BASE, ids, vals, beta=1.0)  # mean = 0
    _close(s, [[LN(0.4), LN(0.3) - 2.0, LN(0.2), LN(0.1) + 2.0]])


def test_beta_zero_returns_base():
    ids = torch.tensor([[2, 0]])
    vals = torch.tensor([[5.0, -7.0]], dtype=torch.float64)
    _close(vas_scores(BASE, ids, vals, beta=0.0), BASE)
    _close(vas_scores(BASE, ids, vals, beta=torch.tensor(0.0)), BASE)


def test_per_row_beta():
    base = BASE.repeat(2, 1)
    ids = torch.tensor([[0, 1], [0, 1]])
    vals = torch.tensor([[1.0, 3.0], [1.0, 3.0]], dtype=torch.float64)
    s = vas_scores(base, ids, vals, beta=torch.tensor([0.0, 2.0]))
    _close(s[0], BASE[0])
    # row 1: beta = 2, mean = 2 -> others + 4
    _close(s[1], [LN(0.4) + 2.0, LN(0.3) + 6.0, LN(0.2) + 4.0, LN(0.1) + 4.0])
    with pytest.raises(ValueError):
        vas_scores(base, ids, vals, beta=torch.tensor([1.0, 2.0, 3.0]))


def test_neg_inf_base_stays_disallowed():
    base = torch.tensor([[LN(0.5), LN(0.5), float("-inf")]])
    s = vas_scores(base, torch.tensor([[0, 1]]), torch.tensor([[1.0, 2.0]]), beta=1.0)
    assert s[0, 2].item() == float("-inf")
    assert torch.softmax(s, -1)[0, 2].item() == 0.0


def test_composition():
    v1 = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    v2 = torch.tensor([[2.0, -2.0]], dtype=torch.float64)
    comb = compose_values([v1, v2], [0.5, 1.0])
    _close(comb, [[2.5, -0.5]])  # 0.5*[1, 3] + [2, -2]
    s = vas_scores(BASE, torch.tensor([[0, 1]]), comb, beta=1.0)
    # others: mean(2.5, -0.5) = 1.0
    _close(s, [[LN(0.4) + 2.5, LN(0.3) - 0.5, LN(0.2) + 1.0, LN(0.1) + 1.0]])
    # per-request betas inside the composition
    c2 = compose_values([v1.repeat(2, 1), v2.repeat(2, 1)], [torch.tensor([1.0, 0.0]), 2.0])
    _close(c2, [[5.0, -1.0], [4.0, -4.0]])
    with pytest.raises(ValueError):
        compose_values([v1, v2], [1.0])
    with pytest.raises(ValueError):
        compose_values([], [])


def test_blackbox():
    ids = torch.tensor([[7, 3]])
    lps = torch.tensor([[LN(0.5), LN(0.25)]], dtype=torch.float64)
    vals = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    out_ids, scores = vas_blackbox_scores(ids, lps, vals, beta=1.0)
    assert out_ids.tolist() == [[7, 3]]
    z = 0.5 + 0.25 * math.e
    _close(scores, [[LN(0.5 / z), LN(0.25 * math.e / z)]])
    # renormalised over the k candidates
    assert torch.exp(scores).sum().item() == pytest.approx(1.0)
    # beta = 0: pi_0 renormalised over the top-k
    _, s0 = vas_blackbox_scores(ids, lps, vals, beta=0.0)
    _close(s0, [[LN(2 / 3), LN(1 / 3)]])
