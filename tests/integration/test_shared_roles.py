"""Shared weights on the learner (real Ray, tiny model): a LoRA PPO run whose reference is the learner with its
adapter disabled (``roles.reference.share``) and whose critic is a value head on the policy's backbone
(``algo.critic: shared``); neither has an actor or a model copy of its own."""
import json

import pytest

from rlcustom.config import load_config
from rlcustom.registry import TRAINERS
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


def ppo_cfg(model_dir, prompts_file, out, *extra):
    return load_config(None, [
        "trainer=ppo", f"model.path={model_dir}", f"output_dir={out}", f"data.prompts={prompts_file}",
        "data.split=all", "seed=0", "engine=hf", "sampling.max_new_tokens=16", "sampling.n=4",
        "algo.prompts_per_step=4", "algo.kl_coef=0.0", "optim.micro_batch_size=16", "reward.spec=length_tokens",
        "reward.kwargs.scale=-1", "roles.learner.zero_stage=0", "roles.learner.cpus=0.5", "roles.rollout.cpus=0.5",
        "roles.reward.cpus=0.5", "roles.reference.cpus=0.5", "tracking.mode=disabled", "cluster.backend=inprocess", *extra])


def mean(xs):
    return sum(xs) / len(xs)


def test_lora_ppo_shared_reference_and_critic_learns(stopping_tiny_dir, prompts_file, tmp_path):
    cfg = ppo_cfg(stopping_tiny_dir, prompts_file, tmp_path, "steps=6", "model.lora.r=8", "model.lora.dropout=0.0",
                  "algo.ppo_epochs=2", "optim.lr=3e-2", "optim.pack=true")
    t = TRAINERS.get("ppo")(cfg)
    assert t.shared_roles() == {"reference": "learner"} and t.shared_critic and "critic" not in t.roles_used
    hist = run_trainer(cfg)["history"]
    r = [h["reward/mean"] for h in hist]
    print("reward", r, "kl", [h["kl/seq_mean"] for h in hist], {k: v for k, v in hist[-1].items() if "timing" in k})
    assert mean(r[-2:]) > mean(r[:2]) + 2.0, r  # at least 2 tokens shorter
    # step 1: the policy is the reference (LoRA starts at B = 0), so the reference log-probs from the
    # disabled adapter equal the learner's: KL 0; later the adapter has moved
    assert abs(hist[0]["kl/seq_mean"]) < 1e-5 and hist[-1]["kl/seq_mean"] > 1e-4, [h["kl/seq_mean"] for h in hist]
    assert all(h["value/loss"] > 0 for h in hist) and hist[-1]["value/mean"] != 0.0
