"""The tables, the equal-compute comparison and the plot of ``benchmarks/vas_135m`` from its stage files.

Every row decodes the same validation prompts with the same seed; each prompt is one value (the mean of
its samples), SEs are over prompts, differences are paired by prompt (``benchmarks/vas_135m_stats.py``).
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from benchmarks.vas_135m_stats import best_of_n, mean_se, paired

RESULTS = Path(__file__).resolve().parent / "results"


def per_prompt(rec: dict, key: str) -> dict[int, list]:
    out: dict[int, list] = defaultdict(list)
    for s in rec["samples"]:
        out[s["prompt"]].append(s[key])
    return dict(out)


def _mean(d: dict[int, list]) -> dict[int, float]:
    return {p: sum(v) / len(v) for p, v in d.items()}


def _row(method: str, sent: dict[int, float], length: dict[int, float], cost: dict[int, float], **extra) -> dict:
    (rs, rs_se), (rl, rl_se), (c, _) = mean_se(list(sent.values())), mean_se(list(length.values())), \
        mean_se(list(cost.values()))
    return {"method": method, "sentiment": rs, "sentiment_se": rs_se, "len_reward": rl, "len_reward_se": rl_se,
            "compute_pi0_fwd": c, **extra}


def bon_rows(bon: dict, sizes: list[int]) -> tuple[list[dict], dict[int, dict[int, float]]]:
    """Best-of-N on the sentiment reward from the pool; compute = N x the pool's mean tokens per prompt."""
    sent, length, toks = per_prompt(bon, "sent"), per_prompt(bon, "len"), per_prompt(bon, "tokens")
    rows, per = [], {}
    for n in sizes:
        r = {p: best_of_n(v, n) for p, v in sent.items()}
        # the length reward of the chosen samples, groups as in best_of_n
        chosen_len = {}
        for p, v in sent.items():
            g = len(v) // n
            picks = [max(range(i * n, (i + 1) * n), key=lambda j: v[j]) for i in range(g)]
            chosen_len[p] = sum(length[p][j] for j in picks) / g
        cost = {p: n * sum(t) / len(t) for p, t in toks.items()}
        rows.append(_row(f"BoN N={n}", r, chosen_len, cost, n=n, stop_rate=_stop(bon)))
        per[n] = r
    return rows, per


def _stop(rec: dict) -> float:
    return sum(s["stopped"] for s in rec["samples"]) / len(rec["samples"])


def vas_rows(rec: dict) -> tuple[list[dict], dict[int, dict[int, float]]]:
    """VAS (mean of its samples per prompt), and Best-of-m of its own samples for m = 2, 4, ... <= n."""
    sent, length, toks = per_prompt(rec, "sent"), per_prompt(rec, "len"), per_prompt(rec, "tokens")
    n, c = rec["n"], rec["cost_per_pos"]
    rows, per, m = [], {}, 1
    while m <= n:
        r = {p: best_of_n(v, m) for p, v in sent.items()}
        name = f"VAS beta={rec['beta']:g} k={rec['k']}" + (f" + best-of-{m}" if m > 1 else "")
        rows.append(_row(name, r, _mean(length), {p: m * c * sum(t) / len(t) for p, t in toks.items()},
                         beta=rec["beta"], k=rec["k"], m=m, stop_rate=_stop(rec),
                         tokens=sum(sum(t) for t in toks.values()) / sum(map(len, toks.values()))))
        per[m] = r
        m *= 2
    return rows, per


def equal_compute(vas: list[tuple[dict, dict[int, float]]], bon: list[dict], bon_per: dict) -> list[dict]:
    """Each VAS point against the cheapest Best-of-N given at least as much compute (paired by prompt):
    VAS above that BoN is VAS above Best-of-N at equal compute (or less)."""
    out = []
    for row, per in vas:
        if row["beta"] == 0:
            continue
        match = next((b for b in sorted(bon, key=lambda b: b["compute_pi0_fwd"])
                      if b["compute_pi0_fwd"] >= row["compute_pi0_fwd"]), None)
        if match is None:
            out.append({"vas": row["method"], "vas_compute": row["compute_pi0_fwd"], "bon": None,
                        "note": "costs more than the largest Best-of-N"})
            continue
        d, se, n = paired(bon_per[match["n"]], per)
        out.append({"vas": row["method"], "vas_compute": row["compute_pi0_fwd"], "bon": match["method"],
                    "bon_compute": match["compute_pi0_fwd"], "vas_minus_bon": d, "vas_minus_bon_se": se,
                    "prompts": n})
    return out


