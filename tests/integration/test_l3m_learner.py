"""L3M's alternating objective on an in-process learner (world size 1): the coin, the
``l3m_constraint`` objective, and separate gradient clipping of task and constraint steps
(``LearnerActor.train_step(..., max_grad_norm=...)``, L3M Section 5.3)."""
from __future__ import annotations

import socket

import pytest
import torch

from rlcustom.config import ModelConfig, OptimConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_batch(B: int = 6, P: int = 5, T: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 1000, (B, P + T), generator=g)
    attn = torch.ones(B, P + T, dtype=torch.long)
    rmask = torch.zeros(B, T)
    for i in range(B):
        rl = T - (i % 4)
        ids[i, P + rl:], attn[i, P + rl:] = 2, 0
        rmask[i, :rl] = 1
    lengths = rmask.sum(1)
    # an interval constraint 2 <= |y| <= 4 on the response length: rewards [B, 2] = (|y|, -|y|)
    return {"input_ids": ids, "attention_mask": attn, "response_mask": rmask, "prompt_len": P,
            "constraint_rewards": torch.stack([lengths, -lengths], 1)}


def test_task_coin_is_seeded_and_fair():
    from rlcustom.trainers.l3m import task_coin

    flips = [task_coin(3, t) for t in range(2000)]
    assert flips == [task_coin(3, t) for t in range(2000)]  # deterministic per (seed, step)
    assert flips != [task_coin(4, t) for t in range(2000)]
    assert 0.45 < sum(flips) / len(flips) < 0.55
    assert not any(task_coin(0, t, 0.0) for t in range(100)) and all(task_coin(0, t, 1.0) for t in range(100))


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\(\)` has been overridden")
@pytest.mark.parametrize("stage", [0, 2])
def test_alternating_steps_clip_separately(tiny_dir, stage):
    """Each part's gradient reaches the optimizer with norm min(norm, its own clip); the configured
    optim.max_grad_norm is back in force afterwards."""
    from rlcustom.actors.learner import LearnerActor
    from rlcustom.algos.l3m import barrier_weights, l3m_constraint_loss
    from rlcustom.trainers.l3m import task_coin

    optim = OptimConfig(lr=1e-3, micro_batch_size=4, max_grad_norm=1e6)  # the default: effectively no clipping
    learner = LearnerActor(ModelConfig(path=str(tiny_dir)), optim, zero_stage=stage, master_port=free_port(),
                           seed=0)
    sq: list[float] = []  # squared norms of the gradients the optimizer applies (after clipping)
    opt = learner.base_optimizer
    orig_step = opt.step

    def recording_step(*a, **kw):  # ZeRO-1/2 call it once per parameter group
        sq.append(sum(float(p.grad.double().pow(2).sum()) for g in opt.param_groups for p in g["params"]
                      if p.grad is not None))
        return orig_step(*a, **kw)

    opt.step = recording_step

    def train(*a, **kw) -> tuple[dict, float]:
        sq.clear()
        st = learner.train_step(*a, **kw)
        return st, sum(sq) ** 0.5

    batch = make_batch()
    bounds = [2.0, -4.0]
    weights = barrier_weights(torch.tensor([-1.0, 1.5]), mu=0.1).tolist()  # .hi violated -> large weight
    clips = {"task": 0.3, "constraint": 0.02}
    kinds = []
    for t in range(6):
        kind = "task" if task_coin(0, t) else "constraint"
        kinds.append(kind)
        if kind == "task":
            st, post = train(batch, "sft", max_grad_norm=clips["task"])
        else:
            st, post = train(batch, "l3m_constraint", bounds=bounds, weights=weights,
                             max_grad_norm=clips["constraint"])
        pre = st["train/grad_norm"]
        assert st["train/skipped"] == 0.0 and st["train/max_grad_norm"] == clips[kind]
        assert pre > clips[kind], (kind, pre)  # clipping is active for both parts
        assert post == pytest.approx(clips[kind], rel=1e-3), (kind, pre, post)
    assert set(kinds) == {"task", "constraint"}, kinds

    st, post = train(batch, "sft")  # no per-call clip: optim.max_grad_norm (1e6) again
    assert post == pytest.approx(st["train/grad_norm"], rel=1e-4)

    # the objective's value is the REINFORCE surrogate of Eq. 11 on length-normalised log-likelihoods
    lp = learner.forward_logprobs(batch)
    lbar = lp.sum(1) / batch["response_mask"].sum(1)
    want = float(l3m_constraint_loss(lbar, batch["constraint_rewards"], bounds, weights))
    got = learner.train_step(batch, "l3m_constraint", bounds=bounds, weights=weights,
                             max_grad_norm=1.0)["train/loss"]  # rows-weighted over micro-batches
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)
