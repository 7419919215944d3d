"""L3M (Dhillon et al., ICLR 2025): fine-tuning on a task under custom expectation constraints.

Problem (Eqs. 3-5): minimise the task NLL ``L(theta)`` subject to ``E_{y~pi}[r_i(y|x)] >= b_i``,
i.e. ``C_i(theta) = E[b_i - r_i] <= 0``; an interval ``lo <= r <= hi`` is two constraints
(Section 6.2). One step of trainer ``l3m`` (Sections 5.1-5.3)::

    mu  <- mu_start * (mu_end / mu_start) ** (t / T)                 # exponential decay, Sec. 5.1 / App. A
    if coin(seed, t) < task_prob:                                   # fair coin, Sec. 5.3
        theta <- theta - step(clip_task(dL))                        # task step: SFT NLL
    else:                                                           # constraint step
        y ~ pi(.|x);  r_i(y|x) for every constraint
        C_ema <- (1 - 0.1) C_ema + 0.1 mean_b(b_i - r_i)            # denominator of Eq. 11 (EMA, Sec. 5.3)
        w_i = mu / (k max(-C_ema_i, mu^2))                          # Eq. 11 weights = implied multipliers (Sec. 5.2)
        theta <- theta - step(clip_con(sum_i w_i dC_i))             # dC_i by REINFORCE on length-normalised
                                                                    # log-likelihoods (Eq. 12, Sec. 5.3)

The two gradients are clipped separately (``task_max_grad_norm``, ``constraint_max_grad_norm``)
through the learner's per-call ``max_grad_norm``.

Trainer ``mm`` is the paper's min-max baseline (Section 6.3; Moskovitz et al. 2024, Dai et al. 2024):
the same task loss (the task NLL directly, no reference model, "as is done by L3Ms as well"), the
same coin and separate clipping, but the constraint step descends ``sum_i lambda_i dC_i`` (the
Lagrangian of Eq. 8) with multipliers ``lambda_i >= 0`` learned by projected gradient ascent,
``lambda_i <- max(0, lambda_i + multiplier_lr * C_i)`` on the mini-batch estimate of ``C_i``.
The paper does not say whether its MM alternates; sharing the coin keeps the comparison to the
multipliers alone.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from rlcustom.algos.l3m import (ConstraintEMA, barrier_weights, constraint_values, interval_constraint, mu_schedule,
                                update_multipliers)
from rlcustom.config import bounds, non_negative, positive, register_section, unit_interval
from rlcustom.trainers.base import register_trainer
from rlcustom.trainers.offline import DatasetTrainer, encode_pairs
from rlcustom.trainers.pipeline import PipelineTrainer, Step
from rlcustom.trainers.roles import _threads, build_learner, build_rollout, first_last

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ConstraintSpec:
    """One constrained reward: ``lo <= E[r] <= hi`` (either end may be left out)."""

    name: str = "length"  # metric name: constraint/<name>/...; an interval logs <name>.lo and <name>.hi
    reward: str = "length_tokens"  # registered Python reward, "module:function", "model", "loglik" or "http"
    kwargs: dict[str, Any] = field(default_factory=dict)  # reward function arguments (or model-reward options)
    model_path: str | None = None  # reward model (reward: model) or LM (reward: loglik)
    url: str | None = None  # endpoint (reward: http)
    lo: float | None = None  # lower bound b_i: E[r] >= lo
    hi: float | None = None  # upper bound: E[r] <= hi, i.e. E[-r] >= -hi

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"constraint name {self.name!r}: use letters, digits, '_', '.', '-'")
        if self.lo is None and self.hi is None:
            raise ValueError(f"constraint {self.name!r}: set lo, hi or both")
        if self.lo is not None and self.hi is not None and self.lo > self.hi:
            raise ValueError(f"constraint {self.name!r}: empty interval lo={self.lo} > hi={self.hi}")

    def parts(self) -> list[tuple[str, float, float]]:
        """``(name, sign, bound)`` per scalar constraint ``sign * r >= bound``."""
        if self.lo is not None and self.hi is not None:
            (s1, b1), (s2, b2) = interval_constraint(self.lo, self.hi)
            return [(f"{self.name}.lo", s1, b1), (f"{self.name}.hi", s2, b2)]
        return [(self.name, 1.0, float(self.lo))] if self.lo is not None else [(self.name, -1.0, -float(self.hi))]

    def scorer(self) -> dict:
        return {"spec": self.reward, "kwargs": dict(self.kwargs), "model_path": self.model_path, "url": self.url}


@dataclass(frozen=True)
class ConstrainedConfig:
    constraints: tuple[ConstraintSpec, ...] = (  # the constrained rewards: a list of {name, reward, lo, hi, ...}
        ConstraintSpec(name="length", lo=20.0, hi=40.0),
    )
    prompts_per_step: int = field(default=8, metadata=positive)  # rollout prompts per constraint step (x sampling.n)
    task_batch_size: int = field(default=8, metadata=positive)  # SFT rows per task step
    max_completion_tokens: int = field(default=256, metadata=positive)  # SFT completions truncated to this
    task_prob: float = field(default=0.5, metadata=unit_interval)  # P(task step); 0.5 = the paper's fair coin
    task_max_grad_norm: float = field(default=1.0, metadata=non_negative)  # clip of the task gradient (0: none)
    constraint_max_grad_norm: float = field(default=1.0, metadata=non_negative)  # clip of the constraint gradient
    ema_smoothing: float = field(default=0.1, metadata=bounds(gt=0, le=1))  # weight of new C_i
    loo_baseline: bool = False  # leave-one-out baseline on the REINFORCE coefficients (not in the paper)
    eval_rows: int = field(default=16, metadata=non_negative)  # fixed task rows for eval/task_nll (0: off)
    eval_every: int = field(default=1, metadata=positive)  # evaluate the task NLL every N steps (and the last)

    def __post_init__(self) -> None:
        if not self.constraints:
            raise ValueError("constraints: list at least one constraint")
        names = [n for c in self.constraints for n, _, _ in c.parts()]
        if len(set(names)) != len(names):
            raise ValueError(f"constraints: duplicate names in {names}")


@register_section("l3m")
@dataclass(frozen=True)
class L3MConfig(ConstrainedConfig):
    mu_start: float = field(default=1.0, metadata=positive)  # barrier parameter at step 0 (App. A: 1)
    mu_end: float = field(default=1e-6, metadata=positive)  # ... at the last step (App. A: 1e-6)


@register_section("mm")
@dataclass(frozen=True)
class MMConfig(ConstrainedConfig):
    multiplier_lr: float = field(default=0.1, metadata=positive)  # step size of the multipliers' ascent
    multiplier_init: float = field(default=0.0, metadata=non_negative)  # initial lambda_i


def constraint_table(constraints: tuple[ConstraintSpec, ...]) -> tuple[list[dict], list[str], torch.Tensor,
                                                                    torch.Tensor, torch.Tensor]:
    """The k scalar constraints ``sign_i * r_{s(i)} >= b_i`` over the distinct reward scorers ``s``: returns
    ``(scorers, names [k], spec_of [k] (index into scorers), signs [k], bounds [k])``. Constraints of different
    rewards (a length interval beside a sentiment bound) each get their own scorer; two constraints on the
    same reward share one (it scores each rollout once)."""
    scorers: list[dict] = []
    names, spec_of, signs, bounds = [], [], [], []
    for c in constraints:
        if c.scorer() not in scorers:
            scorers.append(c.scorer())
        for name, sign, bound in c.parts():
            names.append(name)
            spec_of.append(scorers.index(c.scorer()))
            signs.append(sign)
            bounds.append(bound)
    return scorers, names, torch.tensor(spec_of), torch.tensor(signs), torch.tensor(bounds)


def signed_rewards(scores: torch.Tensor, spec_of: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """``[B, n_scorers]`` raw rewards -> ``[B, k]`` signed constraint rewards ``sign_i * r_{s(i)}``."""
    return scores[:, spec_of] * signs


def task_coin(seed: int, step: int, task_prob: float = 0.5) -> bool:
    """True: step ``step`` is a task step, else a constraint step (L3M Sec. 5.3); a function of (seed, step) only,
    so a resumed run flips the same coins."""
    return random.Random(seed * 1_000_003 + step).random() < task_prob


# --------------------------------------------------------------------------- trainers


@register_trainer("l3m")
class L3MTrainer(PipelineTrainer, DatasetTrainer):
    """Coin-flip alternation of task steps (SFT NLL) and barrier-weighted constraint steps (Eq. 11); a constraint
    step is the RL pipeline (generate -> score -> advantages: the Eq. 11 weights -> update; the sync comes first)."""

    roles_used = ("rollout", "learner", "reward")

    def build(self) -> None:
        from rlcustom.actors.constraint_reward import ConstraintRewardActor
        from rlcustom.data.loaders import load_sft

        a, d = self.cfg.algo, self.cfg.data
        build_rollout(self)
        build_learner(self)
        scorers, self.names, self.spec_of, self.signs, self.bounds = constraint_table(a.constraints)
        self.add_role("reward", ConstraintRewardActor, lambda i: (
            (scorers,), {"tokenizer_path": self.cfg.model.path, "seed": self.cfg.seed, "rank": i,
                         "num_threads": _threads(self, "reward")}))
        self.load_rows(list(load_sft(d.prompts, split=d.split, val_fraction=d.val_fraction, seed=d.split_seed,
                                     on_bad_record=d.on_bad_record, limit=d.limit)))
        self.ema = ConstraintEMA(len(self.names), smoothing=a.ema_smoothing)
        self.task_steps = 0  # task batches drawn so far (the position in the task data)
        self.dirty = True  # learner changed since the last weight sync
        self.init_multipliers()

    # ------------------------------------------------------------------ the algorithm step
    def step(self) -> dict[str, float]:
        a = self.cfg.algo
        task = task_coin(self.cfg.seed, self.step_idx, a.task_prob)  # the fair coin of Sec. 5.3
        stats = self.task_step() if task else self.constraint_step()
        self.dirty = True
        stats["train/task_step"] = float(task)
        if self.mu() is not None:
            stats["constraint/mu"] = self.mu()
        if self.ema.initialized:
            for name, c, lam in zip(self.names, self.ema.value.tolist(), self.multipliers(self.ema.value).tolist()):
                stats[f"constraint/{name}/ema"] = c
                stats[f"constraint/{name}/multiplier"] = lam
        if a.eval_rows and (self.step_idx % a.eval_every == 0 or self.step_idx + 1 == self.cfg.steps):
            stats |= self.eval_task()
        return stats | self.timer.summary()

    def task_step(self) -> dict[str, float]:
        """Minimise the task NLL L(theta) (Eq. 3), clipped on its own (Sec. 5.3)."""
        a = self.cfg.algo
        rows = self.task_rows(a.task_batch_size)
        batch = encode_pairs(self.tok, [r["prompt_text"] for r in rows], [r["completion"] for r in rows],
                             self.cfg.data.max_prompt_tokens, a.max_completion_tokens).padded(self.pad_id)
        with self.timer("train"), self.device_for_training():
            stats = self.learner_train(batch, "sft", max_grad_norm=a.task_max_grad_norm)
        self.task_steps += 1
        self.sampler.skip(a.prompts_per_step)  # the prompt stream moves every step: constraint step t reads t*n
        return stats | {"train/task_ppl": math.exp(min(stats["train/nll"], 50.0)),
                        "train/task_grad_norm": stats["train/grad_norm"]}

    def constraint_step(self) -> dict[str, float]:
        """Descend sum_i w_i dC_i (Eqs. 11-12) on a fresh rollout, clipped on its own (Sec. 5.3)."""
        s = Step()
        if self.dirty:  # the learner changed since the engines last got its weights
            with self.timer("sync"):
                s.stats |= self.sync_weights()
            self.dirty = False
        return self.metrics(self.run_stages(s))

    def advantages(self, s: Step) -> None:
        """Monte-Carlo C_i (Eq. 5), its EMA (Sec. 5.3) and the constraint weights; ``s.scores`` is [B, n_scorers]."""
        s.rewards = signed_rewards(s.scores, self.spec_of, self.signs)  # [B, k]: sign_i * r_i >= b_i
        s.c_batch = constraint_values(s.rewards, self.bounds)
        s.weights = self.constraint_weights(s.c_batch, self.ema.update(s.c_batch))
        s.batch["constraint_rewards"] = s.rewards

    def update(self, s: Step) -> None:
        a = self.cfg.algo
        s.stats |= self.learner_train(s.batch, "l3m_constraint", bounds=self.bounds.tolist(),
                                      weights=s.weights.tolist(), loo_baseline=a.loo_baseline,
                                      max_grad_norm=a.constraint_max_grad_norm)

    def sync(self, s: Step) -> None:
        """Lazily, before the next rollout (a task step may come first)."""

    def metrics(self, s: Step) -> dict[str, float]:
        stats, raw, ro = s.stats, s.scores, s.ro
        satisfied = (s.rewards >= self.bounds).float().mean(0)
        for i, name in enumerate(self.names):
            stats[f"constraint/{name}/value"] = float(s.c_batch[i])
            stats[f"constraint/{name}/satisfaction"] = float(satisfied[i])
        for j, name in enumerate(self.scorers_used()):
            stats[f"reward/{name}/mean"] = float(raw[:, j].mean())
        stats["train/constraint_grad_norm"] = stats["train/grad_norm"]
        stats["rollout/response_len"] = float(s.batch["response_mask"].sum(1).mean())
        if ro.texts and self.step_idx % self.cfg.tracking.samples_every == 0:  # a W&B table of this rollout
            self.samples = (self.tok.batch_decode(ro.prompt_ids), list(ro.texts), raw[:, 0].tolist())
        return stats

    # ------------------------------------------------------------------ L3M specifics (mm overrides these)
    def mu(self) -> float | None:
        a = self.cfg.algo
        return mu_schedule(self.step_idx, self.cfg.steps, a.mu_start, a.mu_end)

    def init_multipliers(self) -> None:
        """L3M has no Lagrange multipliers (the log-barrier replaces them); the min-max baseline sets lambda."""

    def constraint_weights(self, c_batch: torch.Tensor, ema: torch.Tensor) -> torch.Tensor:
        """Eq. 11: w_i = mu / (k max(-C_i, mu^2)) at the EMA of C_i."""
        return barrier_weights(ema, self.mu())

    def multipliers(self, ema: torch.Tensor) -> torch.Tensor:
        """The implied Lagrange multipliers (Sec. 5.2), equal to the Eq. 11 weights."""
        return barrier_weights(ema, self.mu())

    # ------------------------------------------------------------------ helpers
    def scorers_used(self) -> list[str]:
        out: list[dict] = []
        names = []
        for c in self.cfg.algo.constraints:
            if c.scorer() not in out:
                out.append(c.scorer())
                names.append(c.name)
        return names

    def task_rows(self, n: int) -> list[dict]:
        """The next n task rows in a seeded per-epoch order (position = task steps so far)."""
        from rlcustom.trainers.offline import epoch_rows

        return epoch_rows(self.rows, self.task_steps * n, n, self.cfg.seed)

    def eval_task(self) -> dict[str, float]:
        """Task NLL (token mean) and perplexity on a fixed set of task rows, without a gradient."""
        a = self.cfg.algo
        if getattr(self, "_eval_batch", None) is None:
            order = list(range(len(self.rows)))
            random.Random(self.cfg.seed + 17).shuffle(order)
            rows = [self.rows[i] for i in order[: a.eval_rows]]
            self._eval_batch = encode_pairs(self.tok, [r["prompt_text"] for r in rows],
                                            [r["completion"] for r in rows], self.cfg.data.max_prompt_tokens,
                                            a.max_completion_tokens).padded(self.pad_id)
        lg, b = self.groups["learner"], self._eval_batch
        ranks = lg.actors if self.role_cfg("learner").zero_stage == 3 else lg.actors[:1]  # ZeRO-3: collective
        with self.timer("eval"):
            lp = lg.get([r.forward_logprobs.remote(b) for r in ranks], "task eval")[0]
        nll = float(-(lp * b["response_mask"]).sum() / b["response_mask"].sum().clamp(min=1))
        return {"eval/task_nll": nll, "eval/task_ppl": math.exp(min(nll, 50.0))}

    def state_dict(self) -> dict[str, Any]:
        st = self.ema.state_dict()
        return {"ema": None if st["ema"] is None else st["ema"].tolist(), "ema_updates": st["num_updates"],
                "task_steps": self.task_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.ema.load_state_dict({"k": self.ema.k, "smoothing": self.ema.smoothing,
                                  "ema": None if state["ema"] is None else torch.tensor(state["ema"]),
                                  "num_updates": state["ema_updates"]})
        self.task_steps = int(state["task_steps"])

    def summary(self, history: list[dict]) -> list[str]:
        lines = [first_last(history, "rollout/response_len"), first_last(history, "eval/task_nll")]
        return lines + [first_last(history, f"constraint/{n}/satisfaction") for n in self.names]


@register_trainer("mm")
class MMTrainer(L3MTrainer):
    """Min-max baseline (Sec. 6.3): Lagrangian (Eq. 8) descent in theta, projected ascent in lambda >= 0."""

    def mu(self) -> None:
        return None  # no barrier

    def init_multipliers(self) -> None:
        self.lam = torch.full((len(self.names),), float(self.cfg.algo.multiplier_init))

    def constraint_weights(self, c_batch: torch.Tensor, ema: torch.Tensor) -> torch.Tensor:
        """Dual ascent on the mini-batch C_i, then the primal step uses the new lambda."""
        self.lam = update_multipliers(self.lam, c_batch, self.cfg.algo.multiplier_lr)
        return self.lam

    def multipliers(self, ema: torch.Tensor) -> torch.Tensor:
        return self.lam

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"multipliers": self.lam.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state:
            self.lam = torch.tensor(state["multipliers"], dtype=torch.float32)
