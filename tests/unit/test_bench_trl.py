"""The pieces of the TRL side-by-side benchmarks that decide their numbers (no trainer runs here)."""
import os
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's benchmarks/ package
from benchmarks import _alternate as alt  # noqa: E402
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


# ----------------------------------------------------------------------------- alternating whole steps


def test_median_spread_and_iqr_by_hand():
    xs = [4.0, 1.0, 3.0, 2.0]
    assert alt.median(xs) == 2.5
    assert alt.spread_pct(xs) == pytest.approx(100 * 3 / 2.5)
    # inclusive quartiles of 1, 2, 3, 4: 1.75 and 3.25
    assert alt.iqr_pct(xs) == pytest.approx(100 * 1.5 / 2.5)
    assert alt.summary(xs) == {"median": 2.5, "min": 1.0, "max": 4.0, "spread_pct": pytest.approx(120.0),
                               "iqr_pct": pytest.approx(60.0)}
    assert alt.iqr_pct([7.0]) == 0.0


def test_ratio_is_taken_per_round_and_only_where_both_ran():
    ours = [{"round": 1, "wall_s": 2.0}, {"round": 2, "wall_s": 4.0}, {"round": 3, "wall_s": 1.0}]
    theirs = [{"round": 1, "wall_s": 6.0}, {"round": 2, "wall_s": 6.0}]
    assert alt.ratio_rounds(ours, theirs) == [3.0, 1.5]  # samples/s ratio = their wall / ours
    r = alt.pair_ratios("grpo@tiny", {"a": ours, "b": theirs}, ["a"], ["b"])
    key = "grpo@tiny: a / b (samples/s)"
    assert r[key] == 2.25 and r[f"{key} spread %"] == pytest.approx(100 * 1.5 / 2.25)
    assert r[f"{key} min"] == 1.5 and r[f"{key} max"] == 3.0


class FakeSide:
    """A side whose steps take the walls it is given; logs the global call order."""

    def __init__(self, name, walls, log, fail_at=None):
        self.name, self.walls, self.log, self.fail_at, self.error, self.n = name, list(walls), log, fail_at, None, 0

    def step(self):
        self.n += 1
        if self.n == self.fail_at:
            self.error = "boom"
            raise alt.SideError("boom")
        self.log.append(self.name)
        return {"wall_s": self.walls[self.n - 1]}


def test_alternate_runs_whole_steps_a_b_a_b_and_flags_warmup():
    log = []
    a, b = FakeSide("A", [9, 1, 2, 3], log), FakeSide("B", [8, 4, 5, 6], log)
    out = alt.alternate([a, b], rounds=3, warmup=1)
    assert log == ["A", "B"] * 4
    assert [x["round"] for x in out["A"]] == [0, 1, 2, 3]
    assert [x["warmup"] for x in out["B"]] == [True, False, False, False]
    assert [x["wall_s"] for x in alt.measured(out["A"])] == [1, 2, 3]


def test_a_failing_side_drops_out_and_the_other_goes_on():
    log = []
    a, b = FakeSide("A", [1] * 5, log), FakeSide("B", [1] * 5, log, fail_at=2)
    out = alt.alternate([a, b], rounds=4, warmup=1)
    assert log == ["A", "B", "A", "A", "A", "A"]
    assert len(out["B"]) == 1 and b.error == "boom" and len(out["A"]) == 5


def test_alternate_stops_early_only_once_sides_and_ratios_are_steady():
    log = []
    steady = alt.alternate([FakeSide("A", [5, 1, 1, 1, 1, 1, 1], log), FakeSide("B", [5, 2, 2, 2, 2, 2, 2], log)],
                           rounds=6, warmup=1, stop_spread_pct=10, min_rounds=4, ratio_pairs=[("A", "B")])
    assert len(steady["A"]) == 1 + 4  # stopped after the 4th measured round
    noisy = alt.alternate([FakeSide("A", [5, 1, 2, 1, 2, 1, 2], []), FakeSide("B", [5, 2, 2, 2, 2, 2, 2], [])],
                          rounds=6, warmup=1, stop_spread_pct=10, min_rounds=4)
    assert len(noisy["A"]) == 1 + 6
    # each side steady, their ratio not (B's walls drift against A's): no early stop either
    assert not alt.converged({"A": [{"round": 1, "wall_s": 1.0}, {"round": 2, "wall_s": 1.05}],
                              "B": [{"round": 1, "wall_s": 1.05}, {"round": 2, "wall_s": 1.0}]}, 5, [("A", "B")])


CHILD = """
import sys, time
from benchmarks._alternate import Channel, StopBench
ch = Channel()
print("library noise on stdout", flush=True)
ch.send({"ready": True, "threads": {"main": {"torch": 1}}})
n = 0
try:
    while True:
        ch.wait()
        n += 1
        if n == int(sys.argv[1]):
            raise ValueError("step went wrong")
        ch.send({"wall_s": float(n)})
except StopBench:
    print("stopped", flush=True)
"""


