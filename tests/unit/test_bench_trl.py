"""The pieces of the TRL side-by-side benchmarks that decide their numbers (no trainer runs here)."""
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's benchmarks/ package
from benchmarks import trl_offline, trl_rl  # noqa: E402


def test_pinned_versions_come_from_the_requirement_files():
    for name, version in (("requirements-trl.txt", trl_rl.TRL_GRPO_VERSION),
                          ("requirements-trl-ppo.txt", trl_rl.TRL_PPO_VERSION)):
        lines = (trl_rl.ROOT / "benchmarks" / name).read_text().splitlines()
        assert f"trl=={version}" in lines
    assert trl_rl.TRL_PPO_VERSION == "1.12.0"  # the last TRL with a PPOTrainer
    assert trl_offline.TRL_VERSION == trl_rl.TRL_GRPO_VERSION


def test_missing_trl_install_names_the_make_target(tmp_path, monkeypatch):
    monkeypatch.setattr(trl_rl, "ROOT", tmp_path)
    with pytest.raises(SystemExit, match="make bench-deps"):
        trl_rl.trl_dir("9.9.9")


def test_trl_reward_function_is_rlcustoms_target_length():
    from rlcustom.rewards import target_length

    texts = ["one two three", " ".join(["w"] * 20), " ".join(["w"] * 45)]
    want = [target_length("", t, target=20) for t in texts]
    assert want == [pytest.approx(0.15), 1.0, 0.0]
    assert trl_rl.target_length_reward(texts) == want
    assert trl_rl.target_length_reward([[{"role": "assistant", "content": t}] for t in texts]) == want


def test_timed_adds_seconds_only_when_asked(monkeypatch):
    clock = iter([10.0, 12.5, 20.0, 21.0])
    monkeypatch.setattr(trl_rl.time, "perf_counter", lambda: next(clock))
    phases, on = {}, {"v": True}
    f = trl_rl.timed(lambda x: x * 2, phases, "score", lambda: on["v"])
    assert f(3) == 6 and phases == {"score": 2.5}
    on["v"] = False
    assert f(4) == 8 and phases == {"score": 2.5}
    assert next(clock) == 20.0  # not timed: the clock was not read


def test_step_callback_closes_each_step_with_its_phases(monkeypatch):
    clock = iter([100.0, 103.0, 104.5])
    monkeypatch.setattr(trl_rl.time, "perf_counter", lambda: next(clock))
    phases, steps = {}, []
    cb = trl_rl.step_callback(phases, steps)
    cb.on_train_begin(None, None, None)
    phases["generate"] = 1.0
    cb.on_step_end(None, None, None)
    cb.on_step_end(None, None, None)
    assert steps == [{"wall_s": 3.0, "generate": 1.0}, {"wall_s": 1.5}]
    assert phases == {}


def test_side_row_drops_warmup_and_uses_medians():
    a = types.SimpleNamespace(warmup=1, completions=8)
    steps = [{"wall_s": 50.0, "generate": 40.0, "score": 1.0, "train": 9.0, "sync": 0.0},
             {"wall_s": 2.0, "generate": 1.0, "score": 0.2, "train": 0.7, "sync": 0.1},
             {"wall_s": 4.0, "generate": 3.0, "score": 0.2, "train": 0.7, "sync": 0.1},
             {"wall_s": 3.0, "generate": 2.0, "score": 0.4, "train": 0.5, "sync": 0.1}]
    r = trl_rl.side_row("tiny", "grpo", "rlcustom", {"steps": steps}, a)
    assert r["steps"] == 3 and r["step_median_s"] == 3.0 and r["samples_per_s"] == pytest.approx(8 / 3)
    assert r["generate_s"] == 2.0 and r["score_s"] == 0.2 and r["train_s"] == 0.7
    assert r["spread_pct"] == pytest.approx(100 * 2 / 3)
    assert trl_rl.side_row("tiny", "grpo", "trl", {"error": "boom"}, a)["error"] == "boom"


def test_offline_row_is_steps_per_second():
    a = types.SimpleNamespace(warmup=1, pairs=8)
    r = trl_offline.row("tiny", "dpo", "trl", {"steps": [{"wall_s": 9.0}, {"wall_s": 0.5}, {"wall_s": 0.25}]}, a)
    assert r["steps"] == 2 and r["step_median_s"] == pytest.approx(0.375)
    assert r["steps_per_s"] == pytest.approx(1 / 0.375) and r["pairs_per_s"] == pytest.approx(8 / 0.375)


def test_pairs_are_cut_once_to_the_token_limits(tmp_path, tiny_dir):
    import json

    from rlcustom.models.loading import load_tokenizer

    path = trl_offline.make_pairs(str(tiny_dir), 6, 24, 16, tmp_path / "p.jsonl")
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    tok = load_tokenizer(str(tiny_dir))
    assert len(rows) == 6
    for r in rows:
        assert set(r) == {"prompt", "chosen", "rejected"}
        assert len(tok(r["prompt"], add_special_tokens=False)["input_ids"]) <= 24 + 2  # re-encoding may merge/split
        for k in ("chosen", "rejected"):
            assert len(tok(r[k], add_special_tokens=False)["input_ids"]) <= 15 + 2  # + EOS = 16


def test_a_missing_trl_is_that_sides_error_not_the_end_of_bench_all(tmp_path, monkeypatch):
    monkeypatch.setattr(trl_rl, "ROOT", tmp_path)
    res = trl_rl.run_worker("trl_rl", "9.9.9", {}, threads=1)
    assert "make bench-deps" in res["error"]
