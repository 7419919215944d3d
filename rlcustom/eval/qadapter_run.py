"""``rlcustom eval qadapter CONFIG [--adapter DIR | --policy DIR]``: one row of the Q-Adapter comparison.

Scores one customised model against the frozen pre-trained model ``pi_1`` (``model.path``) on

* **held-out preference accuracy**: validation pairs of ``data.prompts`` (the split the
  trainers never see), chosen vs rejected by the method's own implicit reward:

  - a Q-Adapter (``--adapter``, a peft directory): ``R = sum_t r_t``, the residual rewards of
    Eq. 9 (:func:`rlcustom.algos.qadapter.residual_rewards`) with ``alpha``/``alpha0``/``gamma``;
  - a language model (``--policy``: SFT, Replay, DPO): the DPO implicit reward
    ``sum_t log pi(y_t) - log pi_1(y_t)`` (beta only scales it; the sign decides);
  - ``pi_1`` itself (neither flag): that reward is 0, so its row is scored by ``log pi_1``.

  For every model also the accuracy of the policy's own log-likelihood, summed
  (``accuracy_logp_sum``) and per token (``accuracy_logp_mean``); for a Q-Adapter the policy is
  ``pi~ = softmax(qadapter_logits(Q, log pi_1))`` (Eq. 4). A tie counts one half.
  Standard errors are binomial, ``sqrt(p (1 - p) / n)``.
* **forgetting**: mean token NLL of ``pi_1``'s own greedy answers to the neutral prompts
  (:data:`rlcustom.eval.qadapter.NEUTRAL_PROMPTS`, generated once and cached) under the
  model's policy minus the same under ``pi_1`` (0 = nothing forgotten). The first
  ``replayed`` prompts are the ones a Replay run trains on (``algo.replay_examples``), so
  ``forgetting`` is over the other prompts and ``forgetting_replayed`` over those; the
  standard error is over prompts (per-prompt mean NLL differences).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Sequence

import torch

from rlcustom.errors import ConfigError

__all__ = ["score_rows", "pair_metrics", "forgetting_metrics", "run"]


@torch.no_grad()
def score_rows(kind: str, model, base, tok, prompts: Sequence[str], completions: Sequence[str], *,
               alpha: float = 1.0, alpha0: float = 0.01, gamma: float = 1.0, max_prompt_tokens: int = 256,
               max_completion_tokens: int = 256, micro_batch: int = 8) -> dict[str, torch.Tensor]:
    """Per row [N]: ``logp`` (sum of the policy's token log-probs), ``logp_base`` (the same under
    ``pi_1``), ``tokens`` and, for ``kind="qadapter"``, ``residual`` (sum of Eq. 9's ``r_t``).

    ``kind``: ``"base"`` (``model`` is ``pi_1``; ``base`` unused), ``"lm"`` (``model`` a causal LM,
    ``base`` = ``pi_1``) or ``"qadapter"`` (``model`` a peft model: adapter off = ``pi_1``).
    Prompts are formatted already; texts are cut as the trainers cut them (:func:`encode_pairs`).
    """
    from rlcustom.algos.qadapter import qadapter_logits
    from rlcustom.objectives.qadapter import adapter_disabled, pair_rewards
    from rlcustom.eval.qadapter import _batches
    from rlcustom.models.forward import response_logits

    if kind not in ("base", "lm", "qadapter"):
        raise ValueError(f"score_rows: kind must be base, lm or qadapter; got {kind!r}")
    out: dict[str, list] = {"logp": [], "logp_base": [], "tokens": [], "residual": []}
    for m in (model, base):
        if m is not None:
            m.eval()
    for b in _batches(tok, prompts, completions, max_prompt_tokens, max_completion_tokens, micro_batch):
        P, mask = int(b["prompt_len"]), b["response_mask"].float()
        y = b["input_ids"][:, P : P + mask.shape[1]].unsqueeze(-1)

        def seq(logits):  # summed log-probs of the response tokens
            return (torch.log_softmax(logits.float(), -1).gather(-1, y).squeeze(-1) * mask).sum(1)

        if kind == "qadapter":
            with adapter_disabled(model):
                base_logits = response_logits(model, b).float()
            q = response_logits(model, b).float()
            base_lp = torch.log_softmax(base_logits, -1)
            out["residual"].append(pair_rewards(q, base_lp, b, alpha=alpha, alpha0=alpha0, gamma=gamma).sum(1))
            out["logp"].append(seq(qadapter_logits(q, base_logits, alpha=alpha, alpha0=alpha0)))
            out["logp_base"].append((base_lp.gather(-1, y).squeeze(-1) * mask).sum(1))
        else:
            lp = seq(response_logits(model, b))
            out["logp"].append(lp)
            out["logp_base"].append(lp if kind == "base" else seq(response_logits(base, b)))
        out["tokens"].append(mask.sum(1))
    return {k: torch.cat(v) for k, v in out.items() if v}


def _accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> tuple[float, float, int]:
    """(accuracy with ties as 1/2, binomial standard error, ties)."""
    n = len(chosen)
    wins = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
    p = float(wins.mean())
    return p, math.sqrt(p * (1 - p) / n), int((chosen == rejected).sum())


def pair_metrics(kind: str, chosen: dict[str, torch.Tensor], rejected: dict[str, torch.Tensor]) -> dict:
    """Accuracy of the method's implicit reward (``accuracy``; None for ``pi_1``, whose implicit reward
    is 0) and of the policy's summed / per-token log-likelihood, each with its standard error."""
    out: dict = {"pairs": len(chosen["logp"])}
    if kind != "base":
        implicit = "residual" if kind == "qadapter" else "dpo"
        rc, rr = ((chosen["residual"], rejected["residual"]) if kind == "qadapter" else
                  (chosen["logp"] - chosen["logp_base"], rejected["logp"] - rejected["logp_base"]))
        acc, se, ties = _accuracy(rc, rr)
        out |= {"implicit_reward": implicit, "accuracy": acc, "accuracy_se": se, "ties": ties,
                "margin": float((rc - rr).mean())}
    else:
        out |= {"implicit_reward": None, "accuracy": None, "accuracy_se": None}
    for name, c, r in (("logp_sum", chosen["logp"], rejected["logp"]),
                       ("logp_mean", chosen["logp"] / chosen["tokens"], rejected["logp"] / rejected["tokens"])):
        acc, se, _ = _accuracy(c, r)
        out |= {f"accuracy_{name}": acc, f"accuracy_{name}_se": se}
    return out


