"""benchmarks/dera_135m_table.py: rows, paired differences and the DeRa-vs-retrained comparison by hand."""
from __future__ import annotations

import json
import math

from benchmarks import dera_135m_table as T

KEYS = ("reward", "reward_sem", "kl", "kl_sem", "kl_tokenwise", "kl_tokenwise_sem", "length", "stopped", "samples")


def _sweep(path, lams, per_lam):
    """A dera.json and its samples file: per_lam[lam] = [(reward, kl)] per prompt (kl_tokenwise = kl)."""
    results, lines = [], []
    for lam in lams:
        rs = per_lam[lam]
        results.append({"variant": "dera", "lam": lam, **{k: 0.0 for k in KEYS},
                        "reward": sum(r for r, _ in rs) / len(rs), "kl": sum(k for _, k in rs) / len(rs),
                        "kl_tokenwise": sum(k for _, k in rs) / len(rs)})
        lines += [json.dumps({"variant": "dera", "lam": lam, "prompt_index": i, "reward": r, "kl": k,
                              "kl_tokenwise": k}) for i, (r, k) in enumerate(rs)]
    path.write_text(json.dumps({"sft": "m", "lams": lams, "results": results}))
    path.with_name(path.stem + ".samples.jsonl").write_text("\n".join(lines) + "\n")


def test_collect_pairs_by_prompt_and_matches_beta_over_lam(tmp_path):
    _sweep(tmp_path / "dera.json", [0.0, 1.0, 2.0],
           {0.0: [(0.0, 0.0), (0.2, 0.0), (0.1, 0.0)], 1.0: [(0.5, 1.0), (0.4, 2.0), (0.6, 3.0)],
            2.0: [(0.9, 4.0), (0.8, 5.0), (0.7, 9.0)]})
    _sweep(tmp_path / "retrained-b0.1.json", [1.0], {1.0: [(1.0, 4.0), (0.6, 6.0), (0.8, 8.0)]})
    res = T.collect(tmp_path, beta=0.2)
    assert [r["lam"] for r in res["rows"]] == [0.0, 1.0, 2.0, None]
    assert res["rows"][2]["equivalent_beta"] == 0.1 and res["rows"][0]["equivalent_beta"] is None
    s = res["steps"][0]  # lam 0 -> 1: reward differences 0.5, 0.2, 0.5: mean 0.4, sd 0.1732, SE 0.1
    assert math.isclose(s["d_reward"], 0.4) and math.isclose(s["d_reward_se"], 0.1, rel_tol=1e-9)
    assert res["monotone_in_lam"] == {"reward": True, "kl": True, "kl_tokenwise": True}
    c = res["comparison"][0]  # beta' = 0.1 is DeRa's lam = 0.2 / 0.1 = 2: differences 0.1, -0.2, 0.1
    assert c["dera_lam"] == 2.0 and c["prompts"] == 3
    assert math.isclose(c["retrained_minus_dera_reward"], 0.0, abs_tol=1e-12)
    assert math.isclose(c["retrained_minus_dera_reward_se"], 0.1, rel_tol=1e-9)
    assert math.isclose(c["retrained_minus_dera_kl"], 0.0, abs_tol=1e-12)
    assert "| DeRa | 2 | 0.1 |" in T.table(res)


def test_a_drop_is_not_monotone_and_an_unswept_lam_is_missing(tmp_path):
    _sweep(tmp_path / "dera.json", [0.0, 1.0], {0.0: [(0.3, 0.0), (0.3, 0.0)], 1.0: [(0.1, 1.0), (0.2, 1.0)]})
    _sweep(tmp_path / "retrained-b0.4.json", [1.0], {1.0: [(0.1, 1.0), (0.2, 1.0)]})
    res = T.collect(tmp_path, beta=0.2)
    assert res["monotone_in_lam"]["reward"] is False and res["monotone_in_lam"]["kl"] is True
    assert res["comparison"] == [{"retrained_beta": 0.4, "dera_lam": 0.5, "missing": "no DeRa row at this lam"}]


def test_main_writes_json_table_and_plot(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    assert T.main(["--runs", str(runs), "--beta", "0.2", "--out", str(tmp_path / "r.json")]) == 0
    assert not (tmp_path / "r.json").exists()  # nothing swept yet: nothing written
    _sweep(runs / "dera.json", [0.0, 1.0], {0.0: [(0.0, 0.0), (0.2, 0.0)], 1.0: [(0.5, 1.0), (0.4, 2.0)]})
    assert T.main(["--runs", str(runs), "--beta", "0.2", "--out", str(tmp_path / "r.json")]) == 0
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["table"].startswith("| decoded with") and (tmp_path / "r.png").stat().st_size > 1000


def test_reward_gain_over_sft_is_paired(tmp_path):
    _sweep(tmp_path / "dera.json", [0.0, 1.0], {0.0: [(0.0, 0.0), (0.5, 0.0)], 1.0: [(0.2, 1.0), (0.5, 1.0)]})
    _sweep(tmp_path / "retrained-b0.2.json", [1.0], {1.0: [(0.1, 1.0), (0.8, 1.0)]})
    rows = T.collect(tmp_path, beta=0.2)["rows"]
    assert rows[0]["reward_minus_sft"] == 0.0
    assert math.isclose(rows[1]["reward_minus_sft"], 0.1) and math.isclose(rows[1]["reward_minus_sft_se"], 0.1)
    assert math.isclose(rows[2]["reward_minus_sft"], 0.2) and math.isclose(rows[2]["reward_minus_sft_se"], 0.1)


def test_retrained_rows_against_a_published_sweep_are_unpaired(tmp_path):
    """No dera.json on this machine: the previous result's DeRa rows stand in, differences unpaired."""
    def row(lam, reward, se, kl, kl_se):
        return {"kind": "dera", "lam": lam, "equivalent_beta": 0.2 / lam if lam else None, "reward": reward,
                "reward_sem": se, "kl": kl, "kl_sem": kl_se, "kl_tokenwise": kl, "kl_tokenwise_sem": kl_se,
                "length": 30.0, "stopped": 0.1, "samples": 2}
    prior = {"beta": 0.2, "date": "2026-12-02", "sweep": {"sft": "m"}, "steps": [], "monotone_in_lam": {},
             "rows": [row(0.0, 0.1, 0.03, 0.0, 0.0), row(2.0, 0.4, 0.04, 2.0, 0.1)]}
    _sweep(tmp_path / "retrained-b0.1.json", [1.0], {1.0: [(0.2, 1.0), (0.6, 2.0)]})  # mean 0.4, KL 1.5
    res = T.collect_against(tmp_path, 0.2, prior)
    c = res["comparison"][0]
    assert c["dera_lam"] == 2.0 and c["paired"] is False and res["sweep_date"] == "2026-12-02"
    assert math.isclose(c["retrained_minus_dera_reward"], 0.0, abs_tol=1e-12)
    assert math.isclose(c["retrained_minus_dera_reward_se"], math.hypot(0.04, 0.0), rel_tol=1e-9)  # _sweep: sem 0
    assert math.isclose(c["retrained_minus_dera_kl"], -0.5) and math.isclose(c["retrained_minus_dera_kl_se"], 0.1)
    r = res["rows"][-1]
    assert r["kind"] == "retrained" and math.isclose(r["reward_minus_sft"], 0.3)
    assert math.isclose(r["reward_minus_sft_se"], 0.03) and "(unpaired)" in T.table(res)
    with __import__("pytest").raises(SystemExit, match="beta 0.4"):
        T.collect_against(tmp_path, 0.2, {**prior, "beta": 0.4})
