"""Collect benchmarks/dera_135m.sh's sweeps into one JSON, a table and a reward-vs-KL plot.

    python -m benchmarks.dera_135m_table --runs runs/dera-135m --beta 0.2 --out benchmarks/results/dera_135m.json

Reads ``<runs>/dera.json`` (the DeRa sweep of the model aligned at ``--beta``) and every
``<runs>/retrained-b<beta'>.json`` (a model retrained at ``beta'``, decoded alone on the same prompts with the
same seed), each with its ``.samples.jsonl``. Standard errors are over prompts (one sample each); the
differences between rows are paired by prompt (every row decodes the same prompts with the same seed, so a
paired difference's SE is the honest one). DeRa's claim: decoding at ``lam`` approximates the model retrained
at ``beta / lam``; each retrained row is set beside the DeRa row at ``lam = beta / beta'``.
A missing file is listed as missing, not invented.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path


_ROW_KEYS = ("reward", "reward_sem", "kl", "kl_sem", "kl_tokenwise", "kl_tokenwise_sem", "length", "stopped",
             "samples")


def _mean_se(x: list[float]) -> tuple[float, float]:
    n = len(x)
    m = sum(x) / n
    se = math.sqrt(sum((v - m) ** 2 for v in x) / (n - 1) / n) if n > 1 else 0.0
    return m, se


def _per_prompt(samples_file: Path) -> dict[float, dict[int, dict]]:
    """``{lam: {prompt_index: {"reward", "kl", "kl_tokenwise"}}}`` of a sweep's samples (variant dera)."""
    out: dict[float, dict[int, dict]] = {}
    for line in samples_file.read_text().splitlines():
        r = json.loads(line)
        if r["variant"] == "dera":
            out.setdefault(float(r["lam"]), {})[int(r["prompt_index"])] = r
    return out


def paired(a: dict[int, dict], b: dict[int, dict], key: str) -> tuple[float, float, int]:
    """Mean and SE of ``b[key] - a[key]`` over the prompts both have."""
    common = sorted(set(a) & set(b))
    m, se = _mean_se([float(b[i][key]) - float(a[i][key]) for i in common])
    return m, se, len(common)


def _pm(x: float, se: float, d: int = 3) -> str:
    return f"{x:.{d}f} ± {se:.{d}f}"


def collect(runs: Path, beta: float) -> dict:
    sweep = json.loads((runs / "dera.json").read_text())
    per = _per_prompt(runs / "dera.samples.jsonl")
    rows = [{"kind": "dera", "lam": r["lam"], "equivalent_beta": (beta / r["lam"]) if r["lam"] > 0 else None,
             **{k: r[k] for k in _ROW_KEYS}}
            for r in sweep["results"] if r["variant"] == "dera"]
    rows.sort(key=lambda r: r["lam"])
    lams = [r["lam"] for r in rows]
    steps = []  # successive lambdas: paired differences (monotonicity with its SEs)
    for lo, hi in zip(lams, lams[1:]):
        step = {"from_lam": lo, "to_lam": hi}
        for key in ("reward", "kl", "kl_tokenwise"):
            m, se, _ = paired(per[lo], per[hi], key)
            step[f"d_{key}"], step[f"d_{key}_se"] = m, se
        steps.append(step)
    retrained, comparison, samples_of = [], [], {}
    for row, rp in _retrained_rows(runs):
        b = row["equivalent_beta"]
        retrained.append(row)
        samples_of[id(row)] = rp
        lam = beta / b
        match = next((x for x in rows if math.isclose(x["lam"], lam, rel_tol=1e-6)), None)
        if match is None:
            comparison.append({"retrained_beta": b, "dera_lam": lam, "missing": "no DeRa row at this lam"})
            continue
        c = {"retrained_beta": b, "dera_lam": lam}
        for key in ("reward", "kl", "kl_tokenwise"):
            m, se, n = paired(per[lam], rp, key)  # retrained - DeRa
            c[f"retrained_minus_dera_{key}"], c[f"retrained_minus_dera_{key}_se"] = m, se
        c["prompts"] = n
        comparison.append(c)
    base = per.get(0.0)  # lam = 0 decodes pi_sft: every row's reward gain over it, paired by prompt
    for r in rows + retrained:
        other = per.get(r["lam"]) if r["kind"] == "dera" else samples_of[id(r)]
        if base is not None and other is not None:
            r["reward_minus_sft"], r["reward_minus_sft_se"], _ = paired(base, other, "reward")
    mono = {key: all(s[f"d_{key}"] > 0 for s in steps) for key in ("reward", "kl", "kl_tokenwise")}
    return {"beta": beta, "sweep": {k: sweep[k] for k in ("sft", "adapter", "lams", "prompts", "sampling", "seed",
                                                             "reward", "kl_definition") if k in sweep},
            "rows": rows + retrained, "steps": steps, "monotone_in_lam": mono, "comparison": comparison,
            "samples": sweep.get("samples", [])}


