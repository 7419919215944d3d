"""A 3-turn environment through the real pg trainer on Ray: 2 rollout replicas run the episodes (each with
its prompts' rows), a killed replica costs a retry of the step's episodes, the run completes, checkpoints,
and resumes from its checkpoint.

The environment's return is the row's ``k``; with ``rollout.reward: sum`` the reward role adds ``-k`` read
from the sample's own fields and prompt, so every score is 0 exactly when each episode got its own row.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import ray

from rlcustom.config import load_config
from rlcustom.trainers import run_trainer

pytestmark = pytest.mark.usefixtures("local_ray")  # conftest: one real local Ray for the module
# Ray workers inherit the environment of the ray.init that starts them (after collection): the rollout and
# reward actors import `test_env_rollout:ThreeTurnEnv` / `:minus_k` as a user's own module on a cluster
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))


class ThreeTurnEnv:
    """Observations ``turn 1``, ``turn 2``; the third step ends the episode with reward ``row["k"]``."""

    def reset(self, row):
        self.k, self.t = float(row["k"]), 0
        return ""

    def step(self, action):
        self.t += 1
        return f"turn {self.t}", (self.k if self.t == 3 else 0.0), self.t == 3


def minus_k(prompt, completion, *, response_ids=(), k):
    return -float(k) if f"Q{k}:" in prompt else -100.0


def test_three_turn_env_with_two_rollout_replicas_completes_and_resumes(tiny_dir, tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{k}: say something.", "k": k}) + "\n" for k in range(1, 7)))
    out = tmp_path / "run"
    args = ["trainer=pg", f"model.path={tiny_dir}", f"output_dir={out}", f"data.prompts={data}", "data.split=all",
            "seed=1", "sampling.max_new_tokens=4", "sampling.n=2", "algo.prompts_per_step=2", "engine=hf",
            "rollout.env=test_env_rollout:ThreeTurnEnv", "rollout.max_turns=5", "rollout.reward=sum",
            "reward.spec=test_env_rollout:minus_k", "optim.lr=1e-3", "optim.micro_batch_size=4",
            "tracking.mode=offline", "save_every=1", "roles.rollout.replicas=2", "roles.rollout.cpus=0.5",
            "roles.learner.cpus=0.5", "roles.learner.zero_stage=0", "roles.reward.cpus=0.25"]
    from rlcustom.trainers.pg import PGTrainer

    class Killer(PGTrainer):
        def step(self):
            if self.step_idx == 0:
                ray.kill(self.groups["rollout"].actors[1], no_restart=False)  # crash; Ray restarts it
            return super().step()

    first = Killer(load_config(None, args + ["steps=1"])).fit()
    assert any("rollout actor died" in e for e in first["events"])
    hist = first["history"]
    assert len(hist) == 1
    for h in hist:
        assert h["env/turns"] == 3.0 and h["env/failed"] == 0.0 and h["env/truncated"] == 0.0
        assert h["reward/mean"] == 0.0 and h["reward/max"] == 0.0  # every episode saw its own row's k
        assert 1.0 <= h["env/return"] <= 6.0 and h["env/observation_tokens"] > 0
        assert h["rollout/response_len"] == 12.0  # the trained tokens: 3 model turns x 4, no observation tokens
    assert (out / "checkpoints" / "latest").is_file()
    resumed = run_trainer(load_config(None, args + ["steps=2"]))
    assert any("resumed from" in e and "step 1" in e for e in resumed["events"])
    assert [h["step"] for h in resumed["history"]] == [2]
    assert resumed["history"][0]["env/turns"] == 3.0 and resumed["history"][0]["reward/mean"] == 0.0


def test_episodes_generated_ahead_with_max_staleness_one(tiny_dir, tmp_path):
    """max_staleness 1: the batch launched during step k's update is episodes too (3 turns, every row's own k),
    not single answers (in one process: what is checked is what is launched, not the concurrency)."""
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{k}: say something.", "k": k}) + "\n" for k in range(1, 7)))
    res = run_trainer(load_config(None, [
        "trainer=pg", f"model.path={tiny_dir}", f"output_dir={tmp_path / 'run'}", f"data.prompts={data}",
        "data.split=all", "seed=1", "steps=3", "sampling.max_new_tokens=4", "sampling.n=2", "algo.prompts_per_step=2",
        "engine=hf", "rollout.env=test_env_rollout:ThreeTurnEnv", "rollout.max_turns=5", "rollout.reward=sum",
        "reward.spec=test_env_rollout:minus_k", "optim.lr=1e-3", "optim.micro_batch_size=4", "tracking.mode=disabled",
        "algo.max_staleness=1", "algo.is_correction=tis", "roles.learner.zero_stage=0", "cluster.backend=inprocess"]))
    hist = res["history"]
    assert [h["rollout/staleness"] for h in hist] == [0.0, 1.0, 1.0]
    for h in hist:
        assert h["env/turns"] == 3.0 and h["env/failed"] == 0.0
        assert h["reward/mean"] == 0.0  # each episode scored with its own row's k
        assert h["rollout/response_len"] == 12.0  # 3 model turns x 4 trained tokens, observations masked out
