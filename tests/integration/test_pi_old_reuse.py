"""``algo.pi_old: auto``: when the update is one optimizer step over the batch, pi_old is the update's own detached
log-probs instead of a learner forward before it (rlcustom.algos.off_policy). Through the real pg/ppo trainers on
the tiny model: the same losses, gradient norms, rewards and off-policy metrics as the explicit forward
(``algo.pi_old: forward``) at every step, with one learner log-prob forward fewer per step; several optimizer
steps per batch (``ppo_epochs: 2``) and a learner with dropout keep the forward."""
from __future__ import annotations

import json

import pytest
import torch

from rlcustom.config import load_config
from rlcustom.trainers.pg import PGTrainer
from rlcustom.trainers.ppo import PPOTrainer

# what must agree at every step (1e-6); the off-policy metrics when the run has them
SAME = ("train/loss", "train/grad_norm", "reward/mean", "train/pg_loss", "train/policy_loss", "train/ratio_mean",
        "train/clipfrac", "train/kl_loss", "kl/seq_mean", "kl/coef", "value/loss", "rollout/logprob_gap_abs",
        "rollout/logprob_kl", "is/weight_mean", "is/weight_max", "is/clipfrac")


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    qs = ["Say hi.", "Name a color.", "Count to three.", "What is rain?", "Tell a story.", "Why is the sky blue?"]
    p.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in qs))
    return p


def counting(cls):
    """``cls`` counting the calls of its (in-process) learner's ``forward_logprobs``."""

    class Counting(cls):
        def wait_roles_ready(self, *a, **kw):
            super().wait_roles_ready(*a, **kw)
            obj, self.lp_calls = self.groups["learner"].actors[0]._obj, 0
            forward = obj.forward_logprobs

            def counted(batch):
                self.lp_calls += 1
                return forward(batch)

            obj.forward_logprobs = counted

    return Counting


def run(cls, model_dir, prompts_file, out, *extra):
    cfg = load_config(None, [
        f"trainer={'pg' if cls is PGTrainer else 'ppo'}", f"model.path={model_dir}", f"output_dir={out}",
        f"data.prompts={prompts_file}", "data.split=all", "steps=3", "seed=1", "engine=hf",
        "sampling.max_new_tokens=16", "sampling.n=4", "algo.prompts_per_step=2", "reward.spec=length_tokens",
        "reward.kwargs.scale=-1", "optim.lr=1e-2", "optim.micro_batch_size=2", "roles.learner.zero_stage=0",
        "tracking.mode=disabled", "cluster.backend=inprocess", *extra])
    t = counting(cls)(cfg)
    return t, t.fit()["history"]


