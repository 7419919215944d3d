"""Scores with their reasons and parts, summed up as metrics the trainer logs.

A reward may return a :class:`~rlcustom.rewards.verifiable.Scored` value: a float with ``reason``
(why it failed: ``timeout``, ``memory``, ``no_answer``, ...) and ``parts`` (a composite's components).
:func:`score_details` runs the reward and keeps both; :func:`detail_metrics` turns the details of a
batch into ``reward/<part>`` (mean of each component) and ``reward/fail/<reason>`` (fraction of
samples), the names the trainer logs (W&B and metrics.jsonl).
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Mapping, Sequence

__all__ = ["score_details", "detail_metrics"]

logger = logging.getLogger("rlcustom.rewards")


def score_details(fn: Any, prompts: Sequence[str], completions: Sequence[str], response_ids: Sequence[Sequence[int]],
                  kwargs: Mapping[str, Any] | None, *, name: str,
                  fields: Sequence[Mapping[str, Any]] | None = None) -> dict[str, list]:
    """``{"scores": [float], "reasons": [str | None], "parts": [dict | None]}``; failures are logged, one line."""
    from rlcustom.rewards.core import apply_reward

    info: list = []
    scores = apply_reward(fn, prompts, completions, response_ids, kwargs, name=name, fields=fields, info=info)
    reasons = [r for r, _ in info]
    counts = Counter(r for r in reasons if r)
    if counts:
        logger.warning("reward %r: %s of %d samples scored low: %s", name, sum(counts.values()), len(scores),
                       ", ".join(f"{k} x{v}" for k, v in counts.most_common()))
    return {"scores": scores, "reasons": reasons, "parts": [p for _, p in info]}


def detail_metrics(details: Sequence[Mapping[str, list]]) -> dict[str, float]:
    """Per-batch metrics from the details of several replicas: ``reward/<part>``, ``reward/fail/<reason>``."""
    reasons = [r for d in details for r in d.get("reasons", [])]
    parts = [p for d in details for p in d.get("parts", []) if p]
    n = max(1, sum(len(d.get("scores", [])) for d in details))
    out = {f"reward/fail/{k}": v / n for k, v in Counter(r for r in reasons if r).items()}
    for key in sorted({k for p in parts for k in p}):
        vals = [p[key] for p in parts if key in p]
        out[f"reward/{key}"] = sum(vals) / len(vals)
    return out