def forgetting_metrics(scores: dict[str, torch.Tensor], replayed: int) -> dict:
    """Token-weighted NLL difference (policy - ``pi_1``) of the original-task texts, over rows
    ``replayed:`` (``forgetting``) and ``:replayed`` (``forgetting_replayed``), with standard
    errors over rows (per-row mean-NLL differences)."""
    out: dict = {}
    n = len(scores["tokens"])
    for name, idx in (("forgetting", range(replayed, n)), ("forgetting_replayed", range(0, min(replayed, n)))):
        idx = list(idx)
        if not idx:
            out[name] = out[f"{name}_se"] = None
            continue
        lp, lb, t = scores["logp"][idx], scores["logp_base"][idx], scores["tokens"][idx]
        out[name] = float((lb.sum() - lp.sum()) / t.sum())  # NLL_model - NLL_base
        d = (lb - lp) / t
        out[f"{name}_se"] = float(d.std() / math.sqrt(len(idx))) if len(idx) > 1 else None
        out[f"{name}_prompts"] = len(idx)
        if name == "forgetting":
            out["nll_base"] = float(-lb.sum() / t.sum())
            out["nll_model"] = float(-lp.sum() / t.sum())
    return out


def _algo(cfg, key: str, default):
    return getattr(cfg.algo, key, default) if cfg.algo is not None else default


