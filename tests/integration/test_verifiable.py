"""Verifiable rewards through the real trainer: a reward reading each record's ``answer`` with 2 reward
replicas, sandboxed code whose hazards score 0 while the run goes on, and the missing-column check."""
from __future__ import annotations

import json
import sys

import pytest

from rlcustom.cli import main

REWARD_MODULE = '''
def answer_probe(prompt, completion, *, response_ids, answer):
    """The record's answer as the reward when it belongs to this prompt ("Q<answer>:"), else -100."""
    return float(answer) if f"Q{answer}:" in prompt else -100.0
'''


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    """A user's reward module, importable by the roles (in this process: cluster.backend=inprocess)."""
    mod = tmp_path / "pymod"
    mod.mkdir()
    (mod / "probe_rewards.py").write_text(REWARD_MODULE)
    monkeypatch.syspath_prepend(str(mod))
    yield
    sys.modules.pop("probe_rewards", None)


def args(tiny_dir, data, out, *extra):
    return ["train", "--", "trainer=pg", f"model.path={tiny_dir}", f"output_dir={out}", f"data.prompts={data}",
            "data.split=all", "steps=2", "seed=1", "sampling.max_new_tokens=4", "sampling.n=2", "engine=hf",
            "tracking.mode=disabled", "optim.micro_batch_size=4", "cluster.num_cpus=2", "roles.learner.cpus=0.5",
            "roles.rollout.cpus=0.5", "roles.reward.cpus=0.5", "roles.learner.zero_stage=0",
            "cluster.backend=inprocess", *extra]  # the roles in this process: what is tested is the reward's fields


def history(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_reward_reads_answer_across_two_reward_replicas(tiny_dir, tmp_path, reward_module):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{k}: say something", "answer": str(k)}) + "\n"
                            for k in range(1, 7)))
    out = tmp_path / "run"
    code = main(args(tiny_dir, data, out, "reward.spec=probe_rewards:answer_probe", "algo.prompts_per_step=6",
                     "roles.reward.replicas=2", "roles.reward.cpus=0.25"))
    assert code == 0
    rows = history(out)
    # every prompt once per step, 2 samples each, each sample scored with its own record's answer
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["reward/mean"] == pytest.approx(3.5) and r["reward/max"] == 6.0


HAZARDS = {
    "timeout": "while True:\n    pass",
    "processes": "import os\nwhile True:\n    os.fork()",
    "memory": "x = bytearray(10 * 1024 ** 3)",
    "network": "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=1)",
}


def test_sandbox_hazards_score_zero_and_the_run_goes_on(tiny_dir, tmp_path):
    """The records' tests themselves are the hazards; whatever the model wrote, each run ends at 0 with its reason."""
    data = tmp_path / "code.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Write code ({k}).", "tests": body}) + "\n"
                            for k, body in HAZARDS.items()))
    out = tmp_path / "run"
    code = main(args(tiny_dir, data, out, "reward.spec=code_tests", "reward.kwargs.timeout_s=1.0",
                     "algo.prompts_per_step=4", "sampling.n=1"))
    assert code == 0
    rows = history(out)
    assert len(rows) == 2
    for r in rows:
        assert r["reward/mean"] == 0.0
        for reason in HAZARDS:
            assert r[f"reward/fail/{reason}"] == pytest.approx(0.25), (reason, r)


def test_missing_column_fails_before_ray_in_one_line(tiny_dir, tmp_path, capsys, monkeypatch):
    from rlcustom.runtime import host

    placed = []
    monkeypatch.setattr(host.RoleHost, "place", lambda self: placed.append(self))  # no roles are placed, Ray or not
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"prompt": "What is 2+2?", "meta": 1}) + "\n")
    code = main(args(tiny_dir, data, tmp_path / "run", "reward.spec=exact_match", "cluster.backend=ray"))
    assert code == 2 and not placed
    (err,) = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert "reward 'exact_match' needs column 'answer'" in err and str(data) in err