def report(settings: dict, r2: dict, decodes: dict, path: Path = RESULTS / "vas_135m.json") -> Path:
    from benchmarks.common import machine

    bon, bon_per = bon_rows(decodes["bon"], [int(x) for x in str(settings["bon"]).split(",")])
    vas_all: list[tuple[dict, dict]] = []
    for name, rec in decodes.items():
        if name.startswith("vas_"):
            rows, per = vas_rows(rec)
            vas_all += [(r, per[r["m"]]) for r in rows]
    sweep = sorted([(r, p) for r, p in vas_all if r["k"] == settings["topk"] and r["m"] == 1],
                   key=lambda x: x[0]["beta"])
    steps = []  # successive betas, paired
    for (lo, plo), (hi, phi) in zip(sweep, sweep[1:]):
        d, se, n = paired(plo, phi)
        steps.append({"from_beta": lo["beta"], "to_beta": hi["beta"], "d_sentiment": d, "d_sentiment_se": se})
    pi0 = bon_per[1]
    for r, p in vas_all:
        r["sentiment_minus_pi0"], r["sentiment_minus_pi0_se"], _ = paired(pi0, p)
    comp = composition(decodes, pi0, _mean(per_prompt(decodes["bon"], "len")))
    res = {"benchmark": "vas_135m", "command": "python -m benchmarks.vas_135m " + _cli(settings),
           "machine": machine(), "settings": settings, "value_fit_r2": r2,
           "rows": bon + [r for r, _ in vas_all], "beta_steps": steps,
           "equal_compute": equal_compute(vas_all, bon, bon_per), "composition": comp}
    res["table"] = markdown(res)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
    plot(res, path.with_suffix(".png"))
    print(json.dumps({k: res[k] for k in ("beta_steps", "equal_compute", "composition")}, indent=1))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return path


def _pm(x: float, se: float, d: int = 3) -> str:
    return f"{x:+.{d}f} ± {se:.{d}f}"