def _retrained_rows(runs: Path) -> list[tuple[dict, dict[int, dict]]]:
    """Every ``retrained-b<beta'>.json`` of ``runs``: its lam = 1 row and its per-prompt samples."""
    out = []
    for f in sorted(runs.glob("retrained-b*.json")):
        b = float(re.fullmatch(r"retrained-b(.+)\.json", f.name).group(1))
        r = next(x for x in json.loads(f.read_text())["results"] if x["variant"] == "dera" and x["lam"] == 1.0)
        row = {"kind": "retrained", "lam": None, "equivalent_beta": b, **{k: r[k] for k in _ROW_KEYS}}
        out.append((row, _per_prompt(f.with_name(f.stem + ".samples.jsonl"))[1.0]))
    return out


def _unpaired(a: dict, b: dict, key: str) -> tuple[float, float]:
    """``b[key] - a[key]`` of two independent rows, SE = sqrt(se_a^2 + se_b^2)."""
    se = "reward_sem" if key == "reward" else f"{key}_sem"
    return b[key] - a[key], math.sqrt(a[se] ** 2 + b[se] ** 2)


def collect_against(runs: Path, beta: float, prior: dict) -> dict:
    """The retrained rows of ``runs`` beside the DeRa rows of an earlier result JSON (``prior``).

    Used when the sweep's per-prompt samples are gone (a fresh machine) but its rows were published: the same
    prompts and seed were decoded, yet the samples cannot be paired, so every difference here is unpaired
    (its SE the root sum of squares) and says so (``"paired": False``)."""
    if not math.isclose(float(prior["beta"]), beta):
        raise SystemExit(f"--sweep-from has beta {prior['beta']}, not --beta {beta}")
    rows = [r for r in prior["rows"] if r["kind"] == "dera"]
    base = next((r for r in rows if r["lam"] == 0.0), None)
    retrained, comparison = [], []
    for row, _ in _retrained_rows(runs):
        if base is not None:
            row["reward_minus_sft"], row["reward_minus_sft_se"] = _unpaired(base, row, "reward")
            row["reward_minus_sft_paired"] = False
        retrained.append(row)
        lam = beta / row["equivalent_beta"]
        match = next((x for x in rows if math.isclose(x["lam"], lam, rel_tol=1e-6)), None)
        c = {"retrained_beta": row["equivalent_beta"], "dera_lam": lam, "paired": False}
        if match is None:
            comparison.append({**c, "missing": "no DeRa row at this lam"})
            continue
        for key in ("reward", "kl", "kl_tokenwise"):
            c[f"retrained_minus_dera_{key}"], c[f"retrained_minus_dera_{key}_se"] = _unpaired(match, row, key)
        c["prompts"] = row["samples"]
        comparison.append(c)
    return {"beta": beta, "sweep": prior["sweep"], "sweep_date": prior.get("sweep_date", prior.get("date")), "rows": rows + retrained,
            "steps": prior["steps"], "monotone_in_lam": prior["monotone_in_lam"], "comparison": comparison,
            "samples": prior.get("samples", [])}


