"""benchmarks/qadapter_pairs.py and qadapter_sentiment_table.py: pairs of own samples by a reward, the table."""
from __future__ import annotations

import json
import math

import pytest

from benchmarks import qadapter_pairs as P
from benchmarks import qadapter_sentiment_table as T
from rlcustom.data.loaders import is_validation, load_preference_pairs, load_sft

SCORES = {"good": 0.9, "fine": 0.3, "bad": -0.6, "meh": 0.1, "odd": 0.5}


def _score(prompt: str, completion: str) -> float:
    return SCORES[completion]


def _gens(*groups):
    """rlcustom generate rows: groups[i] = (prompt, [completions in generation order])."""
    return [{"prompt": p, "completion": c, "prompt_index": i} for i, (p, cs) in enumerate(groups) for c in cs]


def test_couples_are_disjoint_and_in_the_order_given():
    rows = _gens(("A", ["good", "bad", "fine", "meh", "odd"]), ("B", ["meh"]))
    couples = P.sample_couples(rows)
    assert [(a["completion"], b["completion"]) for a, b in couples] == [("good", "bad"), ("fine", "meh")]
    # two one-sample runs over the same prompts (two seeds): prompt i's samples pair across the runs
    runs = _gens(("A", ["good"]), ("B", ["meh"])) + _gens(("A", ["bad"]), ("B", ["odd"]), ("C", ["fine"]))
    assert [(a["prompt"], a["completion"], b["completion"]) for a, b in P.sample_couples(runs)] == [
        ("A", "good", "bad"), ("B", "meh", "odd")]


def test_margin_filter_and_chosen_is_the_higher_score():
    rows = _gens(("A", ["bad", "good"]),   # gap 1.5: kept, chosen good (the second sample)
                 ("B", ["fine", "meh"]),   # gap 0.2 < 0.5: dropped
                 ("C", ["odd", "meh"]),    # gap 0.4 < 0.5: dropped
                 ("D", ["fine", "bad"]),   # gap 0.9: kept, chosen fine (the first sample)
                 ("E", ["good", "good"]))  # gap 0: dropped
    pairs, stats = P.build_pairs(rows, _score, margin=0.5)
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [("A", "good", "bad"), ("D", "fine", "bad")]
    assert pairs[0]["chosen_score"] == 0.9 and pairs[0]["rejected_score"] == -0.6
    assert stats["couples"] == 5 and stats["pairs"] == 2 and stats["kept_fraction"] == 0.4
    assert math.isclose(stats["mean_gap_all"], (1.5 + 0.2 + 0.4 + 0.9 + 0.0) / 5)
    assert math.isclose(stats["chosen_score_mean"], 0.6) and math.isclose(stats["rejected_score_mean"], -0.6)
    # margin 0 keeps every pair with any difference, never a tie
    assert [p["prompt"] for p in P.build_pairs(rows, _score, margin=0.0)[0]] == ["A", "B", "C", "D"]
    with pytest.raises(ValueError, match="margin"):
        P.build_pairs(rows, _score, margin=-1.0)


def test_main_writes_pairs_the_loaders_read_in_the_hh_split(tmp_path, monkeypatch):
    hh = "\n\nHuman: {}\n\nAssistant:"
    prompts = [hh.format(f"question {i}") for i in range(40)]
    g0, g1 = tmp_path / "gens-s0.jsonl", tmp_path / "gens-s1.jsonl"  # two seeds, one reply each
    g0.write_text("".join(json.dumps(r) + "\n" for r in _gens(*[(p, ["This is awful and sad."]) for p in prompts])))
    g1.write_text("".join(json.dumps(r) + "\n" for r in _gens(*[(p, ["Great, I love it!"]) for p in prompts])))
    out = tmp_path / "pairs.jsonl"
    assert P.main(["--gens", str(g0), str(g1), "--margin", "0.5", "--out", str(out)]) == 0  # real vader_sentiment
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 40 and all(r["chosen"] == "Great, I love it!" for r in recs)
    assert all(r["chosen_score"] > 0.5 > 0 > r["rejected_score"] for r in recs)
    assert json.loads((tmp_path / "pairs.jsonl.stats.json").read_text())["pairs"] == 40
    val = list(load_preference_pairs(str(out), split="validation", val_fraction=0.1, seed=0))
    train = list(load_sft(str(out), split="train", val_fraction=0.1, seed=0))
    assert len(val) + len(train) == 40
    assert {r["prompt"] for r in val} == {p for p in prompts if is_validation(p, 0.1, 0)}  # HH's own split
    assert all(r["completion"] == "Great, I love it!" for r in train)  # SFT trains on the chosen reply


