"""Small line plots for reports: side-by-side panels, PNG with matplotlib, else a hand-drawn SVG.

Used by ``rlcustom eval dera`` (reward and KL against lambda) and ``benchmarks/l3m_135m``
(constraint trajectories). matplotlib is optional: without it :func:`write_panels` writes the
same panels as a dependency-free SVG.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["Panel", "svg", "write_panels"]

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


def _points(p: Panel, pts: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    out = [(float(x), float(y)) for x, y in pts if y is not None and math.isfinite(float(y))]
    return [(x, math.log10(y)) for x, y in out if y > 0] if p.log_y else out


def svg(panels: Sequence[Panel], *, width: int = 360, height: int = 260, cols: int = 2) -> str:
    """The panels on a grid of ``cols`` columns, as one SVG document (no dependency)."""
    W, H, pad = width, height, 48
    rows = max(1, math.ceil(len(panels) / cols))
    ncol = min(cols, max(1, len(panels)))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{ncol * W}" height="{rows * H}" '
             f'font-family="sans-serif" font-size="11">', f'<rect width="{ncol * W}" height="{rows * H}" fill="white"/>']
    for k, p in enumerate(panels):
        series = {name: _points(p, pts) for name, pts in p.series.items()}
        pts = [q for s in series.values() for q in s]
        hl = [math.log10(h) for h in p.hlines if h > 0] if p.log_y else list(p.hlines)
        if not pts:
            continue
        x0, x1 = min(q[0] for q in pts), max(q[0] for q in pts)
        y0, y1 = min([q[1] for q in pts] + hl), max([q[1] for q in pts] + hl)
        x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
        ox, oy = (k % cols) * W, (k // cols) * H

        def X(x):
            return ox + pad + (x - x0) / (x1 - x0) * (W - 1.5 * pad)

        def Y(y):
            return oy + H - pad + (y - y0) / (y1 - y0) * (-(H - 1.7 * pad))

        parts.append(f'<line x1="{ox + pad}" y1="{oy + H - pad}" x2="{ox + W - pad / 2}" y2="{oy + H - pad}" '
                     f'stroke="black"/>')
        parts.append(f'<line x1="{ox + pad}" y1="{oy + H - pad}" x2="{ox + pad}" y2="{oy + pad * 0.7}" stroke="black"/>')
        parts.append(f'<text x="{ox + W / 2}" y="{oy + H - 10}" text-anchor="middle">{p.xlabel}</text>')
        parts.append(f'<text x="{ox + pad}" y="{oy + pad * 0.5}">{p.title}{" (log10)" if p.log_y else ""}</text>')
        for x in (p.xticks if p.xticks is not None else sorted({x0, x1})):
            parts.append(f'<text x="{X(x):.1f}" y="{oy + H - pad + 14}" text-anchor="middle">{x:g}</text>')
        for y in sorted({y0, y1, *hl}):
            parts.append(f'<text x="{ox + pad - 4}" y="{Y(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>')
        for y in hl:
            parts.append(f'<line x1="{ox + pad}" y1="{Y(y):.1f}" x2="{ox + W - pad / 2}" y2="{Y(y):.1f}" '
                         f'stroke="gray" stroke-dasharray="4,3"/>')
        for i, (name, s) in enumerate(series.items()):
            c = p.colors.get(name, COLORS[i % len(COLORS)])
            if s:
                line = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in s)
                parts.append(f'<polyline points="{line}" fill="none" stroke="{c}" stroke-width="2"/>')
                if p.markers:
                    parts += [f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3" fill="{c}"/>' for x, y in s]
            if p.legend:
                parts.append(f'<text x="{ox + W - pad * 1.6}" y="{oy + pad + 14 * i}" fill="{c}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def write_panels(panels: Sequence[Panel], stem: str | Path, *, cols: int = 2,
                 log: Callable[[str], None] = print) -> Path:
    """``STEM.png`` with matplotlib, else ``STEM.svg`` drawn by :func:`svg`; returns the path written."""
    stem = Path(stem)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        path = stem.with_suffix(".svg")
        path.write_text(svg(panels, cols=cols))
        log(f"matplotlib is not installed: wrote an SVG plot instead ({path})")
        return path
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
