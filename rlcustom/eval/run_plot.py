"""A run's main curves as one PNG: ``rlcustom plot RUN_DIR`` and the end of every trainer run.

The per-step metrics are read from ``RUN_DIR/metrics.jsonl`` (one JSON object per step,
``{"step": k, "<metric>": value, ...}`` with W&B's metric names), else from the run's offline
W&B log (``RUN_DIR/wandb/offline-run-*/run-*.wandb``). Panels, each drawn only when the run has it:
reward, KL to the reference, the training loss, and the phase times per step (``timing/*_s``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from rlcustom.errors import RLCustomError

__all__ = ["MAIN_CURVES", "read_history", "curve_panels", "plot_run", "PLOT_NAME"]

PLOT_NAME = "curves.png"
# (panel title, metric names tried in order: the first the run logged is drawn)
MAIN_CURVES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reward", ("reward/mean", "reward/best_of_n", "train/reward_accuracy")),
    ("KL to reference", ("kl/seq_mean", "kl/mean", "train/kl_loss")),
    ("loss", ("train/loss", "train/dpo_loss", "train/bt_loss", "train/nll", "value/loss")),
)


def read_history(run_dir: str | Path) -> list[dict]:
    """Per-step metric rows of a run, oldest first (see the module docstring for the sources)."""
    run_dir = Path(run_dir)
    jl = run_dir / "metrics.jsonl"
    if jl.is_file():
        rows = []
        for i, line in enumerate(jl.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise RLCustomError(f"{jl}:{i}: not JSON ({e.msg})") from None
        return rows
    logs = sorted(run_dir.glob("wandb/*run-*/run-*.wandb"), key=lambda p: p.stat().st_mtime)
    if logs:
        from rlcustom.tracking import read_offline_run

        return read_offline_run(logs[-1].parent, wait_s=0.0)["history"]
    raise RLCustomError(f"{run_dir}: no metrics.jsonl and no offline W&B run under wandb/ (is it a run directory?)")


def _series(rows: Sequence[Mapping], key: str) -> list[tuple[float, float]]:
    out = []
    for i, r in enumerate(rows):
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            step = r.get("step", r.get("_step", i + 1))
            out.append((float(step), float(v)))
    return out


def curve_panels(rows: Sequence[Mapping]):
    """The :class:`~rlcustom.eval.plot.Panel` list for ``rows`` (an empty list when nothing is plottable)."""
    from rlcustom.eval.plot import Panel

    panels = []
    for title, keys in MAIN_CURVES:
        key = next((k for k in keys if _series(rows, k)), None)
        if key is not None:
            panels.append(Panel(title, "step", {key: _series(rows, key)}, legend=True))
    timing = sorted({k for r in rows for k in r if k.startswith("timing/") and k.endswith("_s")})
    series = {k[len("timing/"):-2]: _series(rows, k) for k in timing}
    if any(series.values()):
        panels.append(Panel("seconds per step, by phase", "step", {k: v for k, v in series.items() if v}))
    return panels


def plot_run(run_dir: str | Path, rows: Iterable[Mapping] | None = None, out: str | Path | None = None) -> Path:
    """Write ``RUN_DIR/curves.png`` (or ``out``) from ``rows`` (default: :func:`read_history`); the path."""
    from rlcustom.eval.plot import write_panels

    run_dir = Path(run_dir)
    rows = list(rows) if rows is not None else read_history(run_dir)
    panels = curve_panels(rows)
    if not panels:
        raise RLCustomError(f"{run_dir}: the run logged none of reward, KL, loss or timing/* metrics")
    target = Path(out) if out is not None else run_dir / PLOT_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_panels(panels, target.with_suffix(""), cols=2)
