"""A value head on the policy's own backbone (PPO's shared critic, ``algo.critic: shared``).

The head is ``nn.Linear(hidden, 1)`` (float32, zero-initialised as :class:`~rlcustom.models.heads.ValueModel`'s:
a fresh critic predicts 0) attached to the transformers model as ``v_head``; it reads the same final
hidden states as the LM head, so one forward gives the policy's logits and the values
(:func:`response_logits_and_values`) and one backward trains both. ``v_head`` is not part of the
transformers state dict callers see (:mod:`rlcustom.training.weights` leaves it out of synced and
exported weights; checkpoints keep it).

Columns as :func:`~rlcustom.models.heads.response_values`: ``values[:, t] = V(x, y_<t)``, the head at
column ``P - 1 + t``, where the logits that predict ``y_t`` are read.
"""
from __future__ import annotations

import torch
from torch import nn

from rlcustom.models.packing import is_packed, layout

VALUE_HEAD = "v_head"


def hf_model(model) -> nn.Module:
    """The transformers model inside a DeepSpeed engine and/or a peft wrapper."""
    m = model
    for _ in range(4):
        if hasattr(type(m), "get_base_model"):  # peft
            m = m.get_base_model()
        elif "module" in getattr(m, "_modules", {}):  # DeepSpeed engine
            m = m._modules["module"]
        else:
            break
    return m


def add_value_head(model: nn.Module) -> nn.Linear:
    """Attach a zero-initialised, trainable float32 ``v_head`` to the transformers model inside ``model``."""
    base = hf_model(model)
    head = nn.Linear(int(base.config.hidden_size), 1, dtype=torch.float32)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    head.to(next(base.parameters()).device)
    setattr(base, VALUE_HEAD, head)
    return head


def value_head(model) -> nn.Linear:
    head = getattr(hf_model(model), VALUE_HEAD, None)
    if head is None:
        raise ValueError("this learner has no value head (algo.critic: shared adds one)")
    return head


def response_logits_and_values(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B, T, V] predicting the response tokens, values [B, T] before each token, 0 on padding) from
    ONE forward: the LM head and ``v_head`` over the same final hidden states (packed batches too)."""
    mask = batch["response_mask"]
    T = mask.shape[1]
    if is_packed(batch):
        lay = layout(batch)
        out = model(input_ids=lay.input_ids, position_ids=lay.position_ids, attention_mask=None, use_cache=False,
                    logits_to_keep=lay.src, output_hidden_states=True)
        h = out.hidden_states[-1][0, lay.src]
        logits = out.logits[0].new_zeros((*lay.valid.shape, out.logits.shape[-1]))
        logits[lay.valid] = out.logits[0]
        hidden = h.new_zeros((*lay.valid.shape, h.shape[-1]))
        hidden[lay.valid] = h
    else:
        from rlcustom.models.forward import position_ids

        P, L = int(batch["prompt_len"]), batch["input_ids"].shape[1]
        if P < 1:
            raise ValueError("a value head needs prompt_len >= 1 (the state before the first token)")
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=position_ids(batch["attention_mask"]), use_cache=False, logits_to_keep=L - P + 1,
                    output_hidden_states=True)
        logits, hidden = out.logits[:, :T], out.hidden_states[-1][:, P - 1 : P - 1 + T]
    head = value_head(model)
    values = head(hidden.to(head.weight.dtype)).squeeze(-1) * mask.to(torch.float32)
    return logits, values
