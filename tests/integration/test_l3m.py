"""L3M and its min-max baseline end to end on real Ray (tiny model whose EOS is reachable).

The tiny model answers with ~12-15 of 16 tokens; the constraint asks for 3 <= |y| <= 8 tokens.
Short-run settings (16 steps instead of an epoch): ``ema_smoothing=0.5`` and ``mu_end=1e-2`` so
the EMA of C_i and the barrier weights follow the policy within a few steps (with the paper's 0.1
and 1e-6 the lagging EMA overshoots to 1-token answers on this model), and the task gradient
clipped at 0.2 against 1.0 for the constraint gradient (the separate clipping of Sec. 5.3).
"""
import json

import pytest

from rlcustom.config import load_config
from rlcustom.trainers import run_trainer

LO, HI = 3, 8


# cluster.backend=inprocess: the roles are objects in this process (the same numbers as Ray,
# tests/integration/test_inprocess.py); the Ray runtime itself is tested in test_runtime_pg etc.


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "sft.jsonl"
    qa = [("Say hi.", "Hi there, nice to meet you."), ("Name a color.", "Blue is a color."),
          ("Count to three.", "One, two, three."), ("What is rain?", "Water falling from clouds."),
          ("Tell a story.", "Once a cat sat on a mat."), ("Why is the sky blue?", "Light scatters in the air."),
          ("Name a fruit.", "An apple is a fruit."), ("What is two plus two?", "Two plus two is four.")]
    p.write_text("".join(json.dumps({"prompt": q, "completion": c}) + "\n" for q, c in qa))
    return p


def config(model_dir, data, out, trainer="l3m", extra=()):
    return load_config(None, [
        f"trainer={trainer}", f"model.path={model_dir}", f"output_dir={out}", f"data.prompts={data}",
        "data.split=all", "seed=0", "engine=hf", "sampling.max_new_tokens=16", "sampling.n=4", "steps=16",
        "optim.lr=3e-4", "optim.micro_batch_size=16", "algo.prompts_per_step=4", "algo.task_batch_size=8",
        "algo.eval_rows=8", f"algo.constraints=[{{name: len, reward: length_tokens, lo: {LO}, hi: {HI}}}]",
        "algo.task_max_grad_norm=0.2", "algo.constraint_max_grad_norm=1.0", "algo.ema_smoothing=0.5",
        "roles.learner.zero_stage=0", "roles.learner.cpus=0.5", "roles.rollout.cpus=0.5", "roles.reward.cpus=0.2",
        "tracking.mode=disabled", "cluster.backend=inprocess", *extra])


def mean(xs):
    return sum(xs) / len(xs)


def test_l3m_length_interval_and_task_nll(stopping_tiny_dir, sft_file, tmp_path):
    l3m = run_trainer(config(stopping_tiny_dir, sft_file, tmp_path / "l3m", extra=["algo.mu_end=1e-2"]))["history"]
    kinds = [h["train/task_step"] for h in l3m]
    assert 0 < sum(kinds) < len(kinds)  # the coin chose both kinds of step
    lens = [h["rollout/response_len"] for h in l3m if "rollout/response_len" in h]  # constraint steps only
    assert lens[0] > HI  # starts outside the interval
    assert any(LO <= x <= HI for x in lens[1:]), lens  # the constraint steps bring it in ...
    assert LO <= mean(lens[1:]) <= HI, lens  # ... and on average it stays there
    for h in l3m:
        assert "constraint/mu" in h and "eval/task_nll" in h
        if "rollout/response_len" in h:
            assert {"constraint/len.lo/ema", "constraint/len.hi/ema", "constraint/len.lo/satisfaction",
                    "constraint/len.hi/multiplier"} <= set(h)
            assert h["train/max_grad_norm"] == 1.0
        else:
            assert h["train/max_grad_norm"] == 0.2 and h["train/task_ppl"] > 1.0
    assert l3m[-1]["constraint/mu"] < l3m[0]["constraint/mu"]

    # constraint steps alone, as many as L3M took (same seed, prompts and settings; no task steps between
    # them) -> the task NLL rises more than under L3M, whose task steps hold it back
    n_con = len(lens)
    alone = run_trainer(config(stopping_tiny_dir, sft_file, tmp_path / "alone",
                               extra=["algo.mu_end=1e-2", "algo.task_prob=0", f"steps={n_con}"]))["history"]
    assert len(alone) == n_con and all(h["train/task_step"] == 0.0 for h in alone)
    rise_l3m = l3m[-1]["eval/task_nll"] - l3m[0]["eval/task_nll"]
    rise_alone = alone[-1]["eval/task_nll"] - alone[0]["eval/task_nll"]
    assert rise_l3m < rise_alone, (rise_l3m, rise_alone)


def test_mm_multipliers_stay_non_negative(stopping_tiny_dir, sft_file, tmp_path):
    hist = run_trainer(config(stopping_tiny_dir, sft_file, tmp_path / "mm", trainer="mm",
                              extra=["steps=6", "algo.multiplier_lr=0.1"]))["history"]
    lams = [(h["constraint/len.lo/multiplier"], h["constraint/len.hi/multiplier"]) for h in hist
            if "constraint/len.lo/multiplier" in h]
    assert lams and all(lo >= 0 and hi >= 0 for lo, hi in lams), lams
    assert max(hi for _, hi in lams) > 0  # the violated upper bound gained weight
    assert lams[0][0] == 0.0  # the satisfied lower bound stays at 0 (complementary slackness)
    assert "constraint/mu" not in hist[0]
