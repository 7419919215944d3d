"""Every ``algo.objective`` runs through the real ``ppo`` and ``pg`` trainers; DAPO's dynamic sampling keeps
the batch size constant and counts the groups it dropped."""
from __future__ import annotations

import json
import math

import pytest

from rlcustom.config import load_config
from rlcustom.metrics_record import read_metrics
from rlcustom.trainers import run_trainer

# cluster.backend=inprocess: the roles are objects in this process (the same numbers as Ray,
# tests/integration/test_inprocess.py); the Ray runtime itself is tested in test_runtime_pg etc.


@pytest.fixture
def prompts_file(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in
                         ["Say hi.", "Name a color.", "Count to three.", "What is rain?", "Tell a story.", "Why?"]))
    return p


def run(trainer, tiny_dir, prompts_file, out, *extra):
    cfg = load_config(None, [
        f"trainer={trainer}", f"model.path={tiny_dir}", f"output_dir={out}", f"data.prompts={prompts_file}",
        "data.split=all", "steps=2", "seed=3", "sampling.max_new_tokens=6", "sampling.n=2", "engine=hf",
        "algo.prompts_per_step=3", "optim.lr=1e-3", "optim.micro_batch_size=2", "tracking.mode=disabled", "cluster.backend=inprocess",
        "roles.learner.cpus=0.5", "roles.rollout.cpus=0.5", "roles.reward.cpus=0.5", "roles.learner.zero_stage=0",
        *(["roles.reference.cpus=0.5"] if trainer == "ppo" else []), *extra])
    run_trainer(cfg)
    return read_metrics(out)


@pytest.mark.parametrize("trainer,objective", [("ppo", "gspo"), ("ppo", "dr_grpo"), ("ppo", "reinforce_pp"),
                                               ("ppo", "dual_clip"), ("pg", "dapo")])
def test_objective_trains(tiny_dir, prompts_file, tmp_path, trainer, objective):
    extra = ["reward.spec=token_range", "reward.kwargs.hi=2000"]
    if objective == "dual_clip":
        extra.append("algo.advantage=grpo")
    rows = run(trainer, tiny_dir, prompts_file, tmp_path / "run", f"algo.objective={objective}", *extra)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert math.isfinite(r["train/loss"]) and r["train/grad_norm"] > 0 and r["train/rows"] == 6
    if objective == "gspo":
        assert "train/seq_ratio_mean" in rows[0]
    if objective == "dual_clip":
        assert "train/dual_clipfrac" in rows[0]


def test_dapo_dynamic_sampling_constant_batch(tiny_dir, prompts_file, tmp_path):
    """A sparse 0/1 reward makes most groups all-equal: they are dropped, refilled or padded, 6 rows stay 6."""
    rows = run("ppo", tiny_dir, prompts_file, tmp_path / "run", "algo.objective=dapo", "reward.spec=contains",
               "reward.kwargs.text=e", "algo.objective_kwargs.max_resample_rounds=2")
    for r in rows:
        assert r["train/rows"] == 6
        kept, padded = r["rollout/kept_groups"], r["rollout/padded_groups"]
        assert kept + padded == 3 and r["rollout/dropped_groups"] >= padded
    assert sum(r["rollout/dropped_groups"] for r in rows) > 0
