"""benchmarks/vas_135m_stats.py against hand-computed numbers."""
from __future__ import annotations

import json
import math

import pytest

from benchmarks import vas_135m_stats as S


def test_mean_se_by_hand():
    m, se = S.mean_se([1.0, 2.0, 3.0, 4.0])  # sample var 5/3, SE sqrt(5/3 / 4)
    assert m == pytest.approx(2.5)
    assert se == pytest.approx(math.sqrt(5 / 12))
    assert S.mean_se([7.0]) == (7.0, 0.0)
    with pytest.raises(ValueError):
        S.mean_se([])


def test_paired_uses_common_prompts_only():
    m, se, n = S.paired({0: 1.0, 1: 2.0, 2: 4.0}, {0: 2.0, 1: 4.0, 2: 5.0, 3: 9.0})  # diffs 1, 2, 1
    assert (m, n) == (pytest.approx(4 / 3), 3)
    assert se == pytest.approx(1 / 3)  # var ((1/3)^2 + (2/3)^2 + (1/3)^2) / 2 = 1/3, SE sqrt(1/9)
    with pytest.raises(ValueError, match="no prompt in common"):
        S.paired({0: 1.0}, {1: 1.0})


def test_r2_by_hand():
    assert S.r2([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]) == pytest.approx(0.0)  # SS_res 2 = SS_tot 2
    assert S.r2([0.0, 0.0, 0.0], [1.0, 2.0, 3.0]) == pytest.approx(-6.0)  # 1 - 14 / 2: worse than the mean
    assert S.r2([1.0, 2.0], [1.0, 2.0]) == 1.0
    assert math.isnan(S.r2([0.0, 1.0], [2.0, 2.0]))
    assert math.isnan(S.r2([0.0, 0.0, 0.0], [-0.96, -0.96, -0.96 + 1e-16]))  # rounding, not variance


def test_r2_by_position_buckets_by_hand():
    # sample A: reward 1, V(s_0..s_2) = 0, .5, 1 (stopped); sample B: reward -1, V = 0, -.5, -.5 (cut)
    out = S.r2_by_position([[0.0, 0.5, 1.0], [0.0, -0.5, -0.5]], [1.0, -1.0], stopped=[True, False])
    assert out["t=0 (prompt only)"] == {"n": 2, "r2": pytest.approx(0.0), "mse": 1.0, "var": 1.0}
    assert out["t=1-7"]["r2"] == pytest.approx(0.75) and out["t=1-7"]["mse"] == pytest.approx(0.25)
    assert out["final state (after the last token)"]["r2"] == pytest.approx(1 - 0.25 / 2)
    assert out["final state, stopped on EOS"]["n"] == 1 and math.isnan(out["final state, stopped on EOS"]["r2"])
    assert out["all states"]["n"] == 6
    assert out["all states"]["r2"] == pytest.approx(1 - 2.75 / 6)
    assert "t=8-23" not in out
    assert S.position_buckets(8, False) == "t=8-23" and S.position_buckets(30, False) == "t>=24"
    assert S.position_buckets(3, True) == "final state (after the last token)"


def test_best_of_n_disjoint_groups():
    pool = [0.1, 0.5, 0.3, 0.2, 0.9]
    assert S.best_of_n(pool, 1) == pytest.approx(0.4)  # the mean
    assert S.best_of_n(pool, 2) == pytest.approx((0.5 + 0.3) / 2)  # groups (.1, .5), (.3, .2); .9 left out
    assert S.best_of_n(pool, 5) == 0.9
    with pytest.raises(ValueError, match="pool size"):
        S.best_of_n(pool, 6)


def test_vas_cost_per_position():
    assert S.vas_cost_per_position(20, 1, 4) == pytest.approx(1 + 21 / 4)
    assert S.vas_cost_per_position(2, 0, 4) == 1.0
    with pytest.raises(ValueError):
        S.vas_cost_per_position(0, 1, 4)


