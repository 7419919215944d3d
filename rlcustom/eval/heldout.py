"""Held-out accuracy of a policy on a verifiable task, and the demo's report (before/after, plot).

:func:`heldout_accuracy` decodes the validation split of ``cfg.data`` greedily with the ``hf`` engine
in this process and scores each answer with the config's reward (``exact_match`` & co., reading each
record's ``answer``): accuracy = share of answers scoring >= ``threshold``, with its standard error
``sqrt(p (1 - p) / n)`` (answers to distinct prompts are independent draws).
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
    """``{"accuracy", "se", "n", "seconds", "samples": [(prompt, completion, score)]}`` on held-out prompts."""
    from rlcustom.data.prompting import build_prompts
    from rlcustom.engines.base import SamplingParams
    from rlcustom.engines.hf import HFEngine
    from rlcustom.models.loading import load_tokenizer
    from rlcustom.rewards import apply_reward

    t0 = time.perf_counter()
    tok = load_tokenizer(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    ps = build_prompts(dataclasses.replace(cfg.data, split="validation", limit=limit), tok, seed=cfg.seed)
    engine = HFEngine.from_pretrained(model_path, dtype=cfg.model.dtype, batch_size=batch_size,
                                      trust_remote_code=cfg.model.trust_remote_code)
    params = SamplingParams(max_new_tokens=max_new_tokens or cfg.sampling.max_new_tokens, temperature=0.0, seed=0)
    ro = engine.generate(ps.ids, params)
    completions = ro.texts if len(ro.texts) == len(ro) else tok.batch_decode(ro.response_ids, skip_special_tokens=True)
    scores = apply_reward(cfg.reward.spec, ps.raw, completions, ro.response_ids, dict(cfg.reward.kwargs),
                          fields=ps.fields)
    n = len(scores)
    p = sum(s >= threshold for s in scores) / max(n, 1)
    return {"accuracy": p, "se": math.sqrt(p * (1 - p) / n) if n else 0.0, "n": n,
            "seconds": time.perf_counter() - t0,
            "samples": list(zip(ps.raw, completions, scores))}


def accuracy_line(name: str, r: dict) -> str:
    return f"{name}: held-out accuracy {r['accuracy']:.3f} ± {r['se']:.3f} (n={r['n']}, greedy)"


def plot_run(rows: list[dict], out_png: str | Path, keys: tuple[str, ...] = ("reward/mean", "rollout/raw_reward_mean"),
             marks: dict[str, tuple[int, float, float]] | None = None, title: str = "") -> str:
    """A PNG (drawn with Pillow, which the lock has) of ``keys`` per step from metrics.jsonl rows, on a
    0..1 axis, plus held-out accuracy marks ``{label: (step, acc, se)}`` with +-2 SE bars."""
    from PIL import Image, ImageDraw

    W, H, L, R, T, B = 760, 440, 60, 20, 40, 70
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    series = {k: [(r["step"], float(r[k])) for r in rows if isinstance(r.get(k), (int, float))] for k in keys}
    series = {k: v for k, v in series.items() if v}
    xmax = max([x for v in series.values() for x, _ in v] + [s for s, _, _ in (marks or {}).values()] + [1])
    X = lambda x: L + (W - L - R) * x / xmax  # noqa: E731
    Y = lambda y: T + (H - T - B) * (1 - max(-0.05, min(1.05, y)) / 1.0)  # noqa: E731
    for g in (0.0, 0.25, 0.5, 0.75, 1.0):
        d.line([(L, Y(g)), (W - R, Y(g))], fill=(225, 225, 225))
        d.text((L - 35, Y(g) - 6), f"{g:.2f}", fill="black")
    for k in range(0, int(xmax) + 1, max(1, int(xmax) // 10)):
        d.text((X(k) - 4, H - B + 6), str(k), fill="black")
    d.rectangle([L, T, W - R, H - B], outline="black")
    d.text((W // 2 - 15, H - B + 22), "step", fill="black")
    d.text((L, 12), title[:110], fill="black")
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    legend = []
    for i, (k, pts) in enumerate(series.items()):
        c = colors[i % len(colors)]
        d.line([(X(x), Y(y)) for x, y in pts], fill=c, width=2)
        for x, y in pts:
            d.ellipse([X(x) - 2, Y(y) - 2, X(x) + 2, Y(y) + 2], fill=c)
        legend.append((k, c))
    for j, (label, (step, acc, se)) in enumerate((marks or {}).items()):
        c = colors[(len(series) + j) % len(colors)]
        d.line([(X(step), Y(acc - 2 * se)), (X(step), Y(acc + 2 * se))], fill=c, width=2)
        d.rectangle([X(step) - 5, Y(acc) - 5, X(step) + 5, Y(acc) + 5], fill=c)
        legend.append((f"{label}: {acc:.2f} (bar: +-2 SE)", c))
    for i, (name, c) in enumerate(legend):
        x0, y0 = L + 10 + (i % 2) * 340, H - B + 38 + (i // 2) * 14
        d.rectangle([x0, y0 + 3, x0 + 10, y0 + 9], fill=c)
        d.text((x0 + 15, y0), name, fill="black")
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    img.save(out_png, format="PNG")
    return str(out_png)
