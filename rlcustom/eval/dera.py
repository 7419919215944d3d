"""``rlcustom eval dera``: sweep the DeRa realignment strength lambda without retraining.

Liu et al., "Decoding-time Realignment of Language Models" (ICML 2024): decoding with
``softmax(lam * h_aligned + (1 - lam) * h_sft)`` (Eq. 9, Algorithm 1) approximates the
model aligned with KL strength ``beta / lam``. A user picks ``lam`` by looking at reward
against KL to the SFT model over a grid (the paper's Figures 2-4); this module makes
that grid:

    rlcustom eval dera CONFIG --aligned runs/ppo/model --lams 0,0.5,1,1.5 [--interp]
    rlcustom eval dera CONFIG --adapter runs/dpo/checkpoints/latest --lams 0,0.5,1,2

For each ``lam`` the validation prompts of ``CONFIG``'s data are decoded with DeRa (two
models, each with its own KV cache, or one peft model whose LoRA adapter is the aligned
model: one batched forward per step), scored with ``CONFIG``'s ``reward:`` and compared
with the SFT model (``model.path``). With ``--interp`` the weight-combining variant of
Appendix D.5, ``theta = lam * theta_aligned + (1 - lam) * theta_sft``, is decoded at the
same ``lam`` values beside it.

KL to the SFT model, per sample (mean over samples reported):

- ``kl``: ``sum_t log pi_lam(y_t | y_<t) - log pi_sft(y_t | y_<t)`` over the response
  tokens, with ``pi_lam`` the distribution the decoder sampled from (its raw
  temperature-1 log-probs, as the ``hf`` engine's ``Rollouts.logprobs``): the k1
  sequence-KL estimate of the paper's x-axis;
- ``kl_tokenwise``: ``sum_t KL(pi_lam(. | y_<t) || pi_sft(. | y_<t))`` over the same
  positions, exact per position (summed over the vocabulary); the same expectation with
  far less variance.

Both come from the logits each step already computes (the SFT logits are one of DeRa's
parts; the weight-interpolated model is decoded side by side with the SFT model), so no
extra forward pass over the samples is needed. Every ``lam`` and variant uses the same
sampling seed (common random numbers), so differences between rows are not seed noise.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from rlcustom.errors import RLCustomError
from rlcustom.eval.dera_kl import KLRecorder, decode_with_kl
from rlcustom.eval.dera_models import load_aligned

__all__ = ["parse_lams", "load_aligned", "KLRecorder", "sweep", "run", "rescore", "samples_path", "write_plot"]


def parse_lams(text: str | Sequence[Any]) -> list[float]:
    """``"0,0.5,1,1.5"`` -> ``[0.0, 0.5, 1.0, 1.5]``; one-line error naming the bad item."""
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    items = [s for s in items if not (isinstance(s, str) and s == "")]
    if not items:
        raise RLCustomError("--lams: empty (expected a comma list of numbers such as 0,0.5,1,1.5)")
    out = []
    for s in items:
        try:
            v = float(s)
        except (TypeError, ValueError):
            raise RLCustomError(f"--lams: {s!r} is not a number (expected a comma list such as 0,0.5,1,1.5)") from None
        if not math.isfinite(v):
            raise RLCustomError(f"--lams: {s!r} is not a finite number")
        out.append(v)
    return out


# ----------------------------------------------------------------------------- the sweep


def _stats(x: Sequence[float]) -> tuple[float, float]:
    t = torch.as_tensor(list(x), dtype=torch.float64)
    sem = float(t.std(unbiased=True) / math.sqrt(len(t))) if len(t) > 1 else 0.0
    return float(t.mean()), sem


def sweep(sft_model, tokenizer, prompt_ids: Sequence[Sequence[int]], params, lams: Sequence[float], *,
          kind: str, aligned_model, score: Callable[[Any], list[float]], interp: bool = False,
          batch_size: int = 32, log: Callable[[str], None] = lambda s: None) -> dict:
    """Decode ``prompt_ids`` at every ``lam`` (and, with ``interp``, with the weight-interpolated
    model); returns ``{"results": [row per (variant, lam)], "per_sample": {...}}``.

    ``kind``: ``"two_model"`` (``aligned_model`` a causal LM sharing the tokenizer) or ``"lora"``
    (``aligned_model`` a peft model over a copy of ``sft_model``). ``score(rollouts)`` returns
    one reward per sample.
    """
    from rlcustom.decoding.dera import DeRaStep, lora_interpolated, weight_interpolated_model
    from rlcustom.decoding.multi import CombinedStep, TwoModelStep
    from rlcustom.engines.hf import HFEngine

    engine = HFEngine(sft_model, tokenizer, batch_size=batch_size)
    variants = ["dera"] + (["interp"] if interp else [])
    results, per_sample = [], {}
    for variant in variants:
        for lam in lams:
            t0 = time.perf_counter()
            if variant == "dera":
                if kind == "lora":
                    make = lambda lam=lam: DeRaStep.from_lora(aligned_model, lam)  # noqa: E731
                else:
                    make = lambda lam=lam: DeRaStep(sft_model, [aligned_model], lam)  # noqa: E731
                sft_index, model_lam = 0, None
            else:
                model_lam = (lora_interpolated(aligned_model, lam) if kind == "lora"
                             else weight_interpolated_model(sft_model, aligned_model, lam)).eval()
                make = lambda m=model_lam: CombinedStep(TwoModelStep([m, sft_model]),  # noqa: E731
                                                        lambda parts: parts[0])
                sft_index = 1
            ro, k1, tw = decode_with_kl(engine, prompt_ids, params, make, sft_index)
            del model_lam
            rewards = [float(r) for r in score(ro)]
            r_mean, r_sem = _stats(rewards)
            kl_mean, kl_sem = _stats(k1.tolist())
            tw_mean, tw_sem = _stats(tw.tolist())
            row = {"variant": variant, "lam": float(lam), "reward": r_mean, "reward_sem": r_sem,
                   "kl": kl_mean, "kl_sem": kl_sem, "kl_tokenwise": tw_mean, "kl_tokenwise_sem": tw_sem,
                   "length": sum(len(r) for r in ro.response_ids) / max(len(ro), 1),
                   "stopped": sum(f == "stop" for f in ro.finish_reasons) / max(len(ro), 1),
                   "samples": len(ro), "seconds": time.perf_counter() - t0}
            results.append(row)
            per_sample[(variant, float(lam))] = {"texts": list(ro.texts), "rewards": rewards, "kl": k1.tolist(),
                                                 "kl_tokenwise": tw.tolist(), "prompt_index": list(ro.prompt_index),
                                                 "prompt_ids": list(ro.prompt_ids),
                                                 "response_ids": list(ro.response_ids),
                                                 "finish_reasons": list(ro.finish_reasons)}
            log(f"{variant:6s} lam={lam:<6g} reward {r_mean:+.4f} (+-{r_sem:.4f})  kl {kl_mean:.3f} "
                f"(tokenwise {tw_mean:.3f})  len {row['length']:.1f}  {row['seconds']:.1f}s")
    return {"results": results, "per_sample": per_sample}


def sample_table(per_sample: dict, prompts: Sequence[str], k: int) -> list[dict]:
    """The first sample of the first ``k`` prompts at every (variant, lam): text, reward, KL."""
    rows = []
    for i in range(min(k, len(prompts))):
        row: dict = {"prompt": prompts[i], "completions": []}
        for (variant, lam), d in per_sample.items():
            j = d["prompt_index"].index(i)
            row["completions"].append({"variant": variant, "lam": lam, "text": d["texts"][j],
                                       "reward": d["rewards"][j], "kl": d["kl"][j]})
        rows.append(row)
    return rows


def run(cfg, *, lams: Sequence[float], aligned: str | None = None, adapter: str | None = None,
        interp: bool = False, limit: int = 32, samples: int = 4, out: str | Path | None = None,
        plot: bool = True, log: Callable[[str], None] = print) -> dict:
    """The ``rlcustom eval dera`` command: load, sweep, write JSON (and a plot); returns the result."""
    from rlcustom.actors.reward import RewardActor
    from rlcustom.data.prompting import build_prompts
    from rlcustom.models.loading import load_causal_lm, load_tokenizer

    t0 = time.perf_counter()
    lams = parse_lams(lams) if isinstance(lams, str) else [float(x) for x in lams]
    if not aligned and not adapter:  # fail before loading anything
        load_aligned(None, aligned=None, adapter=None)
    m = cfg.model
    tok = load_tokenizer(m.path, trust_remote_code=m.trust_remote_code)
    ps = build_prompts(dataclasses.replace(cfg.data, split="validation", limit=limit), tok)
    r = cfg.reward
    actor = RewardActor(r.spec, model_path=r.model_path, url=r.url, kwargs=dict(r.kwargs), tokenizer_path=m.path,
                        timeout_s=r.timeout_s, max_retries=r.max_retries, api_key_env=r.api_key_env)
    sft = load_causal_lm(m.path, dtype=m.dtype, trust_remote_code=m.trust_remote_code).eval()
    kind, al = load_aligned(sft, aligned=aligned, adapter=adapter, lora_cfg=m.lora, dtype=m.dtype)
    params = cfg.sampling.params(seed=cfg.seed)
    log(f"eval dera: {len(ps.ids)} prompts x {params.n} samples, {params.max_new_tokens} new tokens, "
        f"{kind} DeRa{' + weight interpolation' if interp else ''}, lams {lams}")
    sw = sweep(sft, tok, ps.ids, params, lams, kind=kind, aligned_model=al, score=actor.score, interp=interp,
               log=log)
    res = {"sft": m.path, "aligned": aligned, "adapter": adapter, "path": kind, "lams": lams,
           "reward": {"spec": r.spec, "model_path": r.model_path, "kwargs": dict(r.kwargs)},
           "prompts": len(ps.ids), "sampling": dataclasses.asdict(params), "seed": cfg.seed,
           "kl_definition": {"kl": "mean over samples of sum_t log pi_lam(y_t) - log pi_sft(y_t) (k1)",
                             "kl_tokenwise": "mean over samples of sum_t KL(pi_lam(.|y_<t) || pi_sft(.|y_<t))"},
           "results": sw["results"], "samples": sample_table(sw["per_sample"], ps.raw, samples),
           "seconds": time.perf_counter() - t0}
    if out is not None:
        _write(res, sw["per_sample"], Path(out), plot, log)
    return res


def samples_path(out: str | Path) -> Path:
    """Where every decoded sample of a sweep is kept: ``dera.json`` -> ``dera.samples.jsonl``."""
    p = Path(out)
    return p.with_name(p.stem + ".samples.jsonl")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


_ONE = {"texts": "text", "rewards": "reward", "finish_reasons": "finish_reason"}  # per-sample line keys
_MANY = {v: k for k, v in _ONE.items()}


def _write(res: dict, per_sample: dict, p: Path, plot: bool, log: Callable[[str], None]) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"variant": v, "lam": lam, **{_ONE.get(k, k): d[k][j] for k in d}})
             for (v, lam), d in per_sample.items() for j in range(len(d["texts"]))]
    _atomic_write(samples_path(p), "".join(line + "\n" for line in lines))
    res["samples_file"] = str(samples_path(p))
    res["plot"] = str(write_plot(res["results"], p.with_suffix(""), log=log)) if plot else None
    _atomic_write(p, json.dumps(res, indent=2))


def rescore(cfg, out: str | Path, *, samples: int = 4, plot: bool = True, log: Callable[[str], None] = print) -> dict:
    """Score the samples of an earlier sweep (``out`` and its ``.samples.jsonl``) with ``cfg``'s
    ``reward:`` without decoding again (e.g. once a reward model is trained); KL is unchanged.
    Rewrites ``out`` (the previous reward is kept under ``"previous_reward"``)."""
    from rlcustom.actors.reward import RewardActor
    from rlcustom.engines.base import Rollouts

    p, sp = Path(out), samples_path(out)
    if not p.is_file() or not sp.is_file():
        raise RLCustomError(f"--rescore: {p} or {sp} not found (run the sweep with --out {p} first)")
    res = json.loads(p.read_text())
    groups: dict = {}
    for n, line in enumerate(sp.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise RLCustomError(f"{sp}:{n}: not JSON ({e.msg})") from None
        groups.setdefault((row["variant"], float(row["lam"])), []).append(row)
    r = cfg.reward
    actor = RewardActor(r.spec, model_path=r.model_path, url=r.url, kwargs=dict(r.kwargs),
                        tokenizer_path=res["sft"], timeout_s=r.timeout_s, max_retries=r.max_retries,
                        api_key_env=r.api_key_env)
    per_sample = {}
    for row in res["results"]:
        key = (row["variant"], float(row["lam"]))
        rows = groups.get(key)
        if not rows:
            raise RLCustomError(f"{sp}: no samples for {key[0]} lam={key[1]:g}")
        ro = Rollouts([x["prompt_ids"] for x in rows], [x["response_ids"] for x in rows], [[] for _ in rows],
                      [x["finish_reason"] for x in rows], [x["prompt_index"] for x in rows],
                      [x["text"] for x in rows])
        rewards = [float(v) for v in actor.score(ro)]
        row["reward"], row["reward_sem"] = _stats(rewards)
        per_sample[key] = {_MANY.get(k, k): [x[k] for x in rows] for k in rows[0] if k not in ("variant", "lam")}
        per_sample[key]["rewards"] = rewards
        log(f"{key[0]:6s} lam={key[1]:<6g} reward {row['reward']:+.4f} (+-{row['reward_sem']:.4f})  "
            f"kl {row['kl']:.3f}")
    res["previous_reward"] = res.get("reward")
    res["reward"] = {"spec": r.spec, "model_path": r.model_path, "kwargs": dict(r.kwargs)}
    prompts = [s["prompt"] for s in res.get("samples", [])]
    res["samples"] = sample_table(per_sample, prompts, min(samples, len(prompts)))
    _write(res, per_sample, p, plot, log)
    return res


# ----------------------------------------------------------------------------- plot


def write_plot(results: Sequence[dict], stem: str | Path, log: Callable[[str], None] = print) -> Path:
    """Reward and KL against lam, one line per variant: ``STEM.png`` (see :mod:`rlcustom.eval.plot`)."""
    from rlcustom.eval.plot import Panel, write_panels

    variants = list(dict.fromkeys(r["variant"] for r in results))
    series = {v: sorted((r["lam"], r["reward"], r["kl"]) for r in results if r["variant"] == v) for v in variants}
    lams = tuple(sorted({r["lam"] for r in results}))
    panels = [Panel(name, "lambda", {v: [(p[0], p[col]) for p in pts] for v, pts in series.items()}, xticks=lams,
                    legend=col == 1) for col, name in ((1, "reward"), (2, "KL to SFT"))]
    return write_panels(panels, stem)
