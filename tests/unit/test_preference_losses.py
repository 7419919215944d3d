"""Bradley-Terry, DPO, SFT and log-likelihood helpers against hand-computed values."""
from __future__ import annotations

import math

import torch

from rlcustom.algos.preference import (
    bradley_terry_loss,
    dpo_loss,
    sequence_logprobs,
    sft_loss,
    token_logprobs_from_logits,
)
from rlcustom.registry import OBJECTIVES

T = torch.tensor
D = torch.float64


def softplus(x: float) -> float:  # log(1 + e^x), by hand
    return math.log1p(math.exp(x))


def test_bt_single_pair():
    # c - r = 1: loss = log(1 + e^-1) = 0.31326168751822286
    loss, acc = bradley_terry_loss(T([2.0], dtype=D), T([1.0], dtype=D))
    assert math.isclose(loss.item(), 0.31326168751822286, rel_tol=1e-12)
    assert acc.item() == 1.0


def test_bt_batch_accuracy_and_margin():
    # diffs [1, -1]: (log(1+e^-1) + log(1+e^1)) / 2 = (0.31326168751822286 + 1.3132616875182228) / 2
    loss, acc = bradley_terry_loss(T([2.0, 0.0], dtype=D), T([1.0, 1.0], dtype=D))
    assert math.isclose(loss.item(), 0.8132616875182228, rel_tol=1e-12)
    assert acc.item() == 0.5
    # margin 0.5 on diff 1: log(1 + e^-0.5)
    loss, acc = bradley_terry_loss(T([2.0], dtype=D), T([1.0], dtype=D), margin=0.5)
    assert math.isclose(loss.item(), softplus(-0.5), rel_tol=1e-12)
    assert acc.item() == 1.0
    # per-pair margin tensor
    loss, _ = bradley_terry_loss(T([2.0, 2.0], dtype=D), T([1.0, 1.0], dtype=D), margin=T([0.0, 1.0], dtype=D))
    assert math.isclose(loss.item(), (softplus(-1.0) + math.log(2.0)) / 2, rel_tol=1e-12)


def test_bt_tie_counts_as_wrong_and_gradient():
    c = T([1.0], dtype=D, requires_grad=True)
    loss, acc = bradley_terry_loss(c, T([1.0], dtype=D))
    assert math.isclose(loss.item(), math.log(2.0), rel_tol=1e-12)
    assert acc.item() == 0.0
    loss.backward()
    # d/dc -log sigmoid(c - r) = -sigmoid(r - c) = -0.5
    assert math.isclose(c.grad.item(), -0.5, rel_tol=1e-12)


def test_dpo_hand_computed():
    # chosen log-ratio = -1 - (-2) = 1, rejected log-ratio = -3 - (-2) = -1
    # h = 0.1 * (1 - (-1)) = 0.2 ; loss = log(1 + e^-0.2) = 0.5981388693815918
    pc = T([-1.0], dtype=D, requires_grad=True)
    loss, stats = dpo_loss(pc, T([-3.0], dtype=D), T([-2.0], dtype=D), T([-2.0], dtype=D), beta=0.1)
    assert math.isclose(loss.item(), 0.5981388693815918, rel_tol=1e-12)
    assert math.isclose(stats["chosen_rewards"].item(), 0.1, rel_tol=1e-12)
    assert math.isclose(stats["rejected_rewards"].item(), -0.1, rel_tol=1e-12)
    assert stats["reward_accuracy"].item() == 1.0
    assert math.isclose(stats["reward_margin"].item(), 0.2, rel_tol=1e-12)
    loss.backward()
    # d/d pc = -beta * sigmoid(-h) = -0.1 / (1 + e^0.2)
    assert math.isclose(pc.grad.item(), -0.1 / (1.0 + math.exp(0.2)), rel_tol=1e-12)


def test_dpo_label_smoothing_and_batch():
    # ls = 0.1: 0.9 log(1+e^-0.2) + 0.1 log(1+e^0.2) = log(1+e^-0.2) + 0.1*0.2
    args = (T([-1.0], dtype=D), T([-3.0], dtype=D), T([-2.0], dtype=D), T([-2.0], dtype=D))
    loss, _ = dpo_loss(*args, beta=0.1, label_smoothing=0.1)
    assert math.isclose(loss.item(), 0.5981388693815918 + 0.02, rel_tol=1e-12)
    # batch of 2, second pair reversed (h = -0.5 with beta 0.5 and log-ratios 0, 1)
    loss, stats = dpo_loss(
        T([-1.0, -2.0], dtype=D), T([-3.0, -1.0], dtype=D), T([-2.0, -2.0], dtype=D), T([-2.0, -2.0], dtype=D), beta=0.5
    )
    # pair 0: h = 0.5 * 2 = 1 -> log(1+e^-1); pair 1: h = 0.5 * (0 - 1) = -0.5 -> log(1+e^0.5)
    assert math.isclose(loss.item(), (softplus(-1.0) + softplus(0.5)) / 2, rel_tol=1e-12)
    assert stats["reward_accuracy"].item() == 0.5
    # margins: pair 0: 0.5 - (-0.5) = 1 ; pair 1: 0 - 0.5 = -0.5 -> mean 0.25
    assert math.isclose(stats["reward_margin"].item(), 0.25, rel_tol=1e-12)


