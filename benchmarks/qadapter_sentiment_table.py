"""Collect benchmarks/qadapter_sentiment_135m.sh into one JSON, a table and an accuracy-vs-forgetting plot.

    python -m benchmarks.qadapter_sentiment_table --runs runs/qadapter-sentiment-135m \\
        --methods "base qa-a0.01 qa-a0.1 sft replay dpo" --out benchmarks/results/qadapter_sentiment_135m.json

Per method ``m``: ``<runs>/<m>/eval.json`` (``rlcustom eval qadapter``: held-out preference accuracy by the
method's implicit reward, binomial SE; forgetting, SE over the neutral prompts) and ``<runs>/<m>/samples.jsonl``
(``rlcustom generate``: one sampled reply per held-out prompt, scored here with ``vader_sentiment``; SE over
prompts). The paper's claim (comparable preference accuracy with less forgetting than SFT) is set out for
each Q-Adapter row as differences from SFT with the SE of a difference of two independent estimates,
``sqrt(se_a^2 + se_b^2)`` (conservative for the accuracies, which are on the same pairs). A missing file
is listed as missing, not invented.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["label", "mean_se", "collect", "claim", "table", "plot", "main"]


def label(m: str) -> str:
    """``qa-a0.1`` -> ``Q-Adapter a0=0.1``, ``qa-official-a0.01`` -> ``Q-Adapter a0=0.01 (official)``."""
    q = re.fullmatch(r"qa-(official-)?a(.+)", m)
    if q:
        return f"Q-Adapter a0={q.group(2)}" + (" (official)" if q.group(1) else "")
    return {"base": "pi_1 (before)", "sft": "SFT", "replay": "Replay", "dpo": "DPO"}.get(m, m)


def mean_se(x: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and its standard error (sample SD / sqrt(n)); (None, None) for no values."""
    n = len(x)
    if n == 0:
        return None, None
    m = sum(x) / n
    return m, (math.sqrt(sum((v - m) ** 2 for v in x) / (n - 1) / n) if n > 1 else None)


def collect(runs: Path, methods: Sequence[str], score: Callable[[str, str], float]) -> dict:
    """Rows (one per method, in ``methods`` order) and the list of methods with missing files."""
    rows, missing = [], []
    for m in methods:
        row: dict = {"method": m, "label": label(m)}
        ev, sm = runs / m / "eval.json", runs / m / "samples.jsonl"
        if ev.is_file():
            x = json.loads(ev.read_text())["metrics"]
            row |= {k: x.get(k) for k in ("pairs", "accuracy", "accuracy_se", "accuracy_logp_sum",
                                          "accuracy_logp_sum_se", "forgetting", "forgetting_se",
                                          "forgetting_replayed", "forgetting_replayed_se")}
        else:
            missing.append(str(ev))
        if sm.is_file():
            recs = [json.loads(line) for line in sm.read_text().splitlines() if line.strip()]
            row["vader"], row["vader_se"] = mean_se([float(score(r["prompt"], r["completion"])) for r in recs])
            row["samples"] = len(recs)
        else:
            missing.append(str(sm))
        rows.append(row)
    return {"rows": rows, "missing": missing}


def _diff(a: dict, b: dict, key: str) -> tuple[float | None, float | None]:
    if a.get(key) is None or b.get(key) is None:
        return None, None
    se = math.sqrt((a.get(f"{key}_se") or 0.0) ** 2 + (b.get(f"{key}_se") or 0.0) ** 2)
    return a[key] - b[key], se


def claim(rows: Sequence[dict]) -> list[dict]:
    """Each Q-Adapter row against SFT: accuracy and forgetting differences with their SEs, and the two
    halves of the claim: ``comparable_accuracy`` = the accuracy is not below SFT's by more than 2 SE of
    the difference; ``less_forgetting`` = its forgetting is below SFT's by more than 2 SE."""
    sft = next((r for r in rows if r["method"] == "sft"), None)
    out = []
    for r in rows:
        if not r["method"].startswith("qa-") or sft is None:
            continue
        da, da_se = _diff(r, sft, "accuracy")
        df, df_se = _diff(r, sft, "forgetting")
        out.append({"method": r["method"], "d_accuracy": da, "d_accuracy_se": da_se, "d_forgetting": df,
                    "d_forgetting_se": df_se,
                    "comparable_accuracy": None if da is None else bool(da >= -2 * da_se),
                    "less_forgetting": None if df is None else bool(df < -2 * df_se)})
    return out


def _pm(x, se, d: int = 3) -> str:
    if x is None:
        return "—"
    return f"{x:.{d}f}" + (f" ± {se:.{d}f}" if se is not None else "")


