"""Faults a long run meets, on real Ray started the way a run starts it (``init_ray``).

The loop's bookkeeping (non-finite steps by source, signals, failed checkpoint writes,
secrets) is checked with a scripted trainer that has no actors (seconds); actor deaths and
a NaN reward are checked on real PPO/PG runs of the tiny model.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import pytest
import ray

from rlcustom.config import ClusterConfig, load_config
from rlcustom.errors import CheckpointError, NonFiniteError
from rlcustom.rewards import NonFiniteRewardError
from rlcustom.runtime.runtime import init_ray
from rlcustom.trainers.base import Interrupted, Trainer
from rlcustom.trainers.checkpoint import CheckpointManager


@pytest.fixture(scope="module", autouse=True)
def ray_as_a_run_starts_it():
    if ray.is_initialized():  # left over by another module: ours must be started by init_ray
        ray.shutdown()
    init_ray(ClusterConfig(num_cpus=2))
    yield
    ray.shutdown()


def test_local_ray_has_no_dashboard_or_job_server():
    node = ray._private.worker.global_worker.node
    assert not node.address_info.get("webui_url")  # no dashboard head, hence no job server, unless configured
    assert len(ray.nodes()) == 1 and ray.cluster_resources()["CPU"] == 2


# --------------------------------------------------------------------------- a trainer without actors

NAN = float("nan")
BAD_STATS = {  # what PG/PPO steps return when the learner skipped (see LearnerActor.train_step)
    "loss": {"train/loss": NAN, "train/nonfinite_loss": 1.0, "train/skipped": 1.0, "train/grad_norm": NAN},
    "grad": {"train/loss": 0.5, "train/nonfinite_loss": 0.0, "train/skipped": 1.0, "train/grad_norm": math.inf},
}


class Scripted(Trainer):
    """A step adds a seeded pseudo-random number to ``total`` (the checkpointed state) unless the
    script makes it bad: ``reward`` raises like the reward actor on NaN, ``loss``/``grad`` return the
    learner's skip stats, ``sigterm``/``sigint`` signal this process mid-step."""

    name = "scripted"
    roles_used = ()
    script: dict = {}

    def build(self) -> None:
        self.total = 0.0

    def step(self) -> dict[str, float]:
        n = self.step_idx + 1
        kind = self.script.get(n, "ok")
        if kind == "reward":
            raise NonFiniteRewardError(f"reward 'nanny' failed on sample 1: returned non-finite value nan "
                                       f"(prompt 'step {n}')")
        if kind in BAD_STATS:
            return dict(BAD_STATS[kind])
        if kind in ("sigterm", "sigint"):
            os.kill(os.getpid(), signal.SIGTERM if kind == "sigterm" else signal.SIGINT)
        self.total += ((self.cfg.seed * 7919 + n * 104729) % 1000) / 1000.0
        return {"train/loss": 1.0 / n, "total": self.total}

    def state_dict(self) -> dict:
        return {"total": self.total}

    def load_state_dict(self, state: dict) -> None:
        self.total = state["total"]


def scripted(tmp_path, script: dict, *extra: str) -> Scripted:
    cfg = load_config(None, [f"output_dir={tmp_path}", "steps=6", "seed=3", "tracking.mode=disabled",
                             "optim.max_consecutive_nonfinite=3", *extra])
    t = Scripted(cfg)
    t.script = script
    return t


def test_nonfinite_reward_loss_grad_are_skipped_and_counted(tmp_path):
    res = scripted(tmp_path, {2: "reward", 3: "loss", 5: "grad"}).fit()
    hist = {h["step"]: h for h in res["history"]}
    assert sorted(hist) == [1, 2, 3, 4, 5, 6]  # the run went on
    assert [hist[s].get("train/skipped", 0.0) for s in range(1, 7)] == [0, 1, 1, 0, 1, 0]
    last = hist[6]
    assert (last["skipped/nonfinite_reward"], last["skipped/nonfinite_loss"], last["skipped/nonfinite_grad"]) == (1, 1, 1)
    assert [hist[s]["skipped/consecutive"] for s in range(1, 7)] == [0, 1, 2, 0, 1, 0]
    assert "total" not in hist[2] and "total" in hist[4]  # bad steps made no update
    ev = " | ".join(res["events"])
    assert "step 2: skipped, no update (non-finite reward 'nanny' failed on sample 1" in ev
    assert "step 3: skipped, no update (non-finite learner loss" in ev
    assert "step 5: skipped, no update (non-finite gradient (train/grad_norm=inf))" in ev
    state = json.loads((CheckpointManager(tmp_path).latest() / "trainer_state.json").read_text())
    assert state["skipped"] == {"reward": 1, "loss": 1, "grad": 1, "metric": 0}