def test_sequence_logprobs():
    tok = T([[-1.0, -2.0, -3.0], [-4.0, -9.0, -9.0], [-1.0, -1.0, -1.0]])
    mask = T([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    torch.testing.assert_close(sequence_logprobs(tok, mask), T([-6.0, -4.0, 0.0]))
    torch.testing.assert_close(sequence_logprobs(tok, mask, normalize=True), T([-2.0, -4.0, 0.0]))


def test_token_logprobs_from_logits():
    # logits [0, ln 3]: p = [1/4, 3/4]
    logits = T([[[0.0, math.log(3.0)], [0.0, 0.0]]], dtype=D, requires_grad=True)
    labels = T([[1, 0]])
    lp = token_logprobs_from_logits(logits, labels)
    torch.testing.assert_close(lp, T([[math.log(0.75), math.log(0.5)]], dtype=D))
    lp.sum().backward()
    # gradient of log p_label w.r.t. logits = onehot(label) - softmax
    torch.testing.assert_close(logits.grad, T([[[-0.25, 0.25], [0.5, -0.5]]], dtype=D))


def test_token_logprobs_bf16_upcasts():
    logits = T([[[0.0, math.log(3.0), -1.0]], [[2.0, 0.0, 0.0]]])
    labels = T([[1], [0]])
    ref = token_logprobs_from_logits(logits, labels)
    lp16 = token_logprobs_from_logits(logits.to(torch.bfloat16), labels)
    assert lp16.dtype == torch.float32
    torch.testing.assert_close(lp16, ref, atol=2e-2, rtol=2e-2)
    # 1-d row: log softmax([0, 0])[0] = -ln 2
    assert math.isclose(token_logprobs_from_logits(T([0.0, 0.0]).bfloat16(), T(0)).item(), -math.log(2.0), rel_tol=1e-6)


def _sft_case():
    # B=1, L=3, V=2; input_ids [0, 1, 0]
    # position 0 predicts id 1 with logits [0, ln3]: NLL = -ln(3/4) = ln(4/3) = 0.28768207245178085
    # position 1 predicts id 0 with logits [0, 0]:   NLL = ln 2
    # position 2 predicts nothing (its logits are irrelevant)
    logits = T([[[0.0, math.log(3.0)], [0.0, 0.0], [5.0, -5.0]]], dtype=D)
    ids = T([[0, 1, 0]])
    return logits, ids


def test_sft_loss_masks_prompt():
    logits, ids = _sft_case()
    loss = sft_loss(logits, ids, T([[0, 1, 1]]))
    assert math.isclose(loss.item(), (0.28768207245178085 + math.log(2.0)) / 2, rel_tol=1e-12)
    # only the last token is a target
    loss = sft_loss(logits, ids, T([[0, 0, 1]]))
    assert math.isclose(loss.item(), math.log(2.0), rel_tol=1e-12)
    # loss_mask[:, 0] is ignored (nothing predicts the first token)
    assert sft_loss(logits, ids, T([[1, 0, 1]])).item() == loss.item()
    # the last position's logits never matter; masked targets never matter
    logits2 = logits.clone()
    logits2[0, 2] = T([-30.0, 30.0])
    logits2[0, 0] = T([10.0, -10.0])
    assert sft_loss(logits2, ids, T([[0, 0, 1]])).item() == loss.item()
    # no target at all -> 0
    assert sft_loss(logits, ids, torch.zeros(1, 3)).item() == 0.0


def test_sft_loss_is_token_mean_over_batch():
    # row 0: 2 targets (ln(4/3), ln 2); row 1: 1 target with logits [0, 0, ...] -> ln 2
    logits, ids = _sft_case()
    logits = torch.cat([logits, torch.zeros_like(logits)])
    ids = torch.cat([ids, T([[1, 1, 1]])])
    mask = T([[0, 1, 1], [0, 0, 1]])
    expected = (0.28768207245178085 + 2 * math.log(2.0)) / 3
    assert math.isclose(sft_loss(logits, ids, mask).item(), expected, rel_tol=1e-12)


def test_registered():
    import rlcustom.objectives  # noqa: F401  (registers the objectives: the one table of losses)

    assert OBJECTIVES.get("bt_reward").loss is bradley_terry_loss
    assert OBJECTIVES.get("dpo").loss is dpo_loss
    assert OBJECTIVES.get("sft").loss is None  # its NLL is taken from response log-probs directly, not sft_loss
