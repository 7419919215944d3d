"""Forward passes shared by learner, reference and value actors.

Batches follow :meth:`Rollouts.padded`: ``input_ids``/``attention_mask``
[B, P+T] (prompt left-padded to P, response right-padded to T),
``response_mask`` [B, T]; response token ``t`` sits at column ``P + t`` and is
predicted by the logits at column ``P + t - 1``. A batch marked packed
(:mod:`rlcustom.models.packing`) runs as one row without pad tokens; the results
keep the padded layout. A batch that carries ``response_logits`` (from a forward already
run, e.g. the shared critic's :func:`rlcustom.models.value_head.response_logits_and_values`)
gives those instead of a second forward.
"""
from __future__ import annotations

import torch

from rlcustom.models.packing import is_packed, packed_response_hidden, packed_response_logits

LOGITS = "response_logits"  # a batch key: logits [B, T, V] of a forward already run


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[labels] without materialising the full log-softmax."""
    logits = logits.float()
    return logits.gather(-1, labels[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def response_logits(model, batch: dict) -> torch.Tensor:
    """Logits [B, T, V] that predict the T response tokens.

    Only the last T+1 positions go through the LM head (``logits_to_keep``): the
    vocabulary projection of prompt positions is a third of the compute and most
    of the memory of a forward pass, and nothing reads it.
    """
    if LOGITS in batch:
        return batch[LOGITS]
    if is_packed(batch):
        return packed_response_logits(model, batch)
    P = int(batch["prompt_len"])
    T = batch["response_mask"].shape[1]
    L = batch["input_ids"].shape[1]
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=position_ids(batch["attention_mask"]), use_cache=False, logits_to_keep=L - P + 1)
    return out.logits[:, :T]  # kept columns start at P - 1


def response_hidden(model, batch: dict) -> torch.Tensor:
    """Final hidden states [B, T, H] (after the last norm) at the columns that predict the T response
    tokens, so that ``model.get_output_embeddings()(response_hidden(...)) == response_logits(...)``
    for models whose logits are a plain linear head (Llama, Qwen, Mistral, SmolLM; not Gemma-2's
    soft-capped or Cohere's scaled logits: :func:`check_linear_head` tells)."""
    if is_packed(batch):
        return packed_response_hidden(model, batch)
    P = int(batch["prompt_len"])
    T = batch["response_mask"].shape[1]
    body = getattr(model, model.base_model_prefix)
    out = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
               position_ids=position_ids(batch["attention_mask"]), use_cache=False)
    return out.last_hidden_state[:, P - 1 : P - 1 + T]


@torch.no_grad()
def check_linear_head(model, batch: dict, atol: float = 1e-3) -> None:
    """Raise if the logits are not ``lm_head(last hidden state)`` (logit soft-capping, scaling)."""
    want = response_logits(model, batch).float()
    got = model.get_output_embeddings()(response_hidden(model, batch)).float()
    err = float((want - got).abs().max()) if want.numel() else 0.0
    if err > atol * max(1.0, float(want.abs().max())):
        raise ValueError(f"{type(model).__name__}: the logits are not a linear head over the last hidden state "
                         f"(max difference {err:.3g}); cache log-probs another way (qadapter: base_forward=separate)")


def response_logprobs(model, batch: dict, return_logits: bool = False):
    """Per-token log pi(y_t | x, y_<t) [B, T] of the response tokens (0 on padding)."""
    P = int(batch["prompt_len"])
    T = batch["response_mask"].shape[1]
    logits = response_logits(model, batch)
    lp = token_logprobs(logits, batch["input_ids"][:, P : P + T]) * batch["response_mask"]
    return (lp, logits) if return_logits else lp
