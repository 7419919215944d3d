"""``OUTPUT_DIR/metrics.jsonl``: every logged metric, one JSON object per step, without W&B.

Each line is ``{"step": k, "<metric>": value, ...}`` with the names W&B gets (``reward/mean``,
``train/loss``, ...). A line is appended and flushed as each step is logged, so a crashed run keeps
every finished step. On resume the record continues: the first step logged after a resume from step
``s`` is ``s + 1``, and lines with ``step > s`` (steps after the checkpoint, done again now) are
dropped first, so each step appears once. ``rlcustom plot RUN_DIR`` and the demo read this file::

    import json
    rows = [json.loads(line) for line in open("runs/demo/metrics.jsonl")]
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

__all__ = ["MetricsRecord", "read_metrics", "FILENAME"]

FILENAME = "metrics.jsonl"


def _json_value(v: float) -> Any:
    return v if math.isfinite(v) else str(v)  # JSON has no NaN/inf: "nan", "inf", "-inf"


class MetricsRecord:
    """Appends one JSON line per step to ``run_dir/metrics.jsonl`` (see the module docstring)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / FILENAME
        self._started = False

    def _start(self, first_step: int) -> None:
        """Keep only the lines of steps before ``first_step`` (a resumed run's earlier steps)."""
        self._started = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if int(json.loads(line)["step"]) < first_step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line from a crash
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(k + "\n" for k in kept))
        os.replace(tmp, self.path)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if not self._started:
            self._start(step)
        row = {"step": int(step), **{k: _json_value(float(v)) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``run_dir/metrics.jsonl`` (or of the file itself), in order; a torn last line is skipped."""
    p = Path(run_dir)
    p = p if p.is_file() else p / FILENAME
    rows = []
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows
