"""PPO's critic as 2 data-parallel ZeRO-2 ranks (real Ray, tiny model): the same value loss as one rank.

The rows of each step are split over the critic ranks and the gradient is all-reduced
(:class:`rlcustom.training.TrainingEngine`), so with the same seed the 2-rank run sees
the same rollouts and reports the same token-mean value loss as a 1-rank run: exactly
the same data on step 1 (the summation order differs: float tolerance), and on step 2
after one data-parallel update of the critic (Adam's first update is ~lr * sign(g), so a
critic trained on half the rows, or with a wrong reduction, gives different values).
"""
import json

import pytest

from rlcustom.config import load_config
from rlcustom.trainers import run_trainer

pytestmark = pytest.mark.usefixtures("local_ray")  # conftest: real Ray for this module


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    qs = ["Say hi.", "Name a color.", "Count to three.", "What is rain?"]
    p.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in qs))
    return p


def ppo_history(model_dir, prompts_file, out, critic_replicas: int) -> list[dict]:
    cfg = load_config(None, [
        "trainer=ppo", f"model.path={model_dir}", f"output_dir={out}", f"data.prompts={prompts_file}",
        "data.split=all", "steps=2", "seed=0", "engine=hf", "sampling.max_new_tokens=8", "sampling.n=2",
        "algo.prompts_per_step=4", "algo.advantage=gae", "optim.lr=1e-2", "optim.micro_batch_size=2",
        "reward.spec=length_tokens", "save_every=0", "roles.learner.zero_stage=0",
        f"roles.critic.replicas={critic_replicas}", "roles.critic.zero_stage=2", "roles.critic.cpus=0.25",
        "roles.learner.cpus=0.25", "roles.rollout.cpus=0.25", "roles.reward.cpus=0.25",
        "roles.reference.cpus=0.25", "tracking.mode=disabled",
        # the one-rank reference run in this process (the same numbers as Ray: test_inprocess.py); two ranks need Ray
        f"cluster.backend={'inprocess' if critic_replicas == 1 else 'ray'}"])
    return run_trainer(cfg)["history"]


def test_two_zero2_critic_ranks_match_one(stopping_tiny_dir, prompts_file, tmp_path):
    one = ppo_history(stopping_tiny_dir, prompts_file, tmp_path / "one", 1)
    two = ppo_history(stopping_tiny_dir, prompts_file, tmp_path / "two", 2)
    assert [h["reward/mean"] for h in one] == [h["reward/mean"] for h in two]  # same rollouts
    l1, l2 = [h["value/loss"] for h in one], [h["value/loss"] for h in two]
    assert l1[0] > 0 and l1[0] == pytest.approx(l2[0], rel=1e-6, abs=1e-9), (l1, l2)
    assert l1[1] != l1[0] and l1[1] == pytest.approx(l2[1], rel=1e-4), (l1, l2)
    print(f"value/loss 1 rank {l1}, 2 ranks {l2}")
    # the end-of-run checkpoint holds both critic ranks' optimizer partitions
    assert sorted(p.name for p in (tmp_path / "two").rglob("critic/optim_rank*.pt")) == ["optim_rank0.pt",
                                                                                          "optim_rank1.pt"]