def table(res: dict) -> str:
    lines = ["| decoded with | lam | beta (= beta / lam) | reward (VADER) | reward - pi_sft (paired) "
             "| KL to pi_sft (k1, nats) | KL tokenwise (nats) | tokens | stopped |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        who = "DeRa" if r["kind"] == "dera" else "retrained alone"
        lam = f"{r['lam']:g}" if r["lam"] is not None else "—"
        eb = f"{r['equivalent_beta']:.3g}" if r["equivalent_beta"] is not None else "∞ (pi_sft)"
        gain = _pm(r["reward_minus_sft"], r["reward_minus_sft_se"]) if "reward_minus_sft" in r else "—"
        gain += " (unpaired)" if r.get("reward_minus_sft_paired") is False else ""
        lines.append(f"| {who} | {lam} | {eb} | {_pm(r['reward'], r['reward_sem'])} | {gain} "
                     f"| {_pm(r['kl'], r['kl_sem'], 2)} "
                     f"| {_pm(r['kl_tokenwise'], r['kl_tokenwise_sem'], 2)} | {r['length']:.1f} "
                     f"| {100 * r['stopped']:.0f}% |")
    return "\n".join(lines)


def plot(res: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    d = [r for r in res["rows"] if r["kind"] == "dera"]
    ax.errorbar([r["kl_tokenwise"] for r in d], [r["reward"] for r in d], xerr=[r["kl_tokenwise_sem"] for r in d],
                yerr=[r["reward_sem"] for r in d], fmt="o-", capsize=3, label=f"DeRa, aligned at beta={res['beta']:g}")
    for r in d:
        ax.annotate(f"lam={r['lam']:g}", (r["kl_tokenwise"], r["reward"]), textcoords="offset points", xytext=(5, -12),
                    fontsize=8)
    t = [r for r in res["rows"] if r["kind"] == "retrained"]
    if t:
        ax.errorbar([r["kl_tokenwise"] for r in t], [r["reward"] for r in t], xerr=[r["kl_tokenwise_sem"] for r in t],
                    yerr=[r["reward_sem"] for r in t], fmt="s", capsize=3, color="C3", label="retrained at beta'")
        for r in t:
            ax.annotate(f"beta'={r['equivalent_beta']:g}", (r["kl_tokenwise"], r["reward"]), textcoords="offset points",
                        xytext=(5, 5), fontsize=8, color="C3")
    ax.set_xlabel("KL(pi || pi_sft) per reply, nats (tokenwise, exact per position)")
    ax.set_ylabel("mean VADER compound score (held-out prompts)")
    ax.set_title("DeRa on SmolLM2-135M: reward vs KL (± 1 SE)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/dera-135m", help="the script's OUT directory")
    p.add_argument("--beta", type=float, required=True, help="the KL strength of the swept aligned model")
    p.add_argument("--out", default="benchmarks/results/dera_135m.json")
    p.add_argument("--command", default="bash benchmarks/dera_135m.sh", help="recorded as is")
    p.add_argument("--settings", default="", help="the script's size variables, recorded as is")
    p.add_argument("--sweep-from", default=None,
                   help="a previous result JSON whose DeRa rows stand in for a sweep not in --runs (unpaired)")
    a = p.parse_args(argv)
    runs = Path(a.runs)
    if (runs / "dera.json").is_file():
        res = collect(runs, a.beta)
    elif a.sweep_from and Path(a.sweep_from).is_file():
        res = collect_against(runs, a.beta, json.loads(Path(a.sweep_from).read_text()))
        a.settings += f" (sweep rows from {a.sweep_from}, dated {res['sweep_date']}; comparisons unpaired)"
    else:
        print(f"no {runs}/dera.json yet: run bash benchmarks/dera_135m.sh (nothing written)")
        return 0
    md = table(res)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = plot(res, out.with_suffix(".png"))
    rec = {"command": a.command, "settings": a.settings, "date": time.strftime("%Y-%m-%d"), **res, "table": md,
           "plot": str(png)}
    out.write_text(json.dumps(rec, indent=2))
    print(md)
    for s in res["steps"]:
        print(f"lam {s['from_lam']:g} -> {s['to_lam']:g}: reward {s['d_reward']:+.3f} ± {s['d_reward_se']:.3f}, "
              f"KL {s['d_kl']:+.2f} ± {s['d_kl_se']:.2f}, KL tokenwise {s['d_kl_tokenwise']:+.2f} ± "
              f"{s['d_kl_tokenwise_se']:.2f}")
    for c in res["comparison"]:
        if "missing" in c:
            print(f"beta'={c['retrained_beta']:g}: {c['missing']}")
            continue
        print(f"retrained beta'={c['retrained_beta']:g} minus DeRa lam={c['dera_lam']:g}: reward "
              f"{c['retrained_minus_dera_reward']:+.3f} ± {c['retrained_minus_dera_reward_se']:.3f}, KL tokenwise "
              f"{c['retrained_minus_dera_kl_tokenwise']:+.2f} ± {c['retrained_minus_dera_kl_tokenwise_se']:.2f}")
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
