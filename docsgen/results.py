"""Markdown tables rendered from ``benchmarks/results/*.json``: the numbers on the benchmarks and results
pages come from these files only.

The files share a shape (``benchmarks/common.py``): ``benchmark``, ``machine`` (date, CPU count, library
versions, load), ``settings``, ``rows`` (one dict per measured case), ``ratios``, ``notes``. A file of another
shape (``qadapter_135m.json``: ``results`` per method, a ``table`` its script wrote) is rendered from what it has.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["RESULTS", "load", "render", "render_all", "fmt"]

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
SKIP_COLUMNS = ("raw_s",)  # per-repeat lists: in the JSON, not in the tables


def load(name: str, root: Path = RESULTS) -> dict:
    path = root / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such results file (have: {', '.join(names(root))})") from None


def names(root: Path = RESULTS) -> list[str]:
    return sorted(p.stem for p in root.glob("*.json"))


def fmt(v: Any) -> str:
    """A table cell: floats to 3 significant digits, None as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == 0:
            return "0"
        return f"{v:.3g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.2e}"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x) for x in v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool)) or (
        isinstance(v, (list, tuple)) and len(v) <= 6 and all(isinstance(x, (str, int, float)) for x in v))


def table(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    rows = list(rows)
    cols: list[str] = []
    for r in rows:
        cols += [k for k, v in r.items() if k not in cols and k not in SKIP_COLUMNS and _scalar(v)]
    if not rows or not cols:
        return []
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_short(fmt(r.get(c))) for c in cols) + " |" for r in rows]
    return out + [""]


def _short(cell: str, n: int = 60) -> str:
    """Long text (an error message) stays in the JSON; the table shows its start."""
    return cell if len(cell) <= n else cell[: n - 1].rstrip() + "…"


def _pairs(d: Mapping[str, Any], head: tuple[str, str] = ("key", "value")) -> list[str]:
    items = [(k, v) for k, v in d.items() if _scalar(v)]
    if not items:
        return []
    return [f"| {head[0]} | {head[1]} |", "|---|---|"] + [f"| {fmt(k)} | {fmt(v)} |" for k, v in items] + [""]


RATIO_STATS = (" spread %", " IQR %", " min", " max")  # a ratio's spread over rounds: "<key> spread %", ...


def _ratios(r: Mapping[str, Any]) -> list[str]:
    """The ratios as key/value pairs, or, when some come with their spread over rounds (``<key> spread %``,
    ``<key> IQR %``, ``<key> min``, ``<key> max``), one row per ratio with those as columns."""
    def stat_of(k: str) -> bool:
        return any(k.endswith(s) and k[: -len(s)] in r for s in RATIO_STATS)

    stats = [s for s in RATIO_STATS if any(stat_of(k) and k.endswith(s) for k in r)]
    if not stats:
        return _pairs(r, ("ratio", "value"))
    out = ["| ratio | median | " + " | ".join(s.strip() for s in stats) + " |", "|---|" + "---|" * (1 + len(stats))]
    for k, v in r.items():
        if not stat_of(k) and _scalar(v):
            out.append(f"| {fmt(k)} | {fmt(v)} | " + " | ".join(fmt(r.get(k + s)) for s in stats) + " |")
    return out + [""]


def _machine(d: Mapping[str, Any]) -> str:
    m = d.get("machine") or {}
    if not m:
        return f"Measured {d['date']}." if d.get("date") else ""
    libs = ", ".join(f"{k} {m[k]}" for k in ("torch", "transformers", "ray", "deepspeed", "vllm", "trl") if m.get(k))
    load_avg = m.get("load_avg_1m")
    return (f"Measured {str(m.get('date', '?'))[:16].replace('T', ' ')} UTC on {m.get('cpu_count', '?')} CPUs"
            f" ({'CUDA ' + str(m['cuda']) if m.get('cuda') else 'no GPU'}), {m.get('torch_threads', '?')} torch "
            f"threads, load average {fmt(load_avg)}; {libs}.")


def _flatten(rec: Mapping[str, Any]) -> dict:
    """One table row from a result record: its scalars and those of its ``metrics`` dict."""
    row = {k: v for k, v in rec.items() if _scalar(v) and k != "settings"}
    row.update({k: v for k, v in (rec.get("metrics") or {}).items() if _scalar(v)})
    return row


def render(name: str, *, level: int = 3, full: bool = True, root: Path = RESULTS) -> str:
    """One results file as Markdown: source and machine, the measured rows, ratios, and (``full``)
    settings and notes."""
    d = load(name, root)
    h = "#" * level
    out = [f"{h} `{name}`", "", f"Source: `benchmarks/results/{name}.json`. " + _machine(d), ""]
    if d.get("command"):
        out += [f"Command: `{d['command']}`" + (f" ({fmt(d['settings'])})" if isinstance(d.get("settings"), str)
                                                 else ""), ""]
    if isinstance(d.get("rows"), list):
        out += table(d["rows"])
    if isinstance(d.get("table"), str) and d["table"].lstrip().startswith("|"):
        out += ["Summary (the table its script wrote):", "", d["table"].strip(), "", "Every measured field:", ""]
    if isinstance(d.get("results"), Mapping):
        out += table({"run": k, **_flatten(v)} for k, v in d["results"].items() if isinstance(v, Mapping))
    elif isinstance(d.get("results"), list):
        out += table(_flatten(v) for v in d["results"] if isinstance(v, Mapping))
    if isinstance(d.get("ratios"), Mapping) and d["ratios"]:
        out += _ratios(d["ratios"])
    if full and isinstance(d.get("settings"), Mapping):
        out += ["Settings:", ""] + _pairs(d["settings"], ("setting", "value"))
    if full and d.get("notes"):
        out += [f"- {fmt(n)}" for n in d["notes"]] + [""]
    return "\n".join(out)


def render_all(root: Path = RESULTS) -> str:
    """The results page: every file in ``benchmarks/results``."""
    out = ["# All results", "",
           "Every file in `benchmarks/results/`, rendered at build time by `docsgen/results.py` (nothing on this",
           "page is typed by hand). The benchmarks and the experiments that write them: [Benchmarks](benchmarks.md).",
           ""]
    for n in names(root):
        out += [render(n, level=2, root=root), ""]
    return "\n".join(out)