def run(cfg, *, adapter: str | None = None, policy: str | None = None, pairs: int = 200, replayed: int = 8,
        new_tokens: int = 48, original: str | Path | None = None, out: str | Path | None = None,
        micro_batch: int = 8) -> dict:
    """Score one model (see the module docstring); writes and returns the JSON record."""
    from rlcustom.data.chat import format_prompt
    from rlcustom.data.loaders import load_preference_pairs
    from rlcustom.eval.qadapter import NEUTRAL_PROMPTS, load_qadapter, original_task_examples
    from rlcustom.models.loading import load_causal_lm, load_tokenizer

    if adapter and policy:
        raise ConfigError("eval qadapter: give --adapter DIR (a Q-Adapter) or --policy DIR (SFT/Replay/DPO), not both")
    for flag, p in (("--adapter", adapter), ("--policy", policy)):
        if p and not Path(p).is_dir():
            raise ConfigError(f"eval qadapter: {flag} {p}: no such directory")
    if not 0 <= replayed <= len(NEUTRAL_PROMPTS):
        raise ConfigError(f"eval qadapter: --replayed must be in [0, {len(NEUTRAL_PROMPTS)}]; got {replayed}")
    t0 = time.perf_counter()
    d, base_path = cfg.data, cfg.model.path
    alpha, alpha0, gamma = _algo(cfg, "alpha", 1.0), _algo(cfg, "alpha0", 0.01), _algo(cfg, "gamma", 1.0)
    lens = dict(max_prompt_tokens=d.max_prompt_tokens,
                max_completion_tokens=_algo(cfg, "max_completion_tokens", 256), micro_batch=micro_batch)
    tok = load_tokenizer(base_path, trust_remote_code=cfg.model.trust_remote_code)
    kind = "qadapter" if adapter else "lm" if policy else "base"
    base = None
    if kind == "qadapter":
        model = load_qadapter(base_path, adapter, dtype=cfg.model.dtype)
    else:
        model = load_causal_lm(base_path, dtype=cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code)
        if kind == "lm":
            base, model = model, load_causal_lm(policy, dtype=cfg.model.dtype,
                                                trust_remote_code=cfg.model.trust_remote_code)
    kw = dict(alpha=alpha, alpha0=alpha0, gamma=gamma, **lens)

    rows = list(load_preference_pairs(d.prompts, split="validation", val_fraction=d.val_fraction, seed=d.split_seed,
                                      on_bad_record=d.on_bad_record, limit=pairs))
    texts = [format_prompt(tok, r.get("messages") or r["prompt"], use_chat_template=d.chat_template) for r in rows]
    ch = score_rows(kind, model, base, tok, texts, [r["chosen"] for r in rows], **kw)
    rj = score_rows(kind, model, base, tok, texts, [r["rejected"] for r in rows], **kw)

    cache = Path(original) if original else Path(cfg.output_dir) / f"original_task_{new_tokens}.jsonl"
    orig = original_task_examples(model if kind == "base" else (base if kind == "lm" else base_path), tok,
                                  NEUTRAL_PROMPTS, max_new_tokens=new_tokens, chat_template=d.chat_template,
                                  cache=cache, dtype=cfg.model.dtype)
    sc = score_rows(kind, model, base, tok, [o["prompt"] for o in orig], [o["completion"] for o in orig], **kw)

    res = {"method": kind, "base": base_path, "adapter": adapter, "policy": policy,
           "settings": {"pairs": len(rows), "split": "validation", "data": str(d.prompts), "seed": cfg.seed,
                        "val_fraction": d.val_fraction, "alpha": alpha, "alpha0": alpha0, "gamma": gamma,
                        "replayed": replayed, "original_task": str(cache), "original_new_tokens": new_tokens,
                        **lens},
           "metrics": pair_metrics(kind, ch, rj) | forgetting_metrics(sc, replayed),
           "seconds": time.perf_counter() - t0}
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(res, indent=2))
    return res