def _rec(n, rows, **extra):
    """A stage file: rows[p] = [(sent, len, tokens)] per sample of prompt p."""
    return {"n": n, "samples": [{"prompt": p, "sent": s, "len": ln, "tokens": t, "stopped": True, "text": ""}
                                for p, ss in enumerate(rows) for s, ln, t in ss], **extra}


def test_report_tables_pair_by_prompt_and_compare_at_equal_compute(tmp_path):
    from benchmarks import vas_135m_report as R

    bon = _rec(2, [[(0.0, -0.4, 20), (0.2, -0.2, 10)], [(0.4, -0.4, 20), (0.0, -0.4, 20)]])
    cost = 1.5  # pi_0 forwards per VAS position
    vas0 = _rec(1, [[(0.0, -0.4, 20)], [(0.4, -0.4, 20)]], beta=0.0, k=2, cost_per_pos=cost)
    vas8 = _rec(1, [[(0.5, -0.2, 10)], [(0.6, -0.2, 10)]], beta=8.0, k=2, cost_per_pos=cost)
    ln = _rec(1, [[(0.1, -0.1, 5)], [(0.2, -0.1, 5)]])
    both = _rec(1, [[(0.3, -0.1, 5)], [(0.5, -0.1, 5)]])
    decodes = {"bon": bon, "vas_b0_k2": vas0, "vas_b8_k2": vas8, "len": ln, "both": both,
               "sent_alone_name": "vas_b8_k2"}
    settings = {"bon": "1,2", "topk": 2, "curve_beta": 8.0}
    r2 = {"sentiment": {"by_position": {"all states": {"n": 3, "r2": 0.5, "mse": 0.1, "var": 0.2}}}}
    res = json.loads(R.report(settings, r2, decodes, tmp_path / "vas_135m.json").read_text())
    rows = {r["method"]: r for r in res["rows"]}
    # BoN N=1: pool means 0.1, 0.2; compute 15, 20 tokens -> 17.5. N=2: maxima 0.2, 0.4; compute 35
    assert rows["BoN N=1"]["sentiment"] == pytest.approx(0.15) and rows["BoN N=1"]["compute_pi0_fwd"] == 17.5
    assert rows["BoN N=2"]["sentiment"] == pytest.approx(0.3) and rows["BoN N=2"]["compute_pi0_fwd"] == 35
    assert rows["BoN N=2"]["len_reward"] == pytest.approx((-0.2 - 0.4) / 2)  # the chosen samples' length reward
    v8 = rows["VAS beta=8 k=2"]
    assert v8["compute_pi0_fwd"] == pytest.approx(15.0)  # 10 tokens x 1.5
    assert v8["sentiment_minus_pi0"] == pytest.approx(0.4)  # (0.5 - 0.1 + 0.6 - 0.2) / 2
    assert res["beta_steps"][0]["d_sentiment"] == pytest.approx(0.35)  # (0.5 + 0.2) / 2
    # VAS at 15 forwards vs the cheapest BoN with >= 15: N=1 (17.5); per-prompt 0.4, 0.4
    (eq,) = res["equal_compute"]
    assert eq["bon"] == "BoN N=1" and eq["vas_minus_bon"] == pytest.approx(0.4) and eq["vas_minus_bon_se"] == pytest.approx(0, abs=1e-12)
    comp = {c["decoded"]: c for c in res["composition"]}
    assert comp["V_sent + V_len"]["sentiment_minus_V_len alone"][0] == pytest.approx(0.25)
    assert comp["V_sent + V_len"]["len_reward_minus_V_sent alone"][0] == pytest.approx(0.1)
    assert comp["V_sent + V_len"]["len_reward_minus_pi_0"][0] == pytest.approx(-0.1 - (-0.3 - 0.4) / 2)
    assert res["table"].startswith("|") and "| all states | 0.500" in res["table"] and "| t=" not in res["table"]
    assert (tmp_path / "vas_135m.png").is_file()
    from docsgen import results

    page = results.render("vas_135m", root=tmp_path)  # the docs page's tables come from the JSON's "table"
    assert "| V_sent + V_len |" in page and "| all states | 0.500" in page
