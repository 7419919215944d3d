"""Statistics of ``benchmarks/l3m_135m``: held-out means with standard errors, the held-out task perplexity
(token-weighted, with the delta-method SE of its log and paired differences between models on the same
rows) and the smoothness of a constraint trajectory.

Pure functions of lists of numbers (no model, no torch), so the report's numbers are checked by hand in
``tests/unit/test_l3m_bench.py``.
"""
from __future__ import annotations

import math
from typing import Sequence

__all__ = ["mean_se", "length_stats", "bound_stats", "token_nll", "paired_nll_diff", "smoothness", "constraint_points"]


def mean_se(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample sd / sqrt(n)); SE 0 for one value. Answers to the same prompt are not
    independent, so with several answers per prompt the SE understates the spread over prompts a little."""
    n = len(xs)
    if n == 0:
        raise ValueError("mean_se: no values")
    m = sum(xs) / n
    if n < 2:
        return m, 0.0
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1) / n)


def _share_se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def length_stats(lens: Sequence[int], lo: float, hi: float) -> dict:
    """Mean length (SE), median and the shares of answers below, inside (SE) and above ``[lo, hi]``."""
    n = len(lens)
    m, se = mean_se(lens)
    inside = sum(lo <= x <= hi for x in lens) / n
    return {"mean_len": m, "mean_len_se": se, "median_len": sorted(lens)[n // 2], "frac_in_range": inside,
            "frac_in_range_se": _share_se(inside, n), "frac_below": sum(x < lo for x in lens) / n,
            "frac_above": sum(x > hi for x in lens) / n}


def bound_stats(xs: Sequence[float], lo: float, prefix: str) -> dict:
    """Mean (SE) of a reward with a lower bound ``lo`` and the share of answers at or above it (SE)."""
    n = len(xs)
    m, se = mean_se(xs)
    above = sum(x >= lo for x in xs) / n
    return {f"mean_{prefix}": m, f"mean_{prefix}_se": se, f"frac_{prefix}_ge_b": above,
            f"frac_{prefix}_ge_b_se": _share_se(above, n)}


def _ratio_se(num: Sequence[float], den: Sequence[float]) -> tuple[float, float]:
    """Ratio estimator ``R = sum(num) / sum(den)`` over rows and its delta-method SE,
    ``sqrt(sum((num_i - R den_i)^2) / (n (n - 1))) / mean(den)``."""
    n = len(num)
    if n != len(den) or n == 0:
        raise ValueError(f"ratio: {n} numerators, {len(den)} denominators")
    r = sum(num) / sum(den)
    if n < 2:
        return r, 0.0
    resid = sum((a - r * b) ** 2 for a, b in zip(num, den))
    return r, math.sqrt(resid / (n * (n - 1))) / (sum(den) / n)


def token_nll(nll_sums: Sequence[float], tokens: Sequence[int]) -> dict:
    """Held-out task NLL per token (the ``rlcustom eval --metrics ppl`` definition: total NLL / total tokens)
    with its SE over rows, and the perplexity ``exp(nll)``; ``ppl_se`` is the delta method, ``ppl * nll_se``."""
    nll, se = _ratio_se(nll_sums, tokens)
    ppl = math.exp(nll)
    return {"task_nll": nll, "task_nll_se": se, "task_ppl": ppl, "task_ppl_se": ppl * se}


def paired_nll_diff(nll_a: Sequence[float], nll_b: Sequence[float], tokens: Sequence[int]) -> tuple[float, float]:
    """Per-token NLL of model a minus model b on the same rows, and its paired SE (the rows' common
    difficulty cancels): the ratio estimator of ``sum(a_i - b_i) / sum(tokens)``."""
    if len(nll_a) != len(nll_b):
        raise ValueError(f"paired_nll_diff: {len(nll_a)} vs {len(nll_b)} rows")
    return _ratio_se([a - b for a, b in zip(nll_a, nll_b)], tokens)


def smoothness(xs: Sequence[float]) -> dict:
    """How much a trajectory moves from one point to the next: total variation ``sum |x_t - x_{t-1}|``, its
    mean per step, and the sd of the steps ``x_t - x_{t-1}`` (a straight ramp has sd 0; a zig-zag a large one)."""
    d = [b - a for a, b in zip(xs, xs[1:])]
    if not d:
        return {"total_variation": 0.0, "mean_abs_step": 0.0, "step_sd": 0.0, "points": len(xs)}
    m = sum(d) / len(d)
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1)) if len(d) > 1 else 0.0
    tv = sum(abs(x) for x in d)
    return {"total_variation": tv, "mean_abs_step": tv / len(d), "step_sd": sd, "points": len(xs)}


def constraint_points(traj: dict, key: str) -> list[float]:
    """The values of ``traj[key]`` at constraint steps (task steps carry the EMA and multipliers unchanged,
    so they would add zero steps to a smoothness number)."""
    return [y for y, task in zip(traj[key], traj["task_step"]) if y is not None and not task]
