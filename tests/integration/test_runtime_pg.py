"""The runtime end to end on real Ray (num_cpus=2): 2 DeepSpeed ranks (ZeRO-2, gloo) + rollout + reward.

After every sync the rollout engine's log-probs of a sampled sequence must equal
the learner's. Tolerance 2e-4 (vLLM) / 1e-5 (hf): both are fp32; the hf engine
runs the same transformers code (differences come only from batch shape and the
KV-cache path), vLLM uses its own CPU kernels (different summation order in
attention/matmul), which moves fp32 log-probs by ~1e-5..1e-4 on this model.
"""
import json

import pytest
import ray

from rlcustom.config import load_config
from rlcustom.trainers import run_trainer


pytestmark = pytest.mark.usefixtures("local_ray")  # conftest: real Ray for this module


@pytest.fixture
def prompts_file(tmp_path):
    p = tmp_path / "prompts.jsonl"
    qs = ["Say hi.", "Name a color.", "Count to three.", "What is rain?", "Tell a story.", "Why is the sky blue?"]
    p.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in qs))
    return p


def cfg_for(tiny_dir, prompts_file, out, *extra):
    base = [
        "trainer=pg", f"model.path={tiny_dir}", f"output_dir={out}", f"data.prompts={prompts_file}",
        "data.split=all", "steps=3", "seed=1", "sampling.max_new_tokens=8", "sampling.n=2",
        "algo.prompts_per_step=2", "algo.check_sync=true", "reward.spec=length_tokens",
        "optim.lr=1e-3", "optim.micro_batch_size=2", "tracking.mode=offline",
        "roles.learner.replicas=2", "roles.learner.cpus=0.5", "roles.learner.zero_stage=2",
        "roles.rollout.cpus=0.5", "roles.reward.cpus=0.5", "engine=hf",
    ]
    return load_config(None, base + list(extra))


@pytest.mark.parametrize("engine,tol", [("hf", 1e-5), ("vllm", 2e-4)])
def test_two_rank_learner_syncs_to_rollout(tiny_dir, prompts_file, tmp_path, engine, tol):
    res = run_trainer(cfg_for(tiny_dir, prompts_file, tmp_path / "run", f"engine={engine}"))
    hist = res["history"]
    assert len(hist) == 3
    for h in hist:
        assert h["system/sync_max_logprob_diff"] < tol, h
        assert h["timing/sync_s"] > 0 and h["system/sync_bytes"] > 0
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()


def test_lora_learner_syncs_adapter_only(tiny_dir, prompts_file, tmp_path):
    res = run_trainer(cfg_for(tiny_dir, prompts_file, tmp_path / "run", "model.lora.r=4",
                              "model.lora.dropout=0.0"))
    for h in res["history"]:
        assert h["system/sync_max_logprob_diff"] < 1e-5
        # adapter tensors only: far fewer bytes than the ~3.3M-parameter tiny model (13 MB in fp32)
        assert 0 < h["system/sync_bytes"] < 1e6


def test_killed_rollout_actor_costs_a_retry_not_the_run(tiny_dir, prompts_file, tmp_path):
    from rlcustom.trainers.pg import PGTrainer

    class Killer(PGTrainer):
        def step(self):
            if self.step_idx == 1:
                ray.kill(self.groups["rollout"].actors[0], no_restart=False)  # crash; Ray restarts it
            return super().step()

    res = Killer(cfg_for(tiny_dir, prompts_file, tmp_path / "run", "steps=3")).fit()
    assert len(res["history"]) == 3
    assert any("rollout actor died" in e for e in res["events"])
    assert res["history"][-1]["system/sync_max_logprob_diff"] < 1e-5  # re-synced after the restart


def test_killed_learner_resumes_from_last_checkpoint(tiny_dir, prompts_file, tmp_path):
    from rlcustom.trainers.pg import PGTrainer

    class Killer(PGTrainer):
        killed = False

        def step(self):
            if self.step_idx == 2 and not Killer.killed:
                Killer.killed = True
                ray.kill(self.groups["learner"].actors[1], no_restart=True)  # a DeepSpeed rank dies for good
            return super().step()

    res = Killer(cfg_for(tiny_dir, prompts_file, tmp_path / "run", "steps=4", "save_every=1",
                         "algo.check_sync=false")).fit()
    assert any("restarting all roles from the last checkpoint" in e for e in res["events"])
    assert any("resumed from" in e and "step 2" in e for e in res["events"])
    assert [h["step"] for h in res["history"]][-2:] == [3, 4]


def test_object_store_sync_fallback(tiny_dir, prompts_file, tmp_path):
    res = run_trainer(cfg_for(tiny_dir, prompts_file, tmp_path / "run", "steps=2", "sync=object_store"))
    assert all(h["system/sync_max_logprob_diff"] < 1e-5 for h in res["history"])


def test_stop_and_resume_matches_uninterrupted(tiny_dir, prompts_file, tmp_path):
    keys = ["reward/mean", "train/pg_loss", "rollout/response_len"]
    # in one process (cluster.backend=inprocess): what is compared is the trainer's and checkpoint's state;
    # resuming Ray actors is test_killed_learner_resumes_from_last_checkpoint's
    one = ("roles.learner.replicas=1", "algo.check_sync=false", "cluster.backend=inprocess")
    full = run_trainer(cfg_for(tiny_dir, prompts_file, tmp_path / "a", "steps=4", *one))["history"]
    run_trainer(cfg_for(tiny_dir, prompts_file, tmp_path / "b", "steps=2", *one))
    resumed = run_trainer(cfg_for(tiny_dir, prompts_file, tmp_path / "b", "steps=4", *one))
    assert any("resumed from" in e for e in resumed["events"])
    runs = sorted((tmp_path / "b" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({r.name.rsplit("-", 1)[1] for r in runs}) == 1  # the same W&B run id, resumed
    tail = resumed["history"]
    assert [h["step"] for h in tail] == [3, 4]
    for a, b in zip(full[2:], tail):
        for k in keys:
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-7), (k, a, b)
