"""The rlcustom command line as a user runs it: output files, one-line errors, exit codes."""
import json
import statistics
import subprocess
import sys

import pytest

from rlcustom.cli import main

RLC = [sys.executable, "-m", "rlcustom.cli"]


@pytest.fixture
def prompts(tmp_path):
    p = tmp_path / "prompts.jsonl"
    p.write_text(json.dumps({"prompt": "Say hi."}) + "\n" + json.dumps({"prompt": "Name a color."}) + "\n")
    return p


def test_generate_writes_jsonl(tiny_dir, prompts, tmp_path, capsys):
    out = tmp_path / "gens.jsonl"
    rc = main(["generate", f"model.path={tiny_dir}", f"data.prompts={prompts}", "data.split=all", "engine=hf",
               "--max-new-tokens", "5", "-n", "2", "--out", str(out), f"output_dir={tmp_path / 'run'}",
               "tracking.mode=disabled"])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and {r["prompt"] for r in rows} == {"Say hi.", "Name a color."}
    assert all(1 <= r["num_tokens"] <= 5 and r["finish_reason"] in ("stop", "length") for r in rows)
    assert f"output: {out}" in capsys.readouterr().out


def test_unknown_key_is_one_line_exit_2(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("sampling:\n  max_new_tokns: 5\n")
    r = subprocess.run(RLC + ["generate", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 2
    lines = [line for line in r.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and str(cfg) in lines[0] and "did you mean 'sampling.max_new_tokens'" in lines[0]


def test_corrupt_jsonl_names_file_and_line(tiny_dir, tmp_path):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": "ok2"}\n{"prompt": broken\n')
    r = subprocess.run(RLC + ["generate", f"model.path={tiny_dir}", f"data.prompts={bad}", "data.split=all",
                              "engine=hf", "tracking.mode=disabled", f"output_dir={tmp_path / 'run'}"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    lines = [line for line in r.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and f"{bad}:3:" in lines[0], r.stderr


def test_every_subcommand_has_help():
    for cmd in (["generate"], ["train"], ["demo"], ["prepare-model"], ["submit"], ["jobs"], ["jobs", "logs"],
                ["eval"], ["eval", "dera"], ["eval", "qadapter"], ["plot"], ["bench"]):
        r = subprocess.run(RLC + [*cmd, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and f"usage: rlcustom {' '.join(cmd)}" in r.stdout.lower(), cmd


def test_eval_writes_metrics_json(tiny_dir, tmp_path):
    out = tmp_path / "eval.json"
    rc = main(["eval", f"model.path={tiny_dir}", "sampling.max_new_tokens=4", "reward.spec=length_tokens",
               f"output_dir={tmp_path}", "--limit", "4", "--pairs", "4", "--out", str(out)])
    assert rc == 0
    m = json.loads(out.read_text())["metrics"]
    assert m["kl"] == pytest.approx(0.0, abs=1e-5)  # the policy is its own reference
    assert 1 <= m["reward"] <= 4 and m["pairs"] == 4 and 0 <= m["pair_accuracy"] <= 1
    assert m["ppl"] > 1000  # a random tiny model is near-uniform over a 49k vocabulary
    rs = json.loads(out.read_text())["per_sample"]["reward"]
    assert len(rs) == m["samples"] and sum(rs) / len(rs) == pytest.approx(m["reward"])
    assert m["reward_se"] == pytest.approx(statistics.stdev(rs) / len(rs) ** 0.5)
