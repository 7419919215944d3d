"""Statistics of ``benchmarks/vas_135m``: held-out R^2 of a value model per prefix position, means with
standard errors over prompts, paired differences, Best-of-N from a pool of samples, and the compute
accounting in ``pi_0``-token-forward equivalents. Pure Python (no model), tested by hand in
``tests/unit/test_vas_135m_stats.py``.

Definitions (what the docs page and the JSON report):

* **Held-out R^2 of V**: on the value model's held-out samples (prompts the fit never saw), each state
  ``s_t`` = prompt + the first ``t`` response tokens (``t = 0``: the prompt alone, ``t = |y|``: the
  finished response, the terminal state ``V(s + EOS)`` when the sample stopped) is one point
  ``(V(s_t), r(y))`` with ``r(y)`` the sample's final reward (its Monte-Carlo return, gamma 1).
  ``R^2 = 1 - sum (r - V)^2 / sum (r - mean r)^2`` over the points of a bucket, the mean taken over that
  bucket's points. Early prefixes cannot reach 1 (the rest of the reply is not written yet: their best
  possible ``V`` is ``E[r | s_t]``), the terminal state can (the reward is a function of it).
* **SE**: standard error of a mean over prompts, ``sd / sqrt(n)`` (sample sd, ``n - 1``), each prompt one
  value (the mean of its samples). A **paired difference** ``b - a`` takes the per-prompt differences over
  the prompts both have (every method decodes the same prompts), then mean and SE of those.
* **Best-of-N from a pool** of ``M`` i.i.d. samples per prompt: the pool's first ``(M // N) * N`` samples
  split into ``M // N`` disjoint groups of ``N`` in order; the prompt's Best-of-N reward is the mean of the
  groups' maxima (unbiased for ``E[max of N]``, less noisy than one group).
* **Compute** in ``pi_0``-token forwards (multiply-adds per token, attention over the context left out for
  both): a ``pi_0`` sample of ``T`` tokens costs ``T``; a VAS sample costs ``T * (1 + (k + 1) * rho)``, the
  value model evaluating ``k`` children plus the chosen token per position, ``rho`` = its multiply-adds per
  token over ``pi_0``'s (:func:`vas_cost_per_position`). Best-of-N costs the sum over its ``N`` samples.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["mean_se", "paired", "r2", "position_buckets", "r2_by_position", "best_of_n",
           "vas_cost_per_position"]

#: position buckets of the R^2 table: (name, first t, last t inclusive); the terminal state is its own bucket
BUCKETS: tuple[tuple[str, int, int], ...] = (("t=0 (prompt only)", 0, 0), ("t=1-7", 1, 7), ("t=8-23", 8, 23),
                                              ("t>=24", 24, 10**9))


def mean_se(x: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error ``sd / sqrt(n)`` (sample sd; SE 0 for one value)."""
    n = len(x)
    if n == 0:
        raise ValueError("mean_se of no values")
    m = sum(x) / n
    se = math.sqrt(sum((v - m) ** 2 for v in x) / (n - 1) / n) if n > 1 else 0.0
    return m, se


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[float, float, int]:
    """Mean and SE of ``b[i] - a[i]`` over the keys (prompts) both have, and how many there are."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("paired difference: no prompt in common")
    m, se = mean_se([float(b[i]) - float(a[i]) for i in common])
    return m, se, len(common)


def r2(pred: Sequence[float], target: Sequence[float]) -> float:
    """``1 - SS_res / SS_tot`` (``SS_tot`` about the mean of ``target``); nan when the target is constant
    (``SS_tot`` within float rounding of 0)."""
    if len(pred) != len(target) or not target:
        raise ValueError(f"r2 needs equal, non-empty lists; got {len(pred)} and {len(target)}")
    m = sum(target) / len(target)
    ss_tot = sum((y - m) ** 2 for y in target)
    ss_res = sum((y - p) ** 2 for p, y in zip(pred, target))
    # a constant target (up to float rounding, e.g. every reply cut at the same length) has no R^2
    return 1.0 - ss_res / ss_tot if ss_tot > 1e-12 * len(target) * (1.0 + m * m) else float("nan")


def position_buckets(t: int, final: bool) -> str:
    """The bucket name of state ``s_t`` (``final``: the state after the last response token)."""
    if final:
        return "final state (after the last token)"
    for name, lo, hi in BUCKETS:
        if lo <= t <= hi:
            return name
    raise ValueError(f"position {t} < 0")


def r2_by_position(values: Sequence[Sequence[float]], rewards: Sequence[float],
                   stopped: Sequence[bool] | None = None) -> dict[str, dict]:
    """Held-out R^2 of ``V(s_t)`` against each sample's final reward, per position bucket and overall.

    ``values[i]`` holds ``V(s_0), ..., V(s_T)`` of sample ``i`` (``T + 1`` states; the last is the state
    after its last token). Returns ``{bucket: {"n", "r2", "mse", "var"}}`` with the buckets of
    :data:`BUCKETS`, ``"final state (after the last token)"``, ``"final state, stopped on EOS"`` (only the
    samples with ``stopped[i]``) and ``"all states"`` (every point pooled).
    """
    if len(values) != len(rewards):
        raise ValueError(f"{len(values)} value rows but {len(rewards)} rewards")
    pts: dict[str, tuple[list[float], list[float]]] = {}

    def add(name: str, v: float, r: float) -> None:
        p, y = pts.setdefault(name, ([], []))
        p.append(float(v))
        y.append(float(r))

    for i, (row, r) in enumerate(zip(values, rewards)):
        if not row:
            raise ValueError(f"value row {i} is empty (it needs at least V(s_0))")
        last = len(row) - 1
        for t, v in enumerate(row):
            add(position_buckets(t, t == last), v, r)
            add("all states", v, r)
        if stopped is not None and stopped[i]:
            add("final state, stopped on EOS", row[last], r)
    order = [b[0] for b in BUCKETS] + ["final state (after the last token)", "final state, stopped on EOS",
                                       "all states"]
    out = {}
    for name in order:
        if name in pts:
            p, y = pts[name]
            m = sum(y) / len(y)
            out[name] = {"n": len(y), "r2": r2(p, y), "mse": sum((a - b) ** 2 for a, b in zip(p, y)) / len(y),
                         "var": sum((b - m) ** 2 for b in y) / len(y)}
    return out


def best_of_n(pool: Sequence[float], n: int) -> float:
    """Best-of-``n`` reward of one prompt from its pool of i.i.d. rewards: the mean of the maxima of the
    ``len(pool) // n`` disjoint groups of ``n`` (in pool order; a remainder is left out)."""
    if n < 1 or n > len(pool):
        raise ValueError(f"best_of_n: n must be in [1, {len(pool)}] (the pool size), got {n}")
    groups = len(pool) // n
    return sum(max(pool[g * n:(g + 1) * n]) for g in range(groups)) / groups


def vas_cost_per_position(k: int, value_params: int, pi0_params: int) -> float:
    """``pi_0``-token forwards per generated VAS position: one ``pi_0`` token plus ``k + 1`` value-model tokens
    (the ``k`` children and the chosen token extending its cache), each at ``value_params / pi0_params`` (the
    multiply-adds per token of each model: its weights less any input-embedding lookup)."""
    if k < 1 or value_params < 0 or pi0_params <= 0:
        raise ValueError(f"vas_cost_per_position: need k >= 1, value_params >= 0, pi0_params > 0; "
                         f"got {k}, {value_params}, {pi0_params}")
    return 1.0 + (k + 1) * value_params / pi0_params
