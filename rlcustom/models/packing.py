"""Packed forwards: a micro-batch's rows as one sequence without pad tokens.

A padded micro-batch (:meth:`Rollouts.padded`: prompt left-padded to ``P``, response
right-padded to ``T``) costs ``B * (P + T)`` token positions whatever the rows' real
lengths. Packed, the attended tokens of all rows (``attention_mask == 1``, in row
order) form one row of ``N = sum_i n_i`` tokens; position ids restart at 0 for every
sequence (``cumsum(attention_mask) - 1`` at the kept columns, the padded forward's
positions), and attention does not cross sequences: transformers reads sequence
boundaries from the position ids when no attention mask is given (a block-diagonal
causal mask for ``sdpa``/``eager``, the varlen kernel for ``flash_attention_2``).
Every kept token then sees exactly the keys it sees in the padded forward, so the
outputs agree up to floating-point summation order.

Outputs come back in the padded ``[B, T, ...]`` layout (zeros where the predicting
column is padding), so objectives see the same tensors either way. Only the
positions that predict response tokens go through the LM head (``logits_to_keep``
as an index tensor).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

PACKED = "packed"  # the micro-batch key that marks a batch for packed forwards


@dataclass(frozen=True)
class PackLayout:
    """Where a padded batch's attended tokens sit in the packed row."""

    input_ids: torch.Tensor     # [1, N] attended tokens of all rows, row after row
    position_ids: torch.Tensor  # [1, N] 0..n_i-1 per row
    src: torch.Tensor           # [K] packed positions that predict response tokens (ascending)
    valid: torch.Tensor         # [B, T] bool: response column t of row b has a predicting position


def is_packed(batch: dict) -> bool:
    return bool(batch.get(PACKED, False))


def row_tokens(batch: dict) -> torch.Tensor:
    """[B] attended tokens per row: a row's cost in a packed micro-batch."""
    return batch["attention_mask"].sum(-1)


def layout(batch: dict) -> PackLayout:
    """The packed row of ``batch``; response token ``t`` (column ``P + t``) is predicted by column
    ``P + t - 1``, kept when that column is attended."""
    P = int(batch["prompt_len"])
    T = batch["response_mask"].shape[1]
    attn = batch["attention_mask"].bool()
    B, L = attn.shape
    flat = attn.reshape(-1).nonzero().squeeze(1)
    index = torch.full((B * L,), -1, dtype=torch.long, device=attn.device)
    index[flat] = torch.arange(flat.numel(), device=attn.device)
    pred = index.view(B, L)[:, P - 1 : P - 1 + T] if P >= 1 else index.new_full((B, T), -1)
    valid = pred >= 0
    pos = (attn.long().cumsum(1) - 1).reshape(-1)[flat]
    return PackLayout(batch["input_ids"].reshape(-1)[flat][None], pos[None], pred[valid], valid)


def _unpack(values: torch.Tensor, lay: PackLayout) -> torch.Tensor:
    """``values`` [K, ...] at the predicting positions -> [B, T, ...] (zeros elsewhere)."""
    out = values.new_zeros((*lay.valid.shape, *values.shape[1:]))
    out[lay.valid] = values
    return out


def packed_response_logits(model, batch: dict) -> torch.Tensor:
    """Logits [B, T, V] predicting the response tokens, from one packed forward."""
    lay = layout(batch)
    out = model(input_ids=lay.input_ids, position_ids=lay.position_ids, attention_mask=None, use_cache=False,
                logits_to_keep=lay.src)
    return _unpack(out.logits[0], lay)


def packed_response_hidden(model, batch: dict) -> torch.Tensor:
    """Final hidden states [B, T, H] at the columns that predict the response tokens (packed forward)."""
    lay = layout(batch)
    body = getattr(model, model.base_model_prefix)
    out = body(input_ids=lay.input_ids, position_ids=lay.position_ids, attention_mask=None, use_cache=False)
    return _unpack(out.last_hidden_state[0, lay.src], lay)


def packed_response_values(model, batch: dict) -> torch.Tensor:
    """A :class:`~rlcustom.models.heads.ValueModel`'s values [B, T] before each response token (packed)."""
    lay = layout(batch)
    hidden, _ = model.hidden_states(lay.input_ids, None, lay.position_ids)
    return _unpack(model.token_scores(hidden[0, lay.src]), lay)


def split_by_tokens(lengths: list[int], max_tokens: int) -> list[tuple[int, int]]:
    """Consecutive row ranges ``[start, stop)`` whose token counts sum to at most ``max_tokens`` (a longer row
    alone forms its own range): the micro-batches of a packed step, in row order."""
    out, start, used = [], 0, 0
    for i, n in enumerate(lengths):
        if i > start and used + n > max_tokens:
            out.append((start, i))
            start, used = i, 0
        used += n
    if lengths:
        out.append((start, len(lengths)))
    return out
