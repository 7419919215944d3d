"""``rlcustom bench gpu_check --device cpu --model tiny`` through the real entry point (its own process, as
on the GPU machine): every part runs and passes its correctness condition, without Ray or vLLM."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check_cpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    proc = subprocess.run([sys.executable, "-m", "rlcustom.cli", "bench", "gpu_check", "--device", "cpu",
                           "--model", "tiny", "--repeats", "1", "--trainer-steps", "1", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert out.is_file(), f"no JSON written (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = json.loads(out.read_text())
    data["returncode"], data["stdout"] = proc.returncode, proc.stdout
    return data


def _rows(data: dict, prefix: str) -> list[dict]:
    rows = [r for r in data["rows"] if r["part"].startswith(prefix)]
    assert rows, f"no row {prefix!r} in {[r['part'] for r in data['rows']]}"
    return rows


def test_every_part_passes_and_the_exit_code_says_so(result):
    statuses = {r["part"]: r["status"] for r in result["rows"]}
    bad = {p: s for p, s in statuses.items() if s != "pass" and not s.startswith("not available")}
    assert not bad, f"parts not passing: {bad}\n{result['stdout'][-3000:]}"
    assert result["returncode"] == 0
    assert result["settings"]["device"] == "cpu" and result["settings"]["dtype"] == "float32"
    assert result["versions"]["torch"] and result["device_name"].startswith("cpu")
    for prefix in ("a. learner ZeRO-2 LoRA", "a. learner ZeRO-2 full", "b. hf engine", "c. sync adapter",
                   "c. sync full", "d. VAS", "d. DeRa-LoRA", "d. Q-Adapter", "e. PPO", "e. GRPO", "f. "):
        _rows(result, prefix)
    header = next(line for line in result["stdout"].splitlines() if line.startswith("part "))
    assert header.split() == ["part", "status", "seconds", "metric"]  # the printed table


def test_learner_losses_fall_with_gloo_zero2(result):
    for row in _rows(result, "a. learner"):
        d = row["data"]
        assert d["backend"] == "gloo" and d["zero_stage"] == 2 and d["updates"] == len(d["losses"])
        assert d["losses"][-1] < d["losses"][0]


def test_engine_answers_have_the_fixed_length(result):
    d = _rows(result, "b. hf engine")[0]["data"]
    assert d["lengths"] == [result["settings"]["new_tokens"]] and d["dtype"] == "float32"


def test_sync_lands_bit_for_bit_and_closes_the_logprob_gap(result):
    for row in _rows(result, "c. sync"):
        d = row["data"]
        assert d["ranks"] == 2 and d["weights_max_diff"] == 0.0  # gloo: a real sender/receiver pair
        assert d["gap_mean"] < 1e-4 < d["gap_before_sync"]


def test_decoder_identities_hold_and_their_opposites_do_not(result):
    for row in [r for r in _rows(result, "d. ") if "identity" in r["part"]]:
        d = row["data"]
        assert d["identity_gap"] <= 1e-4 and d["rows_equal_plain"] == result["settings"]["batch"]
        assert d["non_identity_gap"] > 1e-2 and d["ratio_over_plain"] > 0


def test_trainer_steps_are_finite_and_ray_was_not_imported(result):
    for row in _rows(result, "e. "):
        for st in row["data"]["stats"]:
            assert all(v == v and abs(v) != float("inf") for v in st.values())
    assert _rows(result, "ray/vllm")[0]["status"] == "pass"
    assert result["versions"]["ray"] is None and result["versions"]["vllm"] is None


def test_runnable_by_name_but_not_part_of_bench_all():
    from rlcustom import bench_runner as br

    bench = ROOT / "benchmarks"
    assert "gpu_check" in br.benchmark_names(bench)  # `rlcustom bench gpu_check`
    assert "gpu_check" not in br.comparison_benchmarks(bench)  # a pass/fail check, not a comparison
    assert not any(n.startswith("_gpu") for n in br.benchmark_names(bench))  # its helpers are not benchmarks