@pytest.mark.parametrize("source, names", [
    ("reward", "reward 'nanny' failed on sample 1: returned non-finite value nan (prompt 'step 4')"),
    ("loss", "learner loss (train/loss=nan)"),
    ("grad", "gradient (train/grad_norm=inf)"),
], ids=["reward", "loss", "grad"])
def test_consecutive_bad_steps_stop_with_a_checkpoint_naming_the_source(tmp_path, source, names):
    with pytest.raises(NonFiniteError) as ei:
        scripted(tmp_path, {2: source, 3: source, 4: source}).fit()
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("3 consecutive steps with non-finite values; last: ") and names in msg
    latest = CheckpointManager(tmp_path).latest()
    assert latest is not None and f"last good state saved at {latest}" in msg
    state = json.loads((latest / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["skipped"][source] == 3
    assert state["trainer"]["total"] == pytest.approx(((3 * 7919 + 104729) % 1000) / 1000.0)  # step 1 only


@pytest.mark.parametrize("sig", ["sigterm", "sigint"])
def test_signal_mid_step_checkpoints_then_resume_matches_uninterrupted(tmp_path, sig):
    full = scripted(tmp_path / "full", {}).fit()["history"]
    prev = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted, match=rf"stopped by {sig.upper()} at step 3; checkpoint .*step_000003"):
        scripted(tmp_path / "cut", {3: sig}).fit()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == prev  # handlers given back
    resumed = scripted(tmp_path / "cut", {}).fit()
    assert any("resumed from" in e and "step 3" in e for e in resumed["events"])
    assert [h["step"] for h in resumed["history"]] == [4, 5, 6]
    assert resumed["history"] == full[3:]


def test_failed_checkpoint_write_keeps_the_previous_one_and_resume_uses_it(tmp_path, monkeypatch):
    full = scripted(tmp_path / "full", {}, "save_every=2").fit()["history"]
    real_save = CheckpointManager.save

    def disk_full_at_4(self, step, state, write_roles):
        def partial(tmp):
            (tmp / "learner").mkdir()
            (tmp / "learner" / "model.safetensors").write_bytes(b"half a tensor")
            if step == 4:
                raise OSError(28, "No space left on device")
        return real_save(self, step, state, partial)

    monkeypatch.setattr(CheckpointManager, "save", disk_full_at_4)
    with pytest.raises(CheckpointError) as ei:
        scripted(tmp_path / "run", {}, "save_every=2").fit()
    prev = tmp_path / "run" / "checkpoints" / "step_000002"
    assert str(ei.value) == (f"checkpoint at step 4 failed (OSError: [Errno 28] No space left on device); "
                             f"the previous checkpoint is intact: {prev}")
    assert CheckpointManager(tmp_path / "run").latest() == prev
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["latest", "step_000002"]
    monkeypatch.setattr(CheckpointManager, "save", real_save)
    resumed = scripted(tmp_path / "run", {}, "save_every=2").fit()
    assert [h["step"] for h in resumed["history"]] == [3, 4, 5, 6]
    assert resumed["history"] == full[2:]


def test_secrets_never_reach_the_checkpoint_wandb_or_log(tmp_path, monkeypatch, capsys):
    from rlcustom.tracking import read_offline_run

    monkeypatch.setenv("RLCUSTOM_TEST_API_KEY", "env-secret-4f9a1c")
    t = scripted(tmp_path, {}, "steps=1", "tracking.mode=offline", "reward.kwargs.api_key=cfg-secret-77d2e0",
                 "tracking.name=run-env-secret-4f9a1c")
    t.fit()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    for _ in range(120):  # W&B's service may still be writing the offline log: wait for its exit record
        if read_offline_run(run_dir)["exit_code"] is not None:
            break
        time.sleep(0.25)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "trainer_state.json" for p in files) and any(p.suffix == ".wandb" for p in files)
    for p in files:
        data = p.read_bytes()
        assert b"cfg-secret-77d2e0" not in data and b"env-secret-4f9a1c" not in data, p
    assert read_offline_run(run_dir)["config"]["reward"]["kwargs"]["api_key"] == "***"
    out = capsys.readouterr()
    assert "secret" not in out.out + out.err


def test_learner_skips_a_nan_gradient_with_a_finite_loss(tiny_dir):
    """sqrt(0 * logp): the loss is 0 but its gradient is inf * 0 = NaN. The real learner reports the
    step as skipped (grad, not loss), leaves the weights alone, and the loop counts it as 'grad'."""
    import socket

    import torch

    from rlcustom.actors.learner import LearnerActor
    from rlcustom.config import ModelConfig, OptimConfig
    from rlcustom.models.forward import response_logprobs
    from rlcustom.registry import OBJECTIVES

    if "test_nan_grad" not in OBJECTIVES:
        @OBJECTIVES.register("test_nan_grad")
        def nan_grad(model, mb, **kw):
            return torch.sqrt((response_logprobs(model, mb) * 0.0).sum()), {}

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    learner = LearnerActor(ModelConfig(path=str(tiny_dir)), OptimConfig(lr=1e-3, micro_batch_size=4),
                           zero_stage=0, master_port=port, seed=0)
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(3, 1000, (2, 8), generator=g), "attention_mask": torch.ones(2, 8, dtype=torch.long),
             "response_mask": torch.ones(2, 4), "prompt_len": 4}
    w0 = {n: t.clone() for n, t in learner.named_weights()}
    st = learner.train_step(batch, "test_nan_grad")
    assert st["train/loss"] == 0.0 and st["train/nonfinite_loss"] == 0.0
    assert st["train/skipped"] == 1.0 and not math.isfinite(st["train/grad_norm"])
    assert all(torch.equal(t, w0[n]) for n, t in learner.named_weights())
    t = scripted(Path("/nonexistent"), {})
    assert t.faults.check_finite(dict(st)) is None and t.faults.skip_counts["grad"] == 1
    assert t.faults.skip_counts["loss"] == 0


