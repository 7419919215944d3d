"""Packed micro-batches (rlcustom.models.packing): the same log-probs, hidden states, values and losses as the
padded forward on the tiny model, and the token-budget split by hand."""
from __future__ import annotations

import pytest
import torch

from rlcustom.models.forward import response_hidden, response_logprobs
from rlcustom.models.packing import PACKED, layout, split_by_tokens
from rlcustom.training.batches import split_packed

ATOL = 1e-5


def ragged_batch(B: int = 7, P: int = 6, T: int = 5, seed: int = 0) -> dict:
    """Prompts left-padded to P, responses right-padded to T, lengths varying per row; row 3 has no response."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 1000, (B, P + T), generator=g)
    attn = torch.ones(B, P + T, dtype=torch.long)
    rmask = torch.zeros(B, T)
    for i in range(B):
        pl, rl = P - (i % 4), (0 if i == 3 else T - (i % 3))
        ids[i, : P - pl], attn[i, : P - pl] = 2, 0
        ids[i, P + rl :], attn[i, P + rl :] = 2, 0
        rmask[i, :rl] = 1
    return {"input_ids": ids, "attention_mask": attn, "response_mask": rmask, "prompt_len": P,
            "advantages": torch.randn(B, T, generator=g), "logprobs": -torch.rand(B, T, generator=g) * rmask}


def test_layout_by_hand():
    # row 0: prompt [a b] (1 pad), response [c] ; row 1: prompt [d e f], response [g h]
    b = {"input_ids": torch.tensor([[0, 11, 12, 13, 0], [21, 22, 23, 24, 25]]),
         "attention_mask": torch.tensor([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
         "response_mask": torch.tensor([[1.0, 0.0], [1.0, 1.0]]), "prompt_len": 3}
    lay = layout(b)
    assert lay.input_ids.tolist() == [[11, 12, 13, 21, 22, 23, 24, 25]]
    assert lay.position_ids.tolist() == [[0, 1, 2, 0, 1, 2, 3, 4]]
    # response token t of a row is predicted at column P - 1 + t: row 0 -> packed 1 (12), 2 (13);
    # row 1 -> packed 5 (23), 6 (24)
    assert lay.src.tolist() == [1, 2, 5, 6] and lay.valid.all()


def test_split_by_tokens_by_hand():
    assert split_by_tokens([3, 4, 2, 6, 1], 7) == [(0, 2), (2, 3), (3, 5)]
    assert split_by_tokens([9, 2], 4) == [(0, 1), (1, 2)]  # a row over the budget goes alone
    assert split_by_tokens([], 4) == []
    mbs = split_packed(ragged_batch(), 20)
    assert all(mb[PACKED] for mb in mbs)
    assert sum(mb["input_ids"].shape[0] for mb in mbs) == 7
    assert all(int(mb["attention_mask"].sum()) <= 20 or mb["input_ids"].shape[0] == 1 for mb in mbs)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logprobs_and_hidden_equal_padded(tiny, attn):
    model, _ = tiny
    old = model.config._attn_implementation
    model.config._attn_implementation = attn
    try:
        b = ragged_batch()
        with torch.no_grad():
            lp, lp_packed = response_logprobs(model, b), response_logprobs(model, b | {PACKED: True})
            h, h_packed = response_hidden(model, b), response_hidden(model, b | {PACKED: True})
    finally:
        model.config._attn_implementation = old
    m = b["response_mask"].bool()
    assert (lp_packed[~m] == 0).all() and lp[m].abs().min() > 0
    assert (lp - lp_packed).abs().max() <= ATOL
    assert (h - h_packed)[m].abs().max() <= ATOL
    # a packed forward that let sequences attend to each other would be far off
    joined = b | {"attention_mask": torch.ones_like(b["attention_mask"])}
    with torch.no_grad():
        assert (response_logprobs(model, joined) - lp)[m].abs().max() > 1e-2


def test_packed_values_equal_padded(tiny):
    from rlcustom.models.heads import ValueModel, response_values

    model, _ = tiny
    vm = ValueModel.from_backbone_of(model, init_std=0.5)
    b = ragged_batch(seed=1)
    with torch.no_grad():
        v, v_packed = response_values(vm, b), response_values(vm, b | {PACKED: True})
    assert v.abs().max() > 0.1 and (v - v_packed).abs().max() <= ATOL


@pytest.mark.parametrize("objective,kwargs", [("reinforce", {}), ("ppo_clip", {}),
                                              ("policy_clip", {"agg": "seq"}), ("gspo", {})])
def test_packed_loss_and_grads_equal_padded(tiny, objective, kwargs):
    """Token-mean (reinforce, ppo_clip) and sequence-mean (policy_clip agg=seq, gspo) objectives: the same loss
    and gradients from the packed batch as from the padded one."""
    import rlcustom.objectives  # noqa: F401 - registers the objectives
    from rlcustom.registry import OBJECTIVES

    model, _ = tiny
    fn = OBJECTIVES.get(objective)
    b = ragged_batch(seed=2)
    out = []
    for batch in (b, b | {PACKED: True}):
        model.zero_grad()
        loss, _ = fn(model, batch, **kwargs)
        loss.backward()
        out.append((float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters()}))
    model.zero_grad()
    (l0, g0), (l1, g1) = out
    assert abs(l0) > 1e-3 and abs(l0 - l1) <= ATOL * max(1.0, abs(l0))
    for n in g0:
        assert (g0[n] - g1[n]).abs().max() <= ATOL * max(1.0, float(g0[n].abs().max())), n
