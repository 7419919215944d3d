"""PPO, DPO and the reward trainer on tiny models with real Ray: the metric moves the right way."""
import json

import pytest

from rlcustom.config import load_config
from rlcustom.trainers import run_trainer


# cluster.backend=inprocess: the roles are objects in this process (the same numbers as Ray,
# tests/integration/test_inprocess.py); the Ray runtime itself is tested in test_runtime_pg etc.


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    qs = ["Say hi.", "Name a color.", "Count to three.", "What is rain?", "Tell a story.", "Why is the sky blue?",
          "Name a fruit.", "What is two plus two?"]
    p.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in qs))
    return p


def mean(xs):
    return sum(xs) / len(xs)


def test_ppo_rule_reward_rises(stopping_tiny_dir, prompts_file, tmp_path):
    # reward: brevity (-number of tokens); the model must learn to stop earlier
    cfg = load_config(None, [
        "trainer=ppo", f"model.path={stopping_tiny_dir}", f"output_dir={tmp_path}", f"data.prompts={prompts_file}",
        "data.split=all", "steps=10", "seed=0", "engine=hf", "sampling.max_new_tokens=16", "sampling.n=4",
        "algo.prompts_per_step=4", "algo.kl_coef=0.0", "algo.ppo_epochs=2", "optim.lr=1e-2",
        "optim.micro_batch_size=16", "reward.spec=length_tokens", "reward.kwargs.scale=-1",
        "roles.learner.zero_stage=0", "roles.learner.cpus=0.4", "roles.rollout.cpus=0.4", "roles.reward.cpus=0.4",
        "roles.reference.cpus=0.4", "roles.critic.cpus=0.4", "tracking.mode=offline", "cluster.backend=inprocess"])
    hist = run_trainer(cfg)["history"]
    r = [h["reward/mean"] for h in hist]
    assert mean(r[-3:]) > mean(r[:3]) + 2.0, r  # at least 2 tokens shorter
    assert all(h["kl/seq_mean"] >= -1e-6 for h in hist)
    assert (tmp_path / "model" / "config.json").is_file()  # exported for the next stage


def test_dpo_raises_train_preference_accuracy(tiny_dir, tmp_path):
    cfg = load_config(None, [
        "trainer=dpo", f"model.path={tiny_dir}", f"output_dir={tmp_path}", "data.prompts=hh-rlhf",
        "data.split=train", "data.limit=64", "data.max_prompt_tokens=64", "algo.max_completion_tokens=32",
        "algo.pairs_per_step=16", "algo.beta=0.1", "steps=12", "optim.lr=5e-3", "optim.micro_batch_size=8",
        "roles.learner.zero_stage=0", "roles.learner.cpus=1", "roles.reference.cpus=1", "tracking.mode=offline", "cluster.backend=inprocess"])
    hist = run_trainer(cfg)["history"]
    acc = [h["train/reward_accuracy"] for h in hist]
    loss = [h["train/dpo_loss"] for h in hist]
    assert mean(acc[-4:]) > mean(acc[:4]) and mean(acc[-4:]) > 0.6, acc
    assert mean(loss[-4:]) < mean(loss[:4]), loss


def test_reward_trainer_beats_chance(tiny_dir, tmp_path):
    cfg = load_config(None, [
        "trainer=reward", f"model.path={tiny_dir}", f"output_dir={tmp_path}", "data.prompts=hh-rlhf",
        "data.split=train", "data.limit=64", "data.max_prompt_tokens=64", "algo.max_completion_tokens=32",
        "algo.pairs_per_step=16", "steps=12", "optim.lr=5e-3", "optim.micro_batch_size=8",
        "roles.learner.zero_stage=0", "roles.learner.cpus=1", "tracking.mode=offline", "cluster.backend=inprocess"])
    res = run_trainer(cfg)
    acc = [h["train/pair_accuracy"] for h in res["history"]]
    assert mean(acc[-4:]) > 0.5, acc
    assert (tmp_path / "model" / "head.safetensors").is_file()  # a RewardModel directory for reward.spec=model


def test_reward_trainer_backbone_layers(tiny_dir, tmp_path):
    """algo.backbone_layers keeps the first N layers: a smaller reward model, saved and reloaded as such."""
    from rlcustom.models.heads import RewardModel

    cfg = load_config(None, [
        "trainer=reward", f"model.path={tiny_dir}", f"output_dir={tmp_path}", "data.prompts=hh-rlhf",
        "data.limit=8", "data.max_prompt_tokens=32", "algo.max_completion_tokens=16", "algo.pairs_per_step=4",
        "steps=1", "algo.backbone_layers=1", "roles.learner.zero_stage=0", "roles.learner.cpus=1",
        "tracking.mode=offline", "cluster.backend=inprocess"])
    run_trainer(cfg)
    rm = RewardModel.load(tmp_path / "model")
    assert rm.backbone.config.num_hidden_layers == 1


def test_kl_penalty_reaches_group_advantages(stopping_tiny_dir, prompts_file, tmp_path):
    # kl_mode=reward with a group estimator: the KL-shaped return must drive the update, so two seeded runs
    # that differ only in kl_coef take different steps (before the fix the estimator used the raw scores
    # and both runs were identical).
    def run(kl_coef, out):
        cfg = load_config(None, [
            "trainer=ppo", f"model.path={stopping_tiny_dir}", f"output_dir={out}", f"data.prompts={prompts_file}",
            "data.split=all", "steps=3", "seed=0", "engine=hf", "sampling.max_new_tokens=8", "sampling.n=4",
            "algo.prompts_per_step=2", "algo.advantage=rloo", "algo.kl_mode=reward", f"algo.kl_coef={kl_coef}",
            "algo.recompute_logprobs=true", "optim.lr=1e-2", "optim.micro_batch_size=8",
            "reward.spec=length_tokens", "roles.learner.zero_stage=0", "roles.learner.cpus=0.5",
            "roles.rollout.cpus=0.5", "roles.reward.cpus=0.5", "roles.reference.cpus=0.5", "tracking.mode=offline", "cluster.backend=inprocess"])
        return run_trainer(cfg)["history"]

    a, b = run(0.0, tmp_path / "a"), run(2.0, tmp_path / "b")
    assert a[0]["reward/mean"] == b[0]["reward/mean"]  # same seed, same first rollout
    assert a[1]["kl/seq_mean"] > 0  # the policy has left the reference after step 1
    # at step 2 the KL term is non-zero, so the two runs' step-2 updates differ, seen in step 3's samples
    assert a[2]["kl/seq_mean"] != pytest.approx(b[2]["kl/seq_mean"], rel=1e-4, abs=1e-7), (a[2], b[2])
