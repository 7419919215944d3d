"""Evaluation for Q-Adapter and its baselines (SFT, Replay, DPO) on the same data.

* :func:`preference_accuracy_qadapter` -- accuracy on preference pairs of the implicit
  reward of a Q-Adapter, ``R(x, y) = sum_t r(s_t, a_t)`` with ``r`` the residual rewards
  of Eq. 9 (:func:`rlcustom.algos.qadapter.residual_rewards`): what the Bradley-Terry
  loss (Eq. 10) trains to rank.
* :func:`forgetting` -- how much a customised model lost of the pre-trained model's
  "original task": the mean token NLL of ``pi_1``'s own greedy answers to neutral
  prompts under the model, minus the same under ``pi_1`` (>= 0 in practice; 0 = no
  forgetting). A Q-Adapter is scored under its policy ``pi~`` (Eq. 4) when given as a
  peft model with ``qadapter=dict(alpha=..., alpha0=...)``.
* :func:`original_task_examples` -- those greedy answers, generated once with the ``hf``
  engine and cached as JSONL (also the Replay baseline's replay data).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from rlcustom.data.original_task import NEUTRAL_PROMPTS, original_task_examples

__all__ = ["NEUTRAL_PROMPTS", "original_task_examples", "load_qadapter", "implicit_rewards",
           "preference_accuracy_qadapter", "token_nll", "forgetting"]

def _tok_and_model(path_or_model, *, dtype: str = "float32", trust_remote_code: bool = False):
    from rlcustom.models.loading import load_causal_lm

    if isinstance(path_or_model, (str, Path)):
        return load_causal_lm(path_or_model, dtype=dtype, trust_remote_code=trust_remote_code)
    return path_or_model


def load_qadapter(base_path, adapter_dir_or_model, *, dtype: str = "float32"):
    """A peft model: ``adapter_dir_or_model`` as is, or ``PeftModel.from_pretrained(base, dir)``."""
    if not isinstance(adapter_dir_or_model, (str, Path)):
        return adapter_dir_or_model
    from peft import PeftModel

    return PeftModel.from_pretrained(_tok_and_model(base_path, dtype=dtype), str(adapter_dir_or_model)).eval()


def _batches(tokenizer, prompts: Sequence[str], completions: Sequence[str], max_prompt: int, max_completion: int,
             micro: int):
    from rlcustom.trainers.offline import encode_pairs

    ro = encode_pairs(tokenizer, list(prompts), list(completions), max_prompt, max_completion)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for s in range(0, len(ro), micro):
        yield ro.select(range(s, min(s + micro, len(ro)))).padded(pad)


@torch.no_grad()
def implicit_rewards(peft_model, tokenizer, prompts: Sequence[str], completions: Sequence[str], *,
                     alpha: float = 1.0, alpha0: float = 0.01, gamma: float = 1.0, max_prompt_tokens: int = 256,
                     max_completion_tokens: int = 256, micro_batch: int = 8) -> torch.Tensor:
    """``R = sum_t r_t`` [N] of each completion (prompts already formatted), in eval mode."""
    from rlcustom.objectives.qadapter import adapter_disabled, pair_rewards
    from rlcustom.models.forward import response_logits

    was = peft_model.training
    peft_model.eval()
    out = []
    try:
        for b in _batches(tokenizer, prompts, completions, max_prompt_tokens, max_completion_tokens, micro_batch):
            with adapter_disabled(peft_model):
                base_lp = torch.log_softmax(response_logits(peft_model, b).float(), -1)
            q = response_logits(peft_model, b).float()
            r = pair_rewards(q, base_lp, b, alpha=alpha, alpha0=alpha0, gamma=gamma)
            out.append(r.sum(1))
    finally:
        peft_model.train(was)
    return torch.cat(out) if out else torch.zeros(0)


def _pair_prompts(tokenizer, pairs: Sequence[dict], chat_template: bool) -> list[str]:
    from rlcustom.data.chat import format_prompt

    return [p["prompt_text"] if "prompt_text" in p else
            format_prompt(tokenizer, p.get("messages") or p["prompt"], use_chat_template=chat_template) for p in pairs]


def preference_accuracy_qadapter(base_path, adapter_dir_or_model, pairs: Sequence[dict], *, tokenizer=None,
                                 alpha: float = 1.0, alpha0: float = 0.01, gamma: float = 1.0,
                                 chat_template: bool = True, max_prompt_tokens: int = 256,
                                 max_completion_tokens: int = 256, micro_batch: int = 8) -> dict[str, float]:
    """Fraction of ``pairs`` whose chosen reply gets the higher implicit reward ``sum_t r_t``.

    ``pairs``: rows of :func:`rlcustom.data.loaders.load_preference_pairs` (``prompt``/``messages``,
    ``chosen``, ``rejected``; a ``prompt_text`` key is used as the formatted prompt as is).
    ``adapter_dir_or_model``: a saved adapter (e.g. ``OUTPUT_DIR/adapter``) over ``base_path``,
    or a loaded peft model. Returns ``{"accuracy", "margin" (mean R_w - R_l), "pairs"}``.
    """
    from rlcustom.models.loading import load_tokenizer

    pairs = list(pairs)
    tok = tokenizer or load_tokenizer(base_path)
    model = load_qadapter(base_path, adapter_dir_or_model)
    prompts = _pair_prompts(tok, pairs, chat_template)
    kw = dict(alpha=alpha, alpha0=alpha0, gamma=gamma, max_prompt_tokens=max_prompt_tokens,
              max_completion_tokens=max_completion_tokens, micro_batch=micro_batch)
    rw = implicit_rewards(model, tok, prompts, [p["chosen"] for p in pairs], **kw)
    rl = implicit_rewards(model, tok, prompts, [p["rejected"] for p in pairs], **kw)
    return {"accuracy": float((rw > rl).float().mean()) if len(pairs) else float("nan"),
            "margin": float((rw - rl).mean()) if len(pairs) else float("nan"), "pairs": float(len(pairs))}


@torch.no_grad()
def token_nll(model, tokenizer, texts: Sequence[Any], *, qadapter: dict | None = None, max_prompt_tokens: int = 256,
              max_completion_tokens: int = 256, micro_batch: int = 8) -> float:
    """Mean NLL per completion token of ``texts`` (``{"prompt", "completion"}`` dicts or pairs) under ``model``.

    With ``qadapter={"alpha": .., "alpha0": ..}`` the model is a peft Q-Adapter and the
    tokens are scored under its policy ``softmax(qadapter_logits(Q, base))`` (Eq. 4).
    """
    from rlcustom.algos.qadapter import qadapter_logits
    from rlcustom.objectives.qadapter import adapter_disabled
    from rlcustom.models.forward import response_logits

    rows = [(t["prompt"], t["completion"]) if isinstance(t, dict) else tuple(t) for t in texts]
    was = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for b in _batches(tokenizer, [r[0] for r in rows], [r[1] for r in rows], max_prompt_tokens,
                          max_completion_tokens, micro_batch):
            logits = response_logits(model, b).float()
            if qadapter is not None:
                with adapter_disabled(model):
                    base = response_logits(model, b).float()
                logits = qadapter_logits(logits, base, alpha=qadapter.get("alpha", 1.0),
                                         alpha0=qadapter.get("alpha0", 0.01))
            P, mask = int(b["prompt_len"]), b["response_mask"]
            y = b["input_ids"][:, P : P + mask.shape[1]]
            nll = -torch.log_softmax(logits, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
            total += float((nll * mask).sum())
            count += int(mask.sum())
    finally:
        model.train(was)
    return total / max(count, 1)


def forgetting(base, model, texts: Sequence[Any], *, tokenizer=None, qadapter: dict | None = None,
               **kw) -> dict[str, float]:
    """``nll_model - nll_base``: mean token NLL of original-task ``texts`` (``pi_1``'s own greedy
    answers, :func:`original_task_examples`) under ``model`` relative to ``pi_1`` (``base``).

    ``base``/``model``: directories/aliases or loaded models (``model`` a peft Q-Adapter with
    ``qadapter=dict(alpha, alpha0)`` to score its policy ``pi~``). Returns
    ``{"forgetting", "nll_model", "nll_base"}``.
    """
    from rlcustom.models.loading import load_tokenizer

    if tokenizer is None:
        if not isinstance(base, (str, Path)):
            raise ValueError("forgetting: pass tokenizer= when base is a loaded model")
        tokenizer = load_tokenizer(base)
    nb = token_nll(_tok_and_model(base), tokenizer, texts, **kw)
    nm = token_nll(_tok_and_model(model), tokenizer, texts, qadapter=qadapter, **kw)
    return {"forgetting": nm - nb, "nll_model": nm, "nll_base": nb}
