"""Collect the ``rlcustom eval qadapter`` JSONs of benchmarks/qadapter_135m.sh into one JSON and a table.

    python -m benchmarks.qadapter_135m_table --runs runs/qadapter-135m --out benchmarks/results/qadapter_135m.json

Rows: pi_1 (``base``, the "before" row), then Q-Adapter, SFT, Replay, DPO; a method whose
``<runs>/<method>/eval.json`` is missing is listed as missing, not invented.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

METHODS = (("base", "pi_1 (before)"), ("qadapter", "Q-Adapter"), ("sft", "SFT"), ("replay", "Replay"),
           ("dpo", "DPO"))


def _pm(x, se, digits=3) -> str:
    if x is None:
        return "—"
    return f"{x:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def table(results: dict[str, dict]) -> str:
    """A markdown table of the collected eval records (``results[method] = eval.json``)."""
    lines = ["| method | held-out acc, implicit reward (n) | acc, log pi summed | acc, log pi per token "
             "| forgetting (nats/token) | forgetting, replayed prompts |",
             "|---|---|---|---|---|---|"]
    for key, label in METHODS:
        r = results.get(key)
        if r is None:
            lines.append(f"| {label} | missing | | | | |")
            continue
        m = r["metrics"]
        acc = ("— (reward 0)" if m["accuracy"] is None else
               f"{_pm(m['accuracy'], m['accuracy_se'])} ({m['pairs']})")
        lines.append(f"| {label} | {acc} | {_pm(m['accuracy_logp_sum'], m['accuracy_logp_sum_se'])} "
                     f"| {_pm(m['accuracy_logp_mean'], m['accuracy_logp_mean_se'])} "
                     f"| {_pm(m['forgetting'], m['forgetting_se'], 4)} "
                     f"| {_pm(m['forgetting_replayed'], m['forgetting_replayed_se'], 4)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/qadapter-135m", help="the script's OUT directory")
    p.add_argument("--out", default="benchmarks/results/qadapter_135m.json")
    p.add_argument("--command", default="bash benchmarks/qadapter_135m.sh", help="recorded as is")
    p.add_argument("--settings", default="", help="the script's size variables, recorded as is")
    a = p.parse_args(argv)
    results = {}
    for key, _ in METHODS:
        f = Path(a.runs) / key / "eval.json"
        if f.is_file():
            results[key] = json.loads(f.read_text())
    if not results:  # e.g. `rlcustom bench all` before any run: keep the recorded results
        print(f"no {a.runs}/<method>/eval.json yet: run bash benchmarks/qadapter_135m.sh (nothing written)")
        return 0
    md = table(results)
    rec = {"command": a.command, "settings": a.settings, "date": time.strftime("%Y-%m-%d"),
           "missing": [k for k, _ in METHODS if k not in results], "results": results, "table": md}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rec, indent=2))
    print(md)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
