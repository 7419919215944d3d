"""``rlcustom eval``: reward, KL to a reference, preference accuracy on pairs, perplexity; JSON out.

All metrics run in one process on the validation split of the config's data:

- ``reward``: mean reward (the config's ``reward:``) of the policy's samples on validation prompts;
- ``kl``: mean over samples of sum_t log pi(y_t) - log pi_ref(y_t) (the k1 sequence KL) on those samples;
- ``pairs``: accuracy on validation preference pairs, scored by a reward model directory
  (``head_config.json``) or, for a language model, by the implicit DPO reward log pi - log pi_ref;
- ``ppl``: perplexity of the chosen replies of validation pairs under the policy.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import torch

METRICS = ("reward", "kl", "pairs", "ppl")


def _seq_logprobs(model, ro, pad_id: int, micro: int = 8) -> torch.Tensor:
    from rlcustom.models.forward import response_logprobs

    out = []
    with torch.no_grad():
        for s in range(0, len(ro), micro):
            b = ro.select(range(s, min(s + micro, len(ro)))).padded(pad_id)
            out.append((response_logprobs(model, b) * b["response_mask"]).sum(1))
    return torch.cat(out) if out else torch.zeros(0)


def _se(xs: list[float]) -> float:
    """Standard error of the mean (sample std / sqrt(n)); 0 for fewer than 2 values. Samples of one
    prompt are not independent, so with sampling.n > 1 this understates the spread over prompts."""
    n = len(xs)
    if n < 2:
        return 0.0
    m = sum(xs) / n
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1) / n)


def evaluate(cfg, *, policy: str, reference: str | None, metrics: tuple[str, ...] = METRICS,
             limit: int = 32, pairs_limit: int = 64) -> dict:
    from rlcustom.data.chat import format_prompt
    from rlcustom.data.loaders import load_preference_pairs
    from rlcustom.data.prompting import build_prompts
    from rlcustom.engines.hf import HFEngine
    from rlcustom.models.loading import load_causal_lm, load_tokenizer
    from rlcustom.trainers.offline import encode_pairs

    t0 = time.perf_counter()
    out: dict = {"policy": policy, "reference": reference, "metrics": {}}
    policy_is_rm = (Path(policy) / "head_config.json").is_file()
    tok = load_tokenizer(reference if policy_is_rm and reference else policy)
    d = cfg.data
    if policy_is_rm:
        from rlcustom.models.heads import RewardModel

        rm = RewardModel.load(policy).eval()
        model = None
    else:
        model = load_causal_lm(policy, dtype=cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code)
    ref = load_causal_lm(reference, dtype=cfg.model.dtype) if reference and not policy_is_rm else None

    if model is not None and ({"reward", "kl"} & set(metrics)):
        ps = build_prompts(dataclasses.replace(d, split="validation", limit=limit), tok)
        ro = HFEngine(model, tok).generate(ps.ids, cfg.sampling.params(seed=cfg.seed))
        out["per_sample"] = {}
        if "reward" in metrics:
            from rlcustom.actors.reward import RewardActor

            r = cfg.reward
            actor = RewardActor(r.spec, model_path=r.model_path, url=r.url, kwargs=dict(r.kwargs),
                                tokenizer_path=policy, timeout_s=r.timeout_s, max_retries=r.max_retries,
                                api_key_env=r.api_key_env)
            scores = actor.score(ro)
            out["metrics"]["reward"] = sum(scores) / len(scores)
            out["metrics"]["reward_se"] = _se(scores)
            out["per_sample"]["reward"] = list(map(float, scores))
        if "kl" in metrics and ref is not None:
            kl = _seq_logprobs(model, ro, tok.pad_token_id) - _seq_logprobs(ref, ro, tok.pad_token_id)
            out["metrics"]["kl"] = float(kl.mean())
            out["metrics"]["kl_se"] = _se(kl.tolist())
            out["per_sample"]["kl"] = kl.tolist()
        out["metrics"]["samples"] = len(ro)
        out["samples"] = [{"prompt": ps.raw[i], "completion": ro.texts[j]}
                          for j, i in enumerate(ro.prompt_index[:8])]

    if {"pairs", "ppl"} & set(metrics):
        rows = list(load_preference_pairs(d.prompts, split="validation", val_fraction=d.val_fraction,
                                          seed=d.split_seed, limit=pairs_limit))
        texts = [format_prompt(tok, r.get("messages") or r["prompt"], use_chat_template=d.chat_template) for r in rows]
        if "pairs" in metrics:
            if policy_is_rm:
                c = rm.score_texts(texts, [r["chosen"] for r in rows], tokenizer=tok)
                j = rm.score_texts(texts, [r["rejected"] for r in rows], tokenizer=tok)
            else:
                ch = encode_pairs(tok, texts, [r["chosen"] for r in rows], d.max_prompt_tokens, 256)
                rj = encode_pairs(tok, texts, [r["rejected"] for r in rows], d.max_prompt_tokens, 256)
                c, j = _seq_logprobs(model, ch, tok.pad_token_id), _seq_logprobs(model, rj, tok.pad_token_id)
                if ref is not None:
                    c, j = c - _seq_logprobs(ref, ch, tok.pad_token_id), j - _seq_logprobs(ref, rj, tok.pad_token_id)
            out["metrics"]["pair_accuracy"] = float((torch.as_tensor(c) > torch.as_tensor(j)).float().mean())
            out["metrics"]["pairs"] = len(rows)
        if "ppl" in metrics and model is not None:
            ch = encode_pairs(tok, texts, [r["chosen"] for r in rows], d.max_prompt_tokens, 256)
            lp = _seq_logprobs(model, ch, tok.pad_token_id)
            n = sum(len(x) for x in ch.response_ids)
            out["metrics"]["ppl"] = math.exp(-float(lp.sum()) / max(n, 1))
    out["seconds"] = time.perf_counter() - t0
    return out


def write(result: dict, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(result, indent=2))
    return p
