"""``cluster.backend: inprocess``: the same trainer, every role an object in this process, the same numbers as Ray."""
import json

import pytest

from rlcustom.config import load_config
from rlcustom.errors import ConfigError
from rlcustom.runtime.inprocess import InProcessActor, InProcessRef, resolve
from rlcustom.trainers import run_trainer
from rlcustom.trainers.pg import PGTrainer

KEYS = ("reward/mean", "train/pg_loss", "rollout/response_len", "train/grad_norm")


@pytest.fixture
def prompts_file(tmp_path):
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in ["Say hi.", "Name a color.", "Count to three.",
                                                                      "What is rain?"]))
    return p


def cfg_for(model_dir, prompts_file, out, backend, *extra):
    return load_config(None, [
        "trainer=pg", f"model.path={model_dir}", f"output_dir={out}", f"data.prompts={prompts_file}", "data.split=all",
        "steps=3", "seed=1", "sampling.max_new_tokens=16", "sampling.n=2", "algo.prompts_per_step=2",
        "reward.spec=length_tokens", "optim.lr=1e-3", "optim.micro_batch_size=2", "tracking.mode=disabled",
        "algo.check_sync=true", "engine=hf", f"cluster.backend={backend}", *[f"roles.{r}.cpus=0.5" for r in
                                                                           ("learner", "rollout", "reward")], *extra])


@pytest.mark.usefixtures("local_ray")
def test_inprocess_run_equals_the_ray_run(stopping_tiny_dir, prompts_file, tmp_path):
    ray_hist = run_trainer(cfg_for(stopping_tiny_dir, prompts_file, tmp_path / "ray", "ray"))["history"]
    trainer = PGTrainer(cfg_for(stopping_tiny_dir, prompts_file, tmp_path / "ip", "inprocess"))
    hist = trainer.fit()["history"]
    assert len(hist) == len(ray_hist) == 3
    assert len({h["reward/mean"] for h in hist}) > 1  # the run learns something: the comparison is not of constants
    for a, b in zip(ray_hist, hist):
        for k in KEYS:
            assert b[k] == pytest.approx(a[k], rel=1e-6, abs=1e-7), (k, a, b)
        assert b["system/sync_max_logprob_diff"] < 1e-5  # the hand-over reached the engine
    assert (tmp_path / "ip" / "checkpoints" / "latest").is_file()


def test_two_learner_ranks_need_ray(stopping_tiny_dir, prompts_file, tmp_path):
    cfg = cfg_for(stopping_tiny_dir, prompts_file, tmp_path / "x", "inprocess", "roles.learner.replicas=2")
    with pytest.raises(ConfigError, match=r"roles\.learner\.replicas is 2.*cluster\.backend"):
        run_trainer(cfg)


def test_handles_resolve_refs_and_raise_errors_at_get():
    class Obj:
        def add(self, a, b):
            return a + b

        def boom(self):
            raise ValueError("bad reward")

    h = InProcessActor(Obj())
    ref = h.add.remote(1, 2)
    assert resolve(h.add.remote(ref, 10)) == 13  # a ref passed as an argument is its value, as in Ray
    err = h.boom.remote()  # the call itself does not raise: get does
    assert isinstance(err, InProcessRef)
    with pytest.raises(ValueError, match="bad reward"):
        resolve([ref, err])
    assert not hasattr(h, "missing")  # hasattr on a handle answers for the class's methods
