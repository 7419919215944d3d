"""The RL step as a pipeline of stages a subclass overrides::

    generate -> score -> filter -> advantages -> update -> sync   (then metrics)

Each stage reads and writes one :class:`Step` (the rollouts, the padded batch, the scores and
whatever the algorithm adds: reference log-probs, values, advantages, ...). A new batch filter is
one override; DAPO's dynamic sampling (drop the groups whose answers all scored the same, whose
group advantages are zero anyway) is::

    class MyPPO(PPOTrainer):
        def filter(self, s: Step) -> None:
            s.select(varied_groups(s.scores, s.ro.prompt_index))

(:meth:`Step.select` keeps those rows of every per-row field, so later stages see a smaller batch.)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from rlcustom.trainers.base import Trainer
from rlcustom.trainers.overlap import RolloutOverlap


@dataclass
class Step:
    """What flows through the stages of one step. ``rows`` names the per-row attributes that
    :meth:`select` subsets (a stage that adds a per-row tensor or list appends its name)."""

    prompts: list | None = None  # token ids; None: the sampler's next batch
    params: Any = None  # SamplingParams; None: sampling config, seeded by step
    ro: Any = None  # Rollouts
    batch: dict = field(default_factory=dict)  # padded tensors (input_ids, response_mask, logprobs, ...)
    scores: torch.Tensor | None = None  # [B] sequence rewards
    stats: dict[str, float] = field(default_factory=dict)
    rows: list[str] = field(default_factory=lambda: ["scores"])
    pi_old_reused: bool = False  # pi_old is the update's own detached log-probs (no learner forward before it)

    def select(self, keep: list[int]) -> None:
        """Keep rows ``keep`` (in order) of the rollouts, the batch and every attribute named in ``rows``."""
        idx = torch.as_tensor(keep, dtype=torch.long)
        n = len(self.ro)
        self.ro = self.ro.select(keep)
        self.batch = {k: (v[idx] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n else v)
                      for k, v in self.batch.items()}
        for name in self.rows:
            v = getattr(self, name, None)
            if isinstance(v, torch.Tensor):
                setattr(self, name, v[idx])
            elif isinstance(v, list):
                setattr(self, name, [v[i] for i in keep])


def varied_groups(scores: torch.Tensor, group_ids: list[int]) -> list[int]:
    """Rows whose group (same prompt) has scores that are not all equal (DAPO's dynamic sampling filter)."""
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(group_ids):
        groups.setdefault(int(g), []).append(i)
    return [i for rows in groups.values() if len({float(scores[j]) for j in rows}) > 1 for i in rows]


class PipelineTrainer(RolloutOverlap, Trainer):
    """An RL trainer: ``step()`` runs the stages; subclasses override the stages they change.

    With ``algo.max_staleness >= 1`` the stages run overlapped (:mod:`rlcustom.trainers.overlap`)."""

    prompts_per_step_key = "prompts_per_step"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.init_overlap()

    def step(self) -> dict[str, float]:
        s = self.new_step()
        if self.max_staleness > 0:
            t0 = time.perf_counter()
            self.run_overlapped(s)
            return self.metrics(s) | self.timer.summary() | {"timing/step_s": time.perf_counter() - t0}
        self.run_stages(s)
        return self.metrics(s) | self.timer.summary()

    def new_step(self) -> Step:
        return Step()

    def run_overlapped(self, s: Step) -> Step:
        """The stages with the next steps' generation in flight from right after this step's rollouts (after
        scoring when scoring itself generates: DAPO's dynamic sampling) until the sync stage."""
        with self.timer("generate"):
            self.generate(s)
        resamples = getattr(getattr(self, "loss_plan", None), "dynamic_sampling", False)
        if not resamples:
            self.launch_ahead()
        with self.timer("score"):
            self.score(s)
        if resamples:
            self.launch_ahead()
        self.filter(s)
        self.advantages(s)
        with self.timer("train"), self.device_for_training():
            self.update(s)
        self.learner_version += 1
        self.sync(s)
        return s

    def run_stages(self, s: Step) -> Step:
        with self.timer("generate"):
            self.generate(s)
        with self.timer("score"):
            self.score(s)
        self.filter(s)
        self.advantages(s)
        with self.timer("train"), self.device_for_training():
            self.update(s)
        self.sync(s)
        return s

    # ------------------------------------------------------------------ stages
    def sampling_params(self, step: int | None = None):
        """The sampling parameters of ``step`` (default: this one): ``sampling:`` seeded by (seed, step)."""
        return self.cfg.sampling.params(seed=self.cfg.seed * 100003 + (self.step_idx if step is None else step))

    def generate(self, s: Step) -> None:
        """Rollouts for the sampler's next prompts; ``s.batch`` is their padded form. Overlapped: the batch
        launched for this step in an earlier one (``rollout/staleness``: learner updates since its weights)."""
        if self.max_staleness > 0 and s.prompts is None and s.params is None:
            got = self.take_in_flight()
            if got is None:
                s.prompts = self.sampler.take(getattr(self.cfg.algo, self.prompts_per_step_key))
                s.params, ro, version = self.sampling_params(), None, self.engine_version
            else:
                s.prompts, s.params, ro, version = got
            if ro is None:
                version = self.engine_version
                ro = self.rollouts(s.prompts, s.params)  # a crashed replica's retry re-syncs: version stays
            s.ro, s.batch = ro, ro.padded(self.pad_id)
            s.stats["rollout/staleness"] = float(self.learner_version - version)
            return
        if s.prompts is None:
            s.prompts = self.sampler.take(getattr(self.cfg.algo, self.prompts_per_step_key))
        s.ro = self.rollouts(s.prompts, s.params if s.params is not None else self.sampling_params())
        s.batch = s.ro.padded(self.pad_id)

    def score(self, s: Step) -> None:
        """Sequence rewards from the reward role (rows split over its replicas), with the metrics of
        verifiable rewards (``reward/<component>``, ``reward/fail/<reason>``)."""
        from rlcustom.trainers.scoring import score_rollouts

        s.scores, m = score_rollouts(self, s.ro)
        s.stats |= m

    def score_rollouts(self, ro, role: str = "reward") -> torch.Tensor:
        g = self.groups[role]
        return torch.tensor(g.gather(g.scatter("score", ro), role), dtype=torch.float32)

    def filter(self, s: Step) -> None:
        """Drop rows before advantages (default: keep all). Call ``s.select(rows)``."""

    def advantages(self, s: Step) -> None:
        raise NotImplementedError

    def update(self, s: Step) -> None:
        raise NotImplementedError

    def sync(self, s: Step) -> None:
        """Learner weights to the rollout engines (overlapped: once they have finished what is in flight)."""
        if self.max_staleness > 0:
            with self.timer("rollout_wait"):
                self.wait_in_flight()
        with self.timer("sync"):
            s.stats |= self.sync_weights()

    def metrics(self, s: Step) -> dict[str, float]:
        return s.stats
