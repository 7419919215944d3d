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

from dataclasses import dataclass, field
from typing import Any

import torch

from rlcustom.trainers.base import Trainer


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


class PipelineTrainer(Trainer):
    """An RL trainer: ``step()`` runs the stages; subclasses override the stages they change."""

    prompts_per_step_key = "prompts_per_step"

    def step(self) -> dict[str, float]:
        s = self.new_step()
        self.run_stages(s)
        return self.metrics(s) | self.timer.summary()

    def new_step(self) -> Step:
        return Step()

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
    def sampling_params(self):
        """The step's sampling parameters: ``sampling:`` seeded by (seed, step)."""
        return self.cfg.sampling.params(seed=self.cfg.seed * 100003 + self.step_idx)

    def generate(self, s: Step) -> None:
        """Rollouts for the sampler's next prompts; ``s.batch`` is their padded form."""
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
        """Learner weights to the rollout engines."""
        with self.timer("sync"):
            s.stats |= self.sync_weights()

    def metrics(self, s: Step) -> dict[str, float]:
        return s.stats