def markdown(res: dict) -> str:
    """The four results as Markdown tables (the docs page renders this string from the JSON)."""
    # starts with a table row: docsgen renders a "table" string that starts with "|"
    out = ["| 1. value fit, held-out R^2 of V(s_t) vs the final reward: bucket | " + " | ".join(f"{k} R^2 | {k} MSE / var" for k in res["value_fit_r2"]) + " | n |",
           "|---|" + "---|---|" * len(res["value_fit_r2"]) + "---|"]
    fits = list(res["value_fit_r2"].values())
    for b in fits[0]["by_position"]:
        cells = []
        for f in fits:
            x = f["by_position"].get(b)
            cells += [f"{x['r2']:.3f}", f"{x['mse']:.3f} / {x['var']:.3f}"] if x else ["—", "—"]
        out.append(f"| {b} | " + " | ".join(cells) + f" | {fits[0]['by_position'][b]['n']} |")
    out += ["", "**2. Beta sweep** (sentiment value model; differences paired by prompt)", "",
            "| beta | k | sentiment | − pi_0 (paired) | length reward | tokens | stop rate |", "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if r["method"].startswith("VAS") and r["m"] == 1 and r["k"] == res["settings"]["topk"]:
            out.append(f"| {r['beta']:g} | {r['k']} | {_pm(r['sentiment'], r['sentiment_se'])} | "
                       f"{_pm(r['sentiment_minus_pi0'], r['sentiment_minus_pi0_se'])} | "
                       f"{_pm(r['len_reward'], r['len_reward_se'])} | {r['tokens']:.1f} | {r['stop_rate']:.2f} |")
    out += ["", "| step | sentiment difference (paired) |", "|---|---|"]
    out += [f"| beta {s['from_beta']:g} -> {s['to_beta']:g} | {_pm(s['d_sentiment'], s['d_sentiment_se'])} |"
            for s in res["beta_steps"]]
    out += ["", "**3. Reward vs compute** (compute per prompt in pi_0 token forwards)", "",
            "| method | compute | sentiment |", "|---|---|---|"]
    out += [f"| {r['method']} | {r['compute_pi0_fwd']:.0f} | {_pm(r['sentiment'], r['sentiment_se'])} |"
            for r in sorted(res["rows"], key=lambda r: r["compute_pi0_fwd"])]
    out += ["", "| VAS point | its compute | cheapest BoN with >= compute | VAS − BoN (paired) |", "|---|---|---|---|"]
    for e in res["equal_compute"]:
        if e["bon"] is None:
            out.append(f"| {e['vas']} | {e['vas_compute']:.0f} | {e['note']} | — |")
        else:
            out.append(f"| {e['vas']} | {e['vas_compute']:.0f} | {e['bon']} ({e['bon_compute']:.0f}) | "
                       f"{_pm(e['vas_minus_bon'], e['vas_minus_bon_se'])} |")
    out += ["", "**4. Composition** (differences paired by prompt)", "",
            "| decoded | sentiment | length reward | sentiment − pi_0 | length − pi_0 | sentiment − V_len alone "
            "| length − V_sent alone |", "|---|---|---|---|---|---|---|"]
    for c in res["composition"]:
        def d(key: str) -> str:
            return _pm(*c[key]) if key in c else "—"
        out.append(f"| {c['decoded']} | {_pm(*c['sentiment'])} | {_pm(*c['len_reward'])} | "
                   f"{d('sentiment_minus_pi_0')} | {d('len_reward_minus_pi_0')} | "
                   f"{d('sentiment_minus_V_len alone')} | {d('len_reward_minus_V_sent alone')} |")
    return "\n".join(out)


def composition(decodes: dict, pi0_sent: dict, pi0_len: dict) -> list[dict]:
    """pi_0, V_sent alone, V_len alone, both: each reward, and its paired difference to pi_0 and to each alone."""
    rows = {"pi_0": (pi0_sent, pi0_len)}
    alone = decodes.get(decodes.get("sent_alone_name", ""))
    for label, rec in (("V_sent alone", alone), ("V_len alone", decodes.get("len")),
                       ("V_sent + V_len", decodes.get("both"))):
        if rec is not None:
            rows[label] = (_mean(per_prompt(rec, "sent")), _mean(per_prompt(rec, "len")))
    out = []
    for label, (s, ln) in rows.items():
        r = {"decoded": label, "sentiment": mean_se(list(s.values())), "len_reward": mean_se(list(ln.values()))}
        for ref in ("pi_0", "V_sent alone", "V_len alone"):
            if ref in rows and ref != label:
                r[f"sentiment_minus_{ref}"] = paired(rows[ref][0], s)[:2]
                r[f"len_reward_minus_{ref}"] = paired(rows[ref][1], ln)[:2]
        out.append(r)
    return out


def _cli(settings: dict) -> str:
    keys = ("out", "samples", "steps", "value_layers", "lr", "lam", "temperature", "eval_prompts", "pool", "bon",
            "n", "betas", "topk", "ks", "compose")
    return " ".join(f"--{k.replace('_', '-')} {settings[k]}" for k in keys if k in settings)


def plot(res: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2))
    rows = res["rows"]
    bon = [r for r in rows if r["method"].startswith("BoN")]
    ax1.errorbar([r["compute_pi0_fwd"] for r in bon], [r["sentiment"] for r in bon],
                 yerr=[r["sentiment_se"] for r in bon], fmt="o-", capsize=3, label="Best-of-N (pi_0)")
    by_k = defaultdict(list)
    for r in rows:
        if r["method"].startswith("VAS") and r["beta"] == res["settings"]["curve_beta"]:
            by_k[r["k"]].append(r)
    for k, rs in sorted(by_k.items()):
        rs.sort(key=lambda r: r["m"])
        ax1.errorbar([r["compute_pi0_fwd"] for r in rs], [r["sentiment"] for r in rs],
                     yerr=[r["sentiment_se"] for r in rs], fmt="s--", capsize=3,
                     label=f"VAS beta={res['settings']['curve_beta']:g} k={k} (+ best-of-m)")
    ax1.set(xscale="log", xlabel="compute per prompt (pi_0 token forwards)", ylabel="VADER sentiment",
            title="reward vs compute, same prompts")
    ax1.legend(fontsize=7)
    sweep = sorted([r for r in rows if r["method"].startswith("VAS") and r["k"] == res["settings"]["topk"]
                    and r["m"] == 1], key=lambda r: r["beta"])
    ax2.errorbar([r["beta"] for r in sweep], [r["sentiment"] for r in sweep], yerr=[r["sentiment_se"] for r in sweep],
                 fmt="o-", capsize=3)
    ax2.set(xlabel="beta", ylabel="VADER sentiment", title=f"beta sweep (k={res['settings']['topk']})")
    for c in res["composition"]:
        (s, sse), (ln, lse) = c["sentiment"], c["len_reward"]
        ax3.errorbar([ln], [s], xerr=[lse], yerr=[sse], fmt="o", capsize=3, label=c["decoded"])
    ax3.set(xlabel="length reward", ylabel="VADER sentiment", title="composition of two value models")
    ax3.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
