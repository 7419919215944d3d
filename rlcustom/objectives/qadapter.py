"""The ``qadapter`` learner objective: Q-Adapter's Bradley-Terry loss on residual rewards (Eq. 9-10).

The learner's model is the frozen pre-trained LLM ``pi_1`` with a LoRA adapter; the
adapted model's logits are ``Q_theta(s, .)``. A batch holds interleaved preference
pairs (even rows chosen, odd rows the rejected reply to the same prompt, as for
``dpo``), laid out by :meth:`~rlcustom.engines.base.Rollouts.padded`.

Where ``log pi_1`` comes from (``base_forward``)
------------------------------------------------
``residual_rewards`` needs the full ``[B, T, V]`` base log-softmax (a logsumexp over
the vocabulary of ``Q + alpha0 log pi_1`` at every position), which is far too big to
compute once and ship from the reference actor (V=49k floats per token). So the
objective computes it from the same model with the adapter switched off:

* ``"separate"`` (default): one forward with the adapter disabled under
  ``torch.no_grad()`` (no activations kept, no backward), then the usual forward and
  backward of the adapted model. Cost: one adapted forward/backward plus one forward.
* ``"paired"``: ONE forward of ``2B`` rows, base rows first, with each LoRA layer's
  delta added to the adapted rows only (the slicing of
  :mod:`rlcustom.decoding.multi`, here with module calls so ZeRO-3 hooks still
  gather the LoRA weights); the base half is detached. The weights are read once,
  which is what matters when decoding, but autograd cannot drop the base rows from
  the backward (every later op sees one ``2B``-row tensor), so the backward also runs
  over ``2B`` rows: measured on CPU it costs MORE than ``"separate"`` (see the
  trainer's docstring), so it is only an option (it may pay off on a memory-bound GPU).
* a batch key ``base_hidden`` [B, T, H]: ``pi_1``'s final hidden states at the response
  positions, computed once per dataset row by the reference actor and cached by the trainer
  (``algo.base_forward: cached``, the default). ``log pi_1 = log_softmax(lm_head(h))`` is then one
  matrix product (H floats per token cached instead of V), so a step costs about one forward/backward.
* a batch key ``base_logprobs`` [B, T, V] (precomputed, e.g. a test or a tiny vocab)
  skips the base forward entirely.
* ``alpha0 == 0`` ignores ``pi_1`` and skips the base forward too.

The model may be a DeepSpeed engine (the learner passes ``self.engine``) or a peft
model; the adapter is found by walking ``.module``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from rlcustom.algos.qadapter import bt_temperature, qadapter_loss, residual_rewards
from rlcustom.models.forward import response_logits
from rlcustom.registry import register_objective

__all__ = ["qadapter", "peft_module", "adapter_disabled", "paired_response_logits", "pair_rewards"]

BASE_FORWARDS = ("cached", "separate", "paired")


def peft_module(model):
    """The peft model inside ``model`` (a DeepSpeed engine's ``.module``, ...), or raise."""
    m = model
    for _ in range(4):
        if hasattr(type(m), "disable_adapter"):
            return m
        nxt = getattr(m, "_modules", {}).get("module")
        if nxt is None:
            break
        m = nxt
    raise ValueError("objective 'qadapter' needs a LoRA model (set model.lora): the adapter's logits are Q_theta "
                     "and the base model with the adapter disabled is pi_1")


@contextlib.contextmanager
def adapter_disabled(model) -> Iterator[None]:
    """``model`` runs as the frozen base ``pi_1`` inside the block."""
    with peft_module(model).disable_adapter():
        yield


def _sliced_train_forward(layer, adapter: str, rows: slice, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """``lora.Linear.forward`` with the adapter's delta on ``rows`` only (module calls: dropout, ZeRO-3 hooks)."""
    result = layer.base_layer(x, *args, **kwargs)
    if adapter not in layer.lora_A or adapter not in layer.active_adapters:
        return result
    lora_A, lora_B = layer.lora_A[adapter], layer.lora_B[adapter]
    xs = x[rows]
    xs = xs.to(lora_A.weight.dtype) if xs.dtype != lora_A.weight.dtype else xs
    delta = lora_B(lora_A(layer.lora_dropout[adapter](xs))) * layer.scaling[adapter]
    # out of place (result's base rows keep no LoRA dependence)
    return torch.cat([result[: rows.start], result[rows] + delta.to(result.dtype), result[rows.stop:]], dim=0)


def paired_response_logits(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(base logits detached, adapted logits) [B, T, V] from ONE forward of ``2B`` rows.

    Only plain ``lora.Linear`` layers (no DoRA/variants, no embedding LoRA) are supported.
    """
    from peft.tuners.lora import Linear as LoraLinear

    from rlcustom.models.lora import lora_layers

    pm = peft_module(model)
    adapter = pm.active_adapter if isinstance(pm.active_adapter, str) else pm.active_adapters[0]
    layers = lora_layers(pm)
    bad = [type(m).__name__ for m in layers if type(m) is not LoraLinear or "forward" in m.__dict__
           or adapter in getattr(m, "lora_variant", {}) or adapter in m.lora_embedding_A]
    if bad:
        raise ValueError(f"base_forward='paired' supports plain lora.Linear layers only (found {bad[0]}); "
                         "use base_forward='separate'")
    if any(getattr(m, "merged_adapters", []) for m in layers):
        raise ValueError("base_forward='paired': the adapter is merged into the base weights; unmerge it")
    B = int(batch["input_ids"].shape[0])
    rows = slice(B, 2 * B)
    doubled = dict(batch)
    for k in ("input_ids", "attention_mask", "response_mask"):
        doubled[k] = torch.cat([batch[k], batch[k]], dim=0)
    patched = []
    try:
        for m in layers:
            m.__dict__["forward"] = lambda x, *a, _m=m, **kw: _sliced_train_forward(_m, adapter, rows, x, *a, **kw)
            patched.append(m)
        logits = response_logits(model, doubled)
    finally:
        for m in patched:
            m.__dict__.pop("forward", None)
    return logits[:B].detach(), logits[B:]


def pair_rewards(q_logits: torch.Tensor, base_logprobs: torch.Tensor, batch: dict, *, alpha: float = 1.0,
                 alpha0: float = 0.01, gamma: float = 1.0) -> torch.Tensor:
    """``residual_rewards`` [B, T] of the batch's response tokens (interleaved rows are fine: per row)."""
    P = int(batch["prompt_len"])
    mask = batch["response_mask"]
    T = mask.shape[1]
    actions = batch["input_ids"][:, P : P + T]
    return residual_rewards(q_logits, base_logprobs, actions, mask, alpha=alpha, alpha0=alpha0, gamma=gamma)


@register_objective("qadapter", loss=qadapter_loss)
def qadapter(model, batch: dict, *, alpha: float = 1.0, alpha0: float = 0.01, gamma: float = 1.0, beta: float = 0.1,
             length_normalize: bool = False, base_forward: str = "separate", bt_scale: str = "paper",
             **_) -> tuple[torch.Tensor, dict]:
    """Q-Adapter loss (Eq. 10) on interleaved (chosen, rejected) rows.

    ``loss = qadapter_loss(r[0::2], m[0::2], r[1::2], m[1::2], beta, tau)`` with
    ``tau = bt_temperature(bt_scale, L)``, ``L`` the padded length of the batch's rows (``input_ids``
    columns: prompt + reply; 1 for ``bt_scale='paper'``, ``L - 1`` for ``'official'``) and
    ``r = residual_rewards(Q_theta, log pi_1, y, m, alpha, alpha0, gamma)``, ``Q_theta``
    the adapted model's response logits (with grad) and ``log pi_1`` the base's
    log-softmax (adapter disabled, no grad). Defaults are the paper's (Table 3).
    Stats: ``train/qadapter_loss``, ``train/reward_accuracy`` (pairs with R_w > R_l),
    ``train/bt_loss``, ``train/l2_loss``, ``train/margin``, ``train/chosen_reward``,
    ``train/rejected_reward``.
    """
    B = int(batch["input_ids"].shape[0])
    if B % 2:
        raise ValueError("qadapter: a batch shard has an odd number of rows; rows are (chosen, rejected) pairs: "
                         "use an even optim.micro_batch_size")
    if base_forward not in BASE_FORWARDS:
        raise ValueError(f"base_forward must be one of {', '.join(BASE_FORWARDS)}; got {base_forward!r}")
    if "base_logprobs" in batch:
        q = response_logits(model, batch).float()
        base_lp = batch["base_logprobs"].to(q.device, torch.float32)
    elif "base_hidden" in batch:  # cached final hidden states of pi_1: log pi_1 is one head matmul
        q = response_logits(model, batch).float()
        with torch.no_grad(), adapter_disabled(model):
            head = peft_module(model).get_output_embeddings()
            h = batch["base_hidden"].to(q.device, head.weight.dtype)
            base_lp = torch.log_softmax(head(h).float(), dim=-1)
    elif base_forward == "cached" and float(alpha0) != 0.0:
        raise ValueError("base_forward='cached' needs batch['base_hidden'] (pi_1's hidden states, which the "
                         "qadapter trainer gets from the reference actor); or use base_forward='separate'")
    elif float(alpha0) == 0.0:  # pi_1 drops out of Eq. 9
        q = response_logits(model, batch).float()
        base_lp = q.detach()
    elif base_forward == "paired":
        base, q = paired_response_logits(model, batch)
        q = q.float()
        base_lp = torch.log_softmax(base.float(), dim=-1)
    else:
        with torch.no_grad(), adapter_disabled(model):
            base_lp = torch.log_softmax(response_logits(model, batch).float(), dim=-1)
        q = response_logits(model, batch).float()
    r = pair_rewards(q, base_lp, batch, alpha=alpha, alpha0=alpha0, gamma=gamma)
    mask = batch["response_mask"]
    tau = bt_temperature(bt_scale, int(batch["input_ids"].shape[1]))
    loss, st = qadapter_loss(r[0::2], mask[0::2], r[1::2], mask[1::2], beta=beta, length_normalize=length_normalize,
                             bt_temperature=tau)
    stats = {f"train/{'reward_accuracy' if k == 'accuracy' else k}": float(v) for k, v in st.items()}
    stats["train/qadapter_loss"] = float(loss.detach())
    return loss, stats


qadapter.weighting = "rows"  # a per-pair loss: micro-batches weigh by rows (pairs stay whole: even micro-batches)