# --------------------------------------------------------------------------- real actors die mid-step


PROMPTS = ["Say hi.", "Name a color.", "Count to three.", "What is rain?"]


@pytest.fixture
def prompts_file(tmp_path):
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in PROMPTS))
    return p


def real_cfg(trainer, tiny_dir, prompts_file, out, *extra):
    return load_config(None, [
        f"trainer={trainer}", f"model.path={tiny_dir}", f"output_dir={out}", f"data.prompts={prompts_file}", "data.split=all",
        "seed=1", "sampling.max_new_tokens=4", "sampling.n=2", "algo.prompts_per_step=2",
        "reward.spec=length_tokens", "optim.lr=1e-3", "optim.micro_batch_size=4", "tracking.mode=disabled",
        "engine=hf", "roles.learner.zero_stage=0", "roles.learner.cpus=0.5", "roles.rollout.cpus=0.5",
        "roles.reward.cpus=0.5", "roles.reference.cpus=0.5", *extra])


def test_reward_and_reference_actors_killed_mid_step(tiny_dir, prompts_file, tmp_path):
    """The reward replica dies in step 2 and the reference replica in step 3, each while its call is in
    flight: Ray restarts it, the step runs again (same prompts and seeds), nothing is lost or redone twice.
    (A death that needs a full rebuild and resume is test_runtime_pg::test_killed_learner_resumes_from_last_checkpoint.)"""
    from rlcustom.trainers.ppo import PPOTrainer

    class Killer(PPOTrainer):
        plan = {(2, "reward"), (3, "reference")}
        pids: dict = {}

        def build(self):
            super().build()
            for role in ("reward", "reference"):  # wrap the groups' dispatch: the kill lands mid-call
                self.groups[role].scatter = self.killing(role, self.groups[role].scatter)

        def killing(self, role, scatter):
            def wrapped(method, payload, *args, **kwargs):
                step_role = (self.step_idx + 1, role)
                pid = None
                if step_role in self.plan:  # freeze the process so that the call is surely still in flight
                    self.plan.discard(step_role)
                    pid = self.groups[role].get(self.groups[role].actors[0].ready.remote())["pid"]
                    os.kill(pid, signal.SIGSTOP)
                refs = scatter(method, payload, *args, **kwargs)
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)  # a crash, not a clean exit: Ray restarts the actor
                    Killer.pids[role] = pid
                return refs

            return wrapped

    res = Killer(real_cfg("ppo", tiny_dir, prompts_file, tmp_path / "run", "steps=3", "save_every=1",
                          "algo.advantage=grpo")).fit()
    ev = " | ".join(res["events"])
    assert "step 2: a reward actor died" in ev and "step 3: a reference actor died" in ev, ev
    assert "retrying the step once Ray has restarted it" in ev and "restarting all roles" not in ev
    assert [h["step"] for h in res["history"]] == [1, 2, 3]
    assert all(math.isfinite(h["reward/mean"]) and math.isfinite(h["kl/seq_mean"]) for h in res["history"])
    assert res["history"][-1]["train/skipped"] == 0.0
    assert CheckpointManager(tmp_path / "run").latest().name == "step_000003"


def test_nan_reward_in_a_real_run_skips_then_stops_with_checkpoint(tiny_dir, prompts_file, tmp_path):
    from rlcustom.trainers import run_trainer

    out = tmp_path / "run"
    with pytest.raises(NonFiniteError) as ei:
        run_trainer(real_cfg("pg", tiny_dir, prompts_file, out, "steps=5", "reward.kwargs.scale=.nan",
                             "optim.max_consecutive_nonfinite=2", "cluster.backend=inprocess"))  # trainer logic
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("2 consecutive steps with non-finite values; last: reward "
                                              "'length_tokens' failed on sample 0: returned non-finite value nan")
    assert "(prompt '" in msg and "last good state saved at" in msg
    latest = CheckpointManager(out).latest()
    state = json.loads((latest / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["skipped"]["reward"] == 2
    assert (latest / "learner" / "model.safetensors").is_file()
    counters = json.loads((latest / "learner" / "learner.json").read_text())
    assert counters["steps"] == 0 and counters["updates"] == 0  # the learner never saw the NaN rewards
