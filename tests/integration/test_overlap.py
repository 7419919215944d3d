"""``algo.max_staleness`` through the real pg/ppo trainers on the tiny model (rlcustom.trainers.overlap):
0 is the synchronous loop bit for bit; 1 generates the next step while the learner trains, with TIS."""
from __future__ import annotations

import json

import pytest
import ray
import torch

from rlcustom.config import load_config
from rlcustom.runtime.host import RoleHost
from rlcustom.trainers.pg import PGTrainer
from rlcustom.trainers.pipeline import Step

pytestmark = pytest.mark.usefixtures("local_ray")


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    qs = ["Say hi.", "Name a color.", "Count to three.", "What is rain?", "Tell a story.", "Why is the sky blue?",
          "Name a fruit.", "What is two plus two?"]
    p.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in qs))
    return p


def cfg_for(model_dir, prompts_file, out, *extra):
    return load_config(None, [
        "trainer=pg", f"model.path={model_dir}", f"output_dir={out}", f"data.prompts={prompts_file}",
        "data.split=all", "steps=3", "seed=1", "engine=hf", "sampling.max_new_tokens=8", "sampling.n=2",
        "algo.prompts_per_step=2", "reward.spec=length_tokens", "optim.lr=1e-3", "optim.micro_batch_size=4",
        "roles.learner.zero_stage=0", "roles.learner.cpus=0.5", "roles.rollout.cpus=0.5", "roles.reward.cpus=0.5",
        "tracking.mode=disabled", *extra])


class LegacyPG(PGTrainer):
    """The reference: the synchronous step as ``PipelineTrainer`` ran it before ``algo.max_staleness`` existed
    (commit d03fe2e), written out: take prompts, generate seeded by step, score, advantages, update, sync."""

    def step(self):
        s = Step()
        with self.timer("generate"):
            s.prompts = self.sampler.take(self.cfg.algo.prompts_per_step)
            s.ro = self.rollouts(s.prompts, self.cfg.sampling.params(seed=self.cfg.seed * 100003 + self.step_idx))
            s.batch = s.ro.padded(self.pad_id)
        with self.timer("score"):
            self.score(s)
        self.filter(s)
        self.advantages(s)
        with self.timer("train"):
            self.update(s)
        with self.timer("sync"):
            s.stats |= RoleHost.sync_weights(self)
        return self.metrics(s) | self.timer.summary()


class NoOverlapPG(PGTrainer):
    """``max_staleness: 0`` must never reach the overlap machinery."""

    def launch_ahead(self):
        raise AssertionError("launch_ahead with max_staleness 0")

    def take_in_flight(self):
        raise AssertionError("take_in_flight with max_staleness 0")

    def wait_in_flight(self):
        raise AssertionError("wait_in_flight with max_staleness 0")


def exported(out):
    from safetensors.torch import load_file

    return {k: v for f in sorted((out / "model").glob("*.safetensors")) for k, v in load_file(f).items()}


def test_staleness_zero_is_the_synchronous_loop_bit_for_bit(stopping_tiny_dir, prompts_file, tmp_path):
    extra = ("sampling.max_new_tokens=12", "optim.lr=1e-2", "reward.kwargs.scale=-1",  # lengths vary: updates do
             "cluster.backend=inprocess")  # nothing runs concurrently at staleness 0: the roles live here
    ref = LegacyPG(cfg_for(stopping_tiny_dir, prompts_file, tmp_path / "ref", *extra))
    new = NoOverlapPG(cfg_for(stopping_tiny_dir, prompts_file, tmp_path / "new", "algo.max_staleness=0", *extra))
    a, b = ref.fit()["history"], new.fit()["history"]
    assert len(a) == len(b) == 3
    timing = ("timing/", "train/step_seconds")
    for x, y in zip(a, b):
        keys = {k for k in x if not k.startswith(timing)}
        assert keys == {k for k in y if not k.startswith(timing)}
        assert {k: x[k] for k in keys} == {k: y[k] for k in keys}  # exact: the same floats
        assert "rollout/staleness" not in y
    assert any(h["train/grad_norm"] > 0 for h in a)  # the weights did move
    wa, wb = exported(tmp_path / "ref"), exported(tmp_path / "new")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert ref.sampler.position == new.sampler.position == 3 * 2