def test_main_names_a_bad_generations_file(tmp_path):
    bad = tmp_path / "g.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "text": "y"}) + "\n")
    with pytest.raises(SystemExit, match="g.jsonl:1: missing field 'completion'"):
        P.main(["--gens", str(bad), "--out", str(tmp_path / "p.jsonl")])
    with pytest.raises(SystemExit, match="no such file"):
        P.main(["--gens", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "p.jsonl")])


def _method(runs, m, acc, acc_se, forg, forg_se, replies):
    (runs / m).mkdir(parents=True)
    (runs / m / "eval.json").write_text(json.dumps({"metrics": {
        "pairs": 100, "accuracy": acc, "accuracy_se": acc_se, "accuracy_logp_sum": 0.5, "accuracy_logp_sum_se": 0.05,
        "forgetting": forg, "forgetting_se": forg_se, "forgetting_replayed": forg, "forgetting_replayed_se": forg_se}}))
    (runs / m / "samples.jsonl").write_text("".join(json.dumps({"prompt": "p", "completion": c}) + "\n"
                                                    for c in replies))


def test_table_claim_and_plot(tmp_path):
    runs = tmp_path / "runs"
    _method(runs, "base", None, None, 0.0, 0.0, ["meh", "meh"])
    _method(runs, "qa-a0.1", 0.70, 0.03, 0.10, 0.02, ["good", "fine", "odd"])  # vader 0.9, 0.3, 0.5
    _method(runs, "sft", 0.75, 0.04, 0.30, 0.03, ["good", "bad"])
    res = T.collect(runs, ["base", "qa-a0.1", "sft", "dpo"], _score)
    q = res["rows"][1]
    assert q["label"] == "Q-Adapter a0=0.1" and T.label("qa-official-a0.01") == "Q-Adapter a0=0.01 (official)"
    assert math.isclose(q["vader"], (0.9 + 0.3 + 0.5) / 3)
    assert math.isclose(q["vader_se"], math.sqrt(((0.9 - q["vader"]) ** 2 + (0.3 - q["vader"]) ** 2
                                                  + (0.5 - q["vader"]) ** 2) / 2 / 3))
    assert res["missing"] == [str(runs / "dpo" / "eval.json"), str(runs / "dpo" / "samples.jsonl")]
    (c,) = T.claim(res["rows"])  # -0.05 +- 0.05 in accuracy: comparable; -0.20 +- 0.036 in forgetting: less
    assert math.isclose(c["d_accuracy"], -0.05) and math.isclose(c["d_accuracy_se"], 0.05)
    assert math.isclose(c["d_forgetting"], -0.20) and math.isclose(c["d_forgetting_se"], math.sqrt(0.02**2 + 0.03**2))
    assert c["comparable_accuracy"] is True and c["less_forgetting"] is True
    worse = [dict(r, accuracy=0.6) if r["method"] == "qa-a0.1" else r for r in res["rows"]]  # -0.15 < -2 x 0.05
    assert T.claim(worse)[0]["comparable_accuracy"] is False
    md = T.table(res["rows"], T.claim(res["rows"]))
    assert "| Q-Adapter a0=0.1 | 0.700 ± 0.030 (100) |" in md and "by log pi_1: 0.500 ± 0.050" in md
    assert T.plot(res["rows"], tmp_path / "p.png").stat().st_size > 1000


def test_main_writes_nothing_before_any_run_then_json_and_png(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "r.json"
    runs.mkdir()
    assert T.main(["--runs", str(runs), "--methods", "base sft", "--out", str(out)]) == 0
    assert not out.exists()
    _method(runs, "sft", 0.75, 0.04, 0.30, 0.03, ["I love this!"])
    assert T.main(["--runs", str(runs), "--methods", "base sft", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert [r["method"] for r in rec["results"]] == ["base", "sft"] and rec["results"][1]["vader"] > 0.5
    assert rec["claim_vs_sft"] == [] and out.with_suffix(".png").is_file()
