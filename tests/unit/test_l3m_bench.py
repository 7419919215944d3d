"""The L3M 135M experiment runs by name only: `rlcustom bench all` leaves it out."""
from pathlib import Path

from rlcustom import bench_runner as br

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_l3m_135m_is_runnable_by_name_but_not_in_all():
    assert "l3m_135m" in br.benchmark_names(BENCH)
    assert "l3m_135m" not in br.comparison_benchmarks(BENCH)
    assert not br._opts_in((BENCH / "l3m_135m.py").read_text())  # IN_BENCH_ALL = False, not only the name


# ---------------------------------------------------------------- the report's statistics, by hand

import math  # noqa: E402

import pytest  # noqa: E402

from benchmarks._l3m_stats import (bound_stats, constraint_points, length_stats, mean_se, paired_nll_diff,  # noqa: E402
                                   smoothness, token_nll)


def test_mean_se_and_shares_by_hand():
    m, se = mean_se([1.0, 2.0, 3.0, 6.0])  # mean 3, sample var (4+1+0+9)/3 = 14/3
    assert m == 3.0 and se == pytest.approx(math.sqrt(14 / 3 / 4))
    s = length_stats([5, 10, 15, 30], lo=10, hi=20)
    assert s["frac_in_range"] == 0.5 and s["frac_below"] == 0.25 and s["frac_above"] == 0.25
    assert s["frac_in_range_se"] == pytest.approx(math.sqrt(0.25 / 4)) and s["mean_len"] == 15.0
    b = bound_stats([0.0, 0.5, 0.8, -0.3], lo=0.5, prefix="sent")
    assert b["mean_sent"] == pytest.approx(0.25) and b["frac_sent_ge_b"] == 0.5  # 0.5 counts as meeting b
    with pytest.raises(ValueError, match="no values"):
        mean_se([])


def test_token_nll_is_total_over_tokens_with_ratio_se():
    sums, toks = [2.0, 6.0, 4.0], [1, 3, 2]  # every row at 2 nats/token: no spread of the ratio
    r = token_nll(sums, toks)
    assert r["task_nll"] == 2.0 and r["task_nll_se"] == 0.0 and r["task_ppl"] == pytest.approx(math.exp(2.0))
    # rows 1 and 3 nats/token with 2 tokens each: R = 8/4 = 2; residuals (2-4, 6-4) -> sqrt(8 / (2*1)) / 2 = 1
    r = token_nll([2.0, 6.0], [2, 2])
    assert r["task_nll"] == 2.0 and r["task_nll_se"] == pytest.approx(1.0)
    assert r["task_ppl_se"] == pytest.approx(math.exp(2.0) * 1.0)
    # paired: a constant 0.5 nats/token above b on every row -> difference 0.5 with SE 0
    d, se = paired_nll_diff([3.0, 7.0], [2.0, 6.0], [2, 2])
    assert d == pytest.approx(0.5) and se == 0.0
    with pytest.raises(ValueError, match="rows"):
        paired_nll_diff([1.0], [1.0, 2.0], [1])


def test_smoothness_ramp_vs_zigzag():
    ramp = smoothness([0.0, 1.0, 2.0, 3.0])  # steps 1, 1, 1
    assert ramp == {"total_variation": 3.0, "mean_abs_step": 1.0, "step_sd": 0.0, "points": 4}
    zig = smoothness([0.0, 2.0, 0.0, 2.0])  # steps 2, -2, 2: mean 2/3, sd sqrt(((4/3)^2*2 + (8/3)^2)/2)
    assert zig["total_variation"] == 6.0 and zig["mean_abs_step"] == 2.0
    assert zig["step_sd"] == pytest.approx(math.sqrt(((4 / 3) ** 2 * 2 + (8 / 3) ** 2) / 2))
    assert smoothness([5.0])["total_variation"] == 0.0


def test_constraint_points_skip_task_steps_and_gaps():
    t = {"task_step": [0.0, 1.0, 0.0, 1.0, 0.0], "x": [3.0, 3.0, 1.0, 1.0, None]}
    assert constraint_points(t, "x") == [3.0, 1.0]  # the carried values of task steps add no zero steps