CASES = {  # the trainer and its keys
    "pg grpo staleness 0 tis": (PGTrainer, ["algo.advantage=grpo", "algo.is_correction=tis", "algo.is_cap=1.5"]),
    "pg grpo staleness 1 tis": (PGTrainer, ["algo.advantage=grpo", "algo.max_staleness=1", "algo.is_correction=tis",
                                            "algo.is_cap=1.5"]),
    "pg ppo-clip staleness 1": (PGTrainer, ["algo.advantage=grpo", "algo.max_staleness=1", "algo.objective=ppo"]),
    "ppo gae kl-loss staleness 0": (PPOTrainer, ["algo.ppo_epochs=1", "algo.kl_mode=loss", "algo.kl_coef=0.1"]),
    "ppo grpo kl-loss staleness 1 tis": (PPOTrainer, ["algo.ppo_epochs=1", "algo.advantage=grpo", "algo.kl_mode=loss",
                                                      "algo.kl_target=0.01", "algo.max_staleness=1",
                                                      "algo.is_correction=tis"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_pi_old_from_the_update_equals_the_explicit_forward(stopping_tiny_dir, prompts_file, tmp_path, case):
    cls, extra = CASES[case]
    ref, a = run(cls, stopping_tiny_dir, prompts_file, tmp_path / "forward", "algo.pi_old=forward", *extra)
    new, b = run(cls, stopping_tiny_dir, prompts_file, tmp_path / "auto", *extra)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        keys = [k for k in SAME if k in x]
        assert {"train/loss", "train/grad_norm", "reward/mean"} <= set(keys)
        assert keys == [k for k in SAME if k in y]
        for k in keys:
            assert y[k] == pytest.approx(x[k], abs=1e-6, rel=1e-6), (case, x["step"], k, x[k], y[k])
        assert x["train/pi_old_forward"] == 1.0 and y["train/pi_old_forward"] == 0.0
    assert any(h["train/grad_norm"] > 0 for h in b)  # the weights did move
    if "max_staleness=1" in " ".join(extra):
        assert [h["rollout/staleness"] for h in b] == [0.0, 1.0, 1.0]
    assert ref.lp_calls == 3 and new.lp_calls == 0  # one learner log-prob forward per step, then none


def test_several_optimizer_steps_keep_the_forward(tiny_dir, prompts_file, tmp_path):
    """ppo_epochs: 2 makes two optimizer steps over each batch: the second one's pi_old is not its own forward."""
    t, hist = run(PPOTrainer, tiny_dir, prompts_file, tmp_path / "run", "steps=2", "algo.ppo_epochs=2",
                  "algo.kl_mode=loss", "algo.advantage=grpo")
    assert [h["train/pi_old_forward"] for h in hist] == [1.0, 1.0] and t.lp_calls == 2


def test_a_reward_kl_penalty_keeps_the_forward(tiny_dir, prompts_file, tmp_path):
    """kl_mode: reward shapes the rewards with log pi_old - log pi_ref before the update: it needs the forward."""
    t, hist = run(PPOTrainer, tiny_dir, prompts_file, tmp_path / "run", "steps=1", "algo.ppo_epochs=1",
                  "algo.kl_mode=reward", "algo.kl_coef=0.05", "algo.advantage=grpo")
    assert hist[0]["train/pi_old_forward"] == 1.0 and t.lp_calls == 1


def test_learner_dropout_keeps_the_forward(tiny_dir, prompts_file, tmp_path):
    """LoRA dropout makes the training forward differ from an evaluation forward: pi_old keeps its own forward."""
    t, hist = run(PGTrainer, tiny_dir, prompts_file, tmp_path / "run", "steps=1", "algo.is_correction=tis",
                  "model.lora.r=4", "model.lora.dropout=0.1")
    assert t.learner_dropout == ["model.lora.dropout"]
    assert hist[0]["train/pi_old_forward"] == 1.0 and t.lp_calls == 1


def test_objectives_take_pi_old_from_their_own_forward(tiny):
    """The flag gives the loss, its gradient and the TIS weights of ``logprobs`` = the detached log-probs."""
    from rlcustom.algos.off_policy import PI_OLD_FROM_UPDATE, UPDATE_LOGPROBS
    from rlcustom.models.forward import response_logprobs
    from rlcustom.registry import OBJECTIVES

    import rlcustom.objectives  # noqa: F401 - registers them

    model, _ = tiny
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 1000, (3, 9), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "prompt_len": 4, "response_mask": mask,
             "advantages": torch.tensor([[1.0], [-0.5], [0.25]]).expand(3, 5) * mask}
    with torch.no_grad():
        lp = response_logprobs(model, batch)
    batch["behaviour_logprobs"] = lp + torch.linspace(-0.6, 0.6, lp.numel()).reshape(lp.shape) * mask
    for name, kw in [("reinforce", {"is_cap": 1.2}), ("ppo_clip", {"is_cap": 1.2}), ("policy_clip", {"is_cap": 1.2}),
                     ("gspo", {})]:
        results = []
        for b in (batch | {"logprobs": lp}, batch | {PI_OLD_FROM_UPDATE: True}):
            model.zero_grad()
            loss, stats = OBJECTIVES.get(name)(model, b, **kw)
            loss.backward()
            grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
            results.append((float(loss), grads, stats))
        (l0, g0, s0), (l1, g1, s1) = results
        assert l1 == pytest.approx(l0, abs=1e-7) and l0 != 0.0
        assert all(torch.allclose(x, y, atol=1e-7) for x, y in zip(g0, g1))
        assert UPDATE_LOGPROBS not in s0 and torch.allclose(s1[UPDATE_LOGPROBS], lp, atol=1e-6)
    model.zero_grad()