def test_staleness_one_overlaps_learns_and_retries_a_crashed_rollout(stopping_tiny_dir, prompts_file, tmp_path):
    """pg with max_staleness 1 and TIS on a brevity reward (-tokens); in step 2 the rollout replica crashes
    while it generates step 3's batch: that batch is generated again (after a re-sync) when step 3 comes."""

    class Crash(PGTrainer):
        def launch_ahead(self):
            super().launch_ahead()
            if self.step_idx == 1:  # step 3's generation is in flight on this replica
                ray.kill(self.groups["rollout"].actors[0], no_restart=False)

    t = Crash(cfg_for(stopping_tiny_dir, prompts_file, tmp_path / "run", "steps=8", "seed=0",
                      "sampling.max_new_tokens=16", "sampling.n=4", "algo.prompts_per_step=4", "optim.lr=1e-3",
                      "optim.micro_batch_size=16", "reward.kwargs.scale=-1", "algo.max_staleness=1",
                      "algo.is_correction=tis", "algo.is_cap=2.0", "algo.advantage=grpo", "algo.check_sync=true"))
    res = t.fit()
    hist = res["history"]
    assert any("rollout actor died during the overlap" in e for e in res["events"]), res["events"]
    # step 1: nothing launched before it; step 3: generated again with the current weights; else one update old
    assert [h["rollout/staleness"] for h in hist] == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    for h in hist:
        assert 0 < h["is/weight_mean"] <= h["is/weight_max"] <= 2.0 and 0 <= h["is/clipfrac"] <= 1
        assert h["rollout/logprob_gap_abs"] >= 0 and h["rollout/logprob_kl"] >= -1e-6
        assert h["timing/step_s"] > 0 and "timing/rollout_wait_s" in h
        assert h["system/sync_max_logprob_diff"] < 1e-5  # every sync reached the (restarted) engine
    assert hist[0]["rollout/logprob_gap_abs"] < 1e-4  # the engine held the learner's own weights
    assert hist[1]["rollout/logprob_gap_abs"] > 1e-3  # step 2's batch: the weights before the first update
    r = [h["reward/mean"] for h in hist]
    assert sum(r[-3:]) / 3 > sum(r[:3]) / 3 + 1.0, r  # at least a token shorter
    assert t.sampler.position == 8 * 4 and not t.in_flight  # nothing launched past the last step


def test_ppo_staleness_one_recovery_discards_in_flight(tiny_dir, prompts_file, tmp_path):
    """ppo with max_staleness 1 and TIS; the learner dies in step 3: what was in flight is dropped, the run
    restarts from the step-2 checkpoint (which says one batch was in flight) and draws those prompts again."""
    from rlcustom.trainers.ppo import PPOTrainer

    class Killer(PPOTrainer):
        killed = False

        def update(self, s):
            if self.step_idx == 2 and not Killer.killed:
                Killer.killed = True
                ray.kill(self.groups["learner"].actors[0], no_restart=True)
            super().update(s)

    t = Killer(cfg_for(tiny_dir, prompts_file, tmp_path / "run", "trainer=ppo", "steps=4", "save_every=1",
                       "algo.max_staleness=1", "algo.is_correction=tis", "algo.advantage=grpo",
                       "roles.reference.cpus=0.5"))
    res = t.fit()
    ev, hist = res["events"], res["history"]
    assert any("discarded 1 in-flight rollout batch(es)" in e for e in ev), ev
    assert any("resume: discarded the 1 rollout batch(es) in flight at the checkpoint" in e
               and "position 4" in e for e in ev), ev  # steps 1-2 used 2 x 2 prompts
    assert [h["step"] for h in hist][-2:] == [3, 4]
    assert [h["rollout/staleness"] for h in hist[-2:]] == [0.0, 1.0]  # nothing in flight after the restart
    assert all("is/weight_max" in h and "train/clipfrac" in h for h in hist)
    assert t.sampler.position == 4 * 2