def table(rows: Sequence[dict], claims: Sequence[dict]) -> str:
    lines = ["| method | held-out accuracy, implicit reward (n) | forgetting (nats/token) | forgetting, Replay's prompts "
             "| VADER of sampled replies (n) |", "|---|---|---|---|---|"]
    for r in rows:
        acc = (f"— (reward 0; by log pi_1: {_pm(r.get('accuracy_logp_sum'), r.get('accuracy_logp_sum_se'))})"
               if r.get("accuracy") is None and "pairs" in r else
               f"{_pm(r.get('accuracy'), r.get('accuracy_se'))} ({r.get('pairs', '—')})")
        lines.append(f"| {r['label']} | {acc} | {_pm(r.get('forgetting'), r.get('forgetting_se'), 4)} "
                     f"| {_pm(r.get('forgetting_replayed'), r.get('forgetting_replayed_se'), 4)} "
                     f"| {_pm(r.get('vader'), r.get('vader_se'))} ({r.get('samples', '—')}) |")
    if claims:
        lines += ["", "| vs SFT | accuracy difference | comparable accuracy | forgetting difference | less forgetting |",
                  "|---|---|---|---|---|"]
        yes = {True: "yes", False: "no", None: "—"}
        for c in claims:
            lines.append(f"| {label(c['method'])} | {_pm(c['d_accuracy'], c['d_accuracy_se'])} "
                         f"| {yes[c['comparable_accuracy']]} | {_pm(c['d_forgetting'], c['d_forgetting_se'], 4)} "
                         f"| {yes[c['less_forgetting']]} |")
    return "\n".join(lines)


def plot(rows: Sequence[dict], path: Path) -> Path | None:
    """Held-out accuracy (y) against forgetting (x), one point per method with its SE bars; pi_1 has no
    implicit reward and is drawn at its log pi_1 accuracy. Nothing written when no row has both."""
    pts = [(r["label"] + (" (by log pi_1)" if r.get("accuracy") is None else ""), r["forgetting"], r.get("forgetting_se") or 0.0,
            r["accuracy"] if r.get("accuracy") is not None else r.get("accuracy_logp_sum"),
            (r.get("accuracy_se") if r.get("accuracy") is not None else r.get("accuracy_logp_sum_se")) or 0.0)
           for r in rows if r.get("forgetting") is not None
           and (r.get("accuracy") is not None or r.get("accuracy_logp_sum") is not None)]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, (name, x, xe, y, ye) in enumerate(pts):
        ax.errorbar([x], [y], xerr=[xe], yerr=[ye], fmt="o" if name.startswith("Q-Adapter") else "s",
                    capsize=3, color=f"C{i % 10}", label=name)
    ax.axhline(0.5, color="gray", ls="--", lw=0.8)
    ax.set_xlabel("forgetting: NLL increase on pi_1's neutral answers (nats/token)")
    ax.set_ylabel("held-out preference accuracy (implicit reward)")
    ax.set_title("Q-Adapter vs SFT / Replay / DPO, VADER-ranked own samples (135M)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    from rlcustom.rewards import resolve_reward

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/qadapter-sentiment-135m", help="the script's OUT directory")
    p.add_argument("--methods", default="base qa-a0.01 qa-a0.1 qa-a1 qa-official-a0.01 sft replay dpo",
                   help="space-separated method directories under --runs")
    p.add_argument("--out", default="benchmarks/results/qadapter_sentiment_135m.json", help="JSON; the PNG beside it")
    p.add_argument("--command", default="bash benchmarks/qadapter_sentiment_135m.sh", help="recorded as is")
    p.add_argument("--settings", default="", help="the script's size variables, recorded as is")
    a = p.parse_args(argv)
    runs = Path(a.runs)
    res = collect(runs, a.methods.split(), resolve_reward("vader_sentiment"))
    if all(set(r) <= {"method", "label"} for r in res["rows"]):
        print(f"no eval.json / samples.jsonl under {runs} yet: run bash benchmarks/qadapter_sentiment_135m.sh "
              "(nothing written)")
        return 0
    stats = runs / "pairs.jsonl.stats.json"
    claims = claim(res["rows"])
    md = table(res["rows"], claims)
    out = Path(a.out)
    png = plot(res["rows"], out.with_suffix(".png"))
    rec = {"command": a.command, "settings": a.settings, "date": time.strftime("%Y-%m-%d"),
           "pairs_data": json.loads(stats.read_text()) if stats.is_file() else None, "results": res["rows"],
           "claim_vs_sft": claims, "missing": res["missing"], "table": md, "plot": str(png) if png else None}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=2))
    print(md)
    print(f"wrote {out}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