def _side(tmp_path, fail_at):
    env = dict(os.environ, PYTHONPATH=str(trl_rl.ROOT))
    return alt.Side("child", [sys.executable, "-c", CHILD, str(fail_at)], env, tmp_path / "log.txt",
                    start_timeout_s=60, step_timeout_s=60)


def test_side_process_steps_on_command_and_stops(tmp_path):
    s = _side(tmp_path, fail_at=99)
    assert s.start() == {"ready": True, "threads": {"main": {"torch": 1}}}
    assert s.step() == {"wall_s": 1.0} and s.step() == {"wall_s": 2.0}
    proc = s.proc
    s.close()
    assert proc.returncode == 0 and s.error is None
    assert s.log_tail() == ["library noise on stdout", "stopped"]


def test_a_crashed_side_reports_its_error_line(tmp_path):
    s = _side(tmp_path, fail_at=2)
    s.start()
    s.step()
    with pytest.raises(alt.SideError, match="ValueError: step went wrong"):
        s.step()
    assert "exited (rc 1)" in s.error
    s.close()


def test_side_row_drops_warmup_and_reports_medians_spreads_and_threads():
    recs = [{"round": 0, "warmup": True, "wall_s": 50.0, "generate": 40.0, "train": 9.0},
            {"round": 1, "warmup": False, "wall_s": 2.0, "generate": 1.0, "score": 0.2, "train": 0.7, "sync": 0.1},
            {"round": 2, "warmup": False, "wall_s": 4.0, "generate": 3.0, "score": 0.2, "train": 0.7, "sync": 0.1},
            {"round": 3, "warmup": False, "wall_s": 3.0, "generate": 2.0, "score": 0.4, "train": 0.5, "sync": 0.1,
             "rollout_wait": 0.3}]
    ready = {"threads": {"driver": {"torch": 2, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
                         "rollout": {"torch": 2, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
                         "reference": "shared"}}
    r = trl_rl.side_row("tiny", "grpo", "rlcustom", recs, 8, ready=ready)
    assert r["rounds"] == 3 and r["step_median_s"] == 3.0 and r["samples_per_s"] == pytest.approx(8 / 3)
    assert r["generate_s"] == 2.0 and r["score_s"] == 0.2 and r["train_s"] == 0.7 and r["rollout_wait_s"] == 0.0
    assert r["spread_pct"] == pytest.approx(100 * 2 / 3) and r["step_iqr_pct"] == pytest.approx(100 * 1 / 3)
    assert r["threads"] == "driver 2, rollout 2 (OMP 2, MKL 2)"
    assert r["raw_s"] == recs
    failed = trl_rl.side_row("tiny", "grpo", "trl", recs[:1], 8, error="start: boom")
    assert failed["error"] == "start: boom" and "rounds" not in failed


def test_overlap_ratio_uses_the_synchronous_rows_phases():
    sync = {"generate_s": 4.0, "train_s": 5.0, "step_median_s": 9.5}
    assert trl_rl.overlap_ratio({"step_median_s": 5.5}, sync) == pytest.approx(1.1)


def test_quick_is_a_tagged_short_run_and_defaults_alternate_six_rounds():
    a = trl_rl.parse(["--quick"])
    assert a.tag == "quick" and a.stop_spread == 0 and a.overlap
    d = trl_rl.parse([])
    assert (d.steps, d.warmup, d.stop_spread, d.tag) == (6, 1, 10.0, "")


def test_every_rlcustom_role_gets_the_same_threads(tmp_path):
    a = trl_rl.parse(["--threads", "3"])
    a.threads = 3
    sync = trl_rl.rlcustom_overrides("grpo", "/m", a, tmp_path, threads=3)
    ovl = trl_rl.rlcustom_overrides("grpo", "/m", a, tmp_path, threads=1, staleness=1)
    for r in ("rollout", "learner", "reward"):
        assert f"roles.{r}.num_threads=3" in sync and f"roles.{r}.num_threads=1" in ovl
    assert "algo.max_staleness=0" in sync and "algo.max_staleness=1" in ovl
    assert f"steps={a.warmup + a.steps + 1}" in sync  # one more than the rounds: the last one still launches ahead


def test_a_missing_trl_is_that_sides_error_before_it_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(trl_rl, "ROOT", tmp_path)
    a = trl_rl.parse(["--overlap", "off"])
    a.threads = 2
    sides = trl_rl.make_sides("tiny", "/m", "grpo", a, tmp_path)
    assert [s.name for s in sides] == ["rlcustom", f"trl-{trl_rl.TRL_GRPO_VERSION}"]
    assert sides[0].error is None and "make bench-deps" in sides[1].error
    assert sides[0].env["OMP_NUM_THREADS"] == sides[0].env["MKL_NUM_THREADS"] == "2"
