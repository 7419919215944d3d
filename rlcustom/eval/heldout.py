"""Held-out accuracy of a policy on a verifiable task, and the demo's report (before/after, plot).

:func:`heldout_accuracy` decodes the validation split of ``cfg.data`` greedily with the ``hf`` engine
in this process and scores each answer with the config's reward (``exact_match`` & co., reading each
record's ``answer``): accuracy = share of answers scoring >= ``threshold``, with its standard error
``sqrt(p (1 - p) / n)`` (answers to distinct prompts are independent draws). With ``rollout.env`` set,
each held-out prompt is one greedy episode with the environment (:func:`rlcustom.envs.rollout.env_episodes`,
the rollout role's loop and budgets) and its score is the episode's return; the environment's counters
(``tool_calls``, ...) are averaged per episode into ``env``.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

__all__ = ["heldout_accuracy", "plot_run", "accuracy_line"]


def heldout_accuracy(cfg, model_path: str, *, limit: int | None = None, max_new_tokens: int | None = None,
                     threshold: float = 1.0, batch_size: int = 64) -> dict[str, Any]:
    """``{"accuracy", "se", "n", "seconds", "samples": [(prompt, completion, score)]}`` on held-out prompts
    (and ``"env"``: mean counters per episode, ``"failed"``: failed episodes, with ``rollout.env``)."""
    from rlcustom.data.prompting import build_prompts
    from rlcustom.engines.base import SamplingParams
    from rlcustom.engines.hf import HFEngine
    from rlcustom.models.loading import load_tokenizer
    from rlcustom.rewards import apply_reward

    t0 = time.perf_counter()
    tok = load_tokenizer(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    ps = build_prompts(dataclasses.replace(cfg.data, split="validation", limit=limit), tok)
    engine = HFEngine.from_pretrained(model_path, dtype=cfg.model.dtype, batch_size=batch_size,
                                      trust_remote_code=cfg.model.trust_remote_code)
    params = SamplingParams(max_new_tokens=max_new_tokens or cfg.sampling.max_new_tokens, temperature=0.0, seed=0)
    extra: dict[str, Any] = {}
    if cfg.rollout.env:  # one greedy episode per prompt, scored by its return
        from rlcustom.envs.rollout import env_episodes

        ro = env_episodes(engine.generate, engine.tokenizer, engine.eos_ids, ps.ids, ps.fields, params, cfg.rollout,
                          who="held-out eval")
        scores, extra = [float(e["return"]) for e in ro.episodes], _episode_summary(ro.episodes)
    else:
        ro = engine.generate(ps.ids, params)
    completions = ro.texts if len(ro.texts) == len(ro) else tok.batch_decode(ro.response_ids, skip_special_tokens=True)
    if not cfg.rollout.env:
        scores = apply_reward(cfg.reward.spec, ps.raw, completions, ro.response_ids, dict(cfg.reward.kwargs),
                              fields=ps.fields)
    n = len(scores)
    p = sum(s >= threshold for s in scores) / max(n, 1)
    return {"accuracy": p, "se": math.sqrt(p * (1 - p) / n) if n else 0.0, "n": n,
            "seconds": time.perf_counter() - t0,
            "samples": list(zip(ps.raw, completions, scores))} | extra


def _episode_summary(episodes: list[dict]) -> dict[str, Any]:
    """The environment's counters (tool calls, ...) and turns averaged per episode; failed episodes counted."""
    n = max(len(episodes), 1)
    keys = sorted({k for e in episodes for k in e["counts"]})
    env = {k: sum(e["counts"].get(k, 0.0) for e in episodes) / n for k in keys}
    return {"env": env | {"turns": sum(e["turns"] for e in episodes) / n},
            "failed": sum(bool(e["failure"]) for e in episodes)}


def accuracy_line(name: str, r: dict) -> str:
    return f"{name}: held-out accuracy {r['accuracy']:.3f} ± {r['se']:.3f} (n={r['n']}, greedy)"


def plot_run(rows: list[dict], out_png: str | Path, keys: tuple[str, ...] = ("reward/mean", "rollout/raw_reward_mean"),
             marks: dict[str, tuple[int, float, float]] | None = None, title: str = "") -> str:
    """A PNG (matplotlib) of ``keys`` per step from metrics.jsonl rows on a 0..1 axis, plus held-out
    accuracy marks ``{label: (step, acc, se)}`` drawn with +-2 SE error bars."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for k in keys:
        pts = [(r["step"], float(r[k])) for r in rows if isinstance(r.get(k), (int, float))]
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", markersize=3, label=k)
    for label, (step, acc, se) in (marks or {}).items():
        ax.errorbar([step], [acc], yerr=[2 * se], fmt="s", capsize=4, label=f"{label}: {acc:.2f} (bar: ±2 SE)")
    ax.set_ylim(-0.05, 1.05)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title[:110], fontsize=9)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png", dpi=110)
    plt.close(fig)
    return str(out_png)
