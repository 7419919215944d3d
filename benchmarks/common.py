"""Shared by every benchmark: side-by-side timing, machine facts, a printed table, JSON out.

Benchmarks never gate CI: they report medians, spreads and ratios measured in one run.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        info["load_avg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    for mod in ("transformers", "vllm", "deepspeed", "ray", "peft", "trl"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - absent or broken optional package
            info[mod] = None
    return info


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 3, warmup: int = 1,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Time each fn ``repeats`` times, alternating between them (so drift hits all sides alike).
    ``clock=time.process_time`` (one thread) counts this process's CPU time: robust to other load."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = clock()
            f()
            out[k].append(clock() - t)
    return out


def summarize(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "spread_pct": 100 * (max(times) - min(times)) / statistics.median(times), "raw_s": times}


def report(name: str, settings: dict, rows: list[dict], ratios: dict[str, float], notes: list[str] = (),
           command: str | None = None) -> Path:
    """Print a table and write benchmarks/results/<name>.json (with ``command``, the command line, when given)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    cols = list(dict.fromkeys(k for r in rows for k in r if k != "raw_s"))
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    print(f"\n== {name} ==  ({json.dumps(settings)})")
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in cols))
    for k, v in ratios.items():
        print(f"ratio {k}: {v:.3f}")
    for n in notes:
        print(f"note: {n}")
    path = RESULTS / f"{name}.json"
    head = {"benchmark": name} | ({"command": command} if command else {})
    path.write_text(json.dumps(head | {"machine": machine(), "settings": settings, "rows": rows, "ratios": ratios,
                                       "notes": list(notes)}, indent=2))
    print(f"wrote {path}")
    return path


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
