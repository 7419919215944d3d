"""Small line plots for reports: side-by-side panels, written as a PNG with matplotlib.

Used by ``rlcustom eval dera`` (reward and KL against lambda), ``benchmarks/l3m_135m``
(constraint trajectories) and ``rlcustom plot RUN_DIR`` (a run's main curves, rlcustom/eval/run_plot.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

__all__ = ["Panel", "write_panels"]

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


@dataclass(frozen=True)
class Panel:
    """One axes: named series of ``(x, y)`` points, optional dashed horizontal reference lines."""

    title: str  # y-axis name, written above the panel
    xlabel: str
    series: dict[str, list[tuple[float, float]]]
    hlines: tuple[float, ...] = ()  # e.g. the bounds of a constraint interval
    log_y: bool = False  # log10 y axis (non-positive y values are left out)
    xticks: tuple[float, ...] | None = None  # tick labels at these x; None: the two ends
    markers: bool = True  # a dot at every point
    legend: bool = True  # series names in this panel
    colors: dict[str, str] = field(default_factory=dict)  # series name -> colour (default: by order)


def write_panels(panels: Sequence[Panel], stem: str | Path, *, cols: int = 2) -> Path:
    """``STEM.png``: the panels on a grid of ``cols`` columns; returns the path written."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    stem = Path(stem)
    rows = max(1, math.ceil(len(panels) / cols))
    ncol = min(cols, max(1, len(panels)))
    fig, axes = plt.subplots(rows, ncol, figsize=(4.5 * ncol, 3.5 * rows), squeeze=False)
    for k, p in enumerate(panels):
        ax = axes[k // cols][k % cols]
        for i, (name, pts) in enumerate(p.series.items()):
            pts = [(x, y) for x, y in pts if y is not None and math.isfinite(y) and (y > 0 or not p.log_y)]
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o" if p.markers else None, markersize=3,
                    color=p.colors.get(name, COLORS[i % len(COLORS)]), label=name)
        for h in p.hlines:
            ax.axhline(h, color="gray", linestyle="--", linewidth=1)
        if p.log_y:
            ax.set_yscale("log")
        if p.xticks is not None:
            ax.set_xticks(list(p.xticks))
        elif all(float(x).is_integer() for pts in p.series.values() for x, _ in pts):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps: no 1.2, 1.4, ...
        ax.set_xlabel(p.xlabel)
        ax.set_ylabel(p.title)
        ax.grid(alpha=0.3)
        if p.legend:
            ax.legend(fontsize=8)
    for k in range(len(panels), rows * ncol):
        axes[k // cols][k % cols].axis("off")
    fig.tight_layout()
    path = stem.with_suffix(".png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
