"""Overlapped rollout with bounded staleness (``algo.max_staleness``) and its off-policy correction.

With ``max_staleness: 0`` a step is ``generate -> score -> filter -> advantages -> update -> sync``, one
phase after the other (the on-policy loop). With ``max_staleness: k >= 1`` the generation of the next
``k`` steps is launched (Ray futures on the rollout actors) right after this step's rollouts are in hand,
so the engines generate while the learner scores and trains::

    step t:  [rollouts of t: launched in step t-k, or now] -> launch t+1..t+k -> score -> ... -> update
             -> sync: wait for the launched generations, then learner weights -> engines (version t+1)

Weights reach the engines only at step boundaries, after the engines have finished what was launched
(so a generation never sees weights change under it). Versions count learner updates; a batch generated
with engine version ``v`` and used by a learner at version ``V`` has staleness ``V - v`` (``k`` in the
steady state, 0 in the first ``k`` steps); a batch older than ``k`` versions is never used: it is dropped
and its prompts generated again. The prompt order stays the sampler's: launched batches take the next
prompts in order, a checkpoint stores the position of the oldest batch still in flight, and a resumed
(or recovered) run drops what was in flight and draws those prompts again (said in an event).

The batch that the learner then sees carries ``logprobs`` = the learner's own log-probs before the
update (``pi_old``) and ``behaviour_logprobs`` = the engine's (``mu``); ``is_correction: tis`` weights
each token's policy loss by ``min(pi_old / mu, is_cap)`` (:mod:`rlcustom.algos.off_policy`). When the
update is one optimizer step over the whole batch and the learner draws no dropout (``algo.pi_old: auto``),
``pi_old`` is the update's own detached log-probs instead of a learner forward before it
(:meth:`RolloutOverlap.pi_old_from_update`): the same numbers, one forward fewer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from rlcustom.config import non_negative, positive
from rlcustom.errors import ConfigError

__all__ = ["OffPolicyConfig", "InFlight", "RolloutOverlap"]


@dataclass(frozen=True)
class OffPolicyConfig:
    """The overlap and off-policy keys shared by the ``pg`` and ``ppo`` sections."""

    # 0: on-policy (generate, then train); k >= 1: the next k steps generate while the learner trains
    max_staleness: int = field(default=0, metadata=non_negative)  # 0: on-policy; k: rollouts from weights <= k updates old
    # none | tis: truncated importance weights min(pi_old / mu, is_cap) on each token's policy loss
    is_correction: Literal["none", "tis"] = "none"  # off-policy correction with the engine's log-probs: none | tis
    is_cap: float = field(default=2.0, metadata=positive)  # C, the truncation of the TIS weights min(pi_old/mu, C)
    # auto: pi_old = the update's own detached log-probs when the update is one optimizer step over the batch and
    # the learner has no dropout (no learner forward before the update); forward: always that separate forward
    pi_old: Literal["auto", "forward"] = "auto"  # learner log-probs before the update: auto (reuse when exact) | forward


@dataclass
class InFlight:
    """One launched generation: the step it is for, its prompts and sampling parameters, one future per
    rollout replica, the engine weight version it runs with and the sampler state before its prompts."""

    step: int
    prompts: Any
    params: Any
    refs: list
    version: int
    mark: dict
    result: Any = None  # the Rollouts once collected
    failed: bool = False  # its replica crashed: generated again when its step comes


class RolloutOverlap:
    """The pipeline trainer's half that launches, waits for and drops in-flight rollouts (mixed into
    :class:`~rlcustom.trainers.pipeline.PipelineTrainer`; ``self`` is the trainer)."""

    in_flight: list[InFlight]
    learner_version: int  # learner updates so far (this process)
    engine_version: int  # the learner version the engines hold

    def init_overlap(self) -> None:
        self.in_flight, self.learner_version, self.engine_version = [], 0, 0

    @property
    def max_staleness(self) -> int:
        return int(getattr(self.cfg.algo, "max_staleness", 0))

    @property
    def off_policy(self) -> bool:
        """The batch carries learner and engine log-probs (overlap on, or TIS asked for)."""
        a = self.cfg.algo
        return self.max_staleness > 0 or getattr(a, "is_correction", "none") != "none"

    def check_off_policy(self, recomputed: bool = True) -> None:
        """Config errors of this section's overlap keys (called from ``build``)."""
        a = self.cfg.algo
        if self.max_staleness > 0:
            rc, lc = self.role_cfg("rollout"), self.role_cfg("learner")
            if (rc.colocate_with == "learner" or lc.colocate_with == "rollout") and (rc.gpus or lc.gpus):
                raise ConfigError("algo.max_staleness: the rollout engines share the learner's GPUs and sleep while "
                                  "it trains; overlap needs them on devices of their own (or max_staleness: 0)")
        if getattr(a, "is_correction", "none") == "tis":
            plan = getattr(self, "loss_plan", None)
            if plan is not None and plan.loss not in ("reinforce", "ppo_clip", "policy_clip"):
                raise ConfigError(f"algo.is_correction: tis weights per-token losses; objective "
                                  f"{a.objective!r} ({plan.loss}) is sequence-level: use is_correction: none")
            if not recomputed:
                raise ConfigError("algo.is_correction: tis needs the learner's pi_old: set algo.recompute_logprobs: true")

    # ------------------------------------------------------------------ launch / take / wait
    def launch_ahead(self) -> None:
        """Launch the generations of the next steps until ``max_staleness`` are in flight (never past the run)."""
        from rlcustom.runtime.transport import launch_generate

        per_step = getattr(self.cfg.algo, self.prompts_per_step_key)
        while len(self.in_flight) < self.max_staleness:
            step = self.step_idx + 1 + len(self.in_flight)
            if step >= self.cfg.steps:
                return
            mark = self.sampler.state_dict()
            prompts = self.sampler.take(per_step)
            params = self.sampling_params(step)
            refs = launch_generate(self.groups["rollout"], prompts, params, self.episodes_cfg())  # episodes too
            self.in_flight.append(InFlight(step, prompts, params, refs, self.engine_version, mark))

    def take_in_flight(self):
        """``(prompts, params, rollouts, version)`` of this step's launched batch, or None when there is none
        (the first step, after a resume). ``rollouts`` is None when the batch must be generated again: its
        replica crashed (retried as a plain generate, after a re-sync) or it is more than ``k`` updates old."""
        if not self.in_flight:
            return None
        e = self.in_flight.pop(0)
        if e.step != self.step_idx:  # cannot happen while steps advance one at a time; never use it
            self.in_flight.insert(0, e)
            self.discard_in_flight(f"a batch launched for step {e.step + 1} came up at step {self.step_idx + 1}")
            return None
        if e.result is None and not e.failed:
            self.collect(e)
            if e.failed:  # no sync stage between here and the retry: the restarted replica gets weights now
                self.sync_weights()
        if e.failed:
            return e.prompts, e.params, None, self.engine_version
        if self.learner_version - e.version > self.max_staleness:
            self.event(f"step {self.step_idx + 1}: dropped rollouts from weights {self.learner_version - e.version} "
                       f"updates old (algo.max_staleness={self.max_staleness}); generating them again")
            return e.prompts, e.params, None, self.engine_version
        return e.prompts, e.params, e.result, e.version

    def collect(self, e: InFlight) -> None:
        """Wait for ``e``'s rollouts (``e.result``); a crashed replica marks it ``failed`` (it is generated again)
        after Ray has restarted the replica, whose weights then need a sync (the collective group is rebuilt)."""
        from rlcustom.data.fields import attach_fields
        from rlcustom.engines.base import Rollouts

        rg = self.groups["rollout"]
        try:
            ro = Rollouts.concat(rg.get(e.refs, "generate"))
            self.log_episode_failures(ro)
            e.result = attach_fields(ro, e.prompts)
        except Exception as err:
            from rlcustom.runtime.transport import actor_died

            if not actor_died(err):
                raise
            e.failed = True
            self.event(f"step {self.step_idx + 1}: rollout actor died during the overlap ({type(err).__name__}); "
                       f"its batch is generated again after a weight re-sync")
            rg.wait_ready(600)  # Ray restarts it (max_restarts); its weights are the initial ones
            self.weight_sync.ready = False
        e.refs = []

    def wait_in_flight(self) -> None:
        """Block until every launched generation has finished (the sync stage: weights change only after)."""
        for e in self.in_flight:
            if e.result is None and not e.failed:
                self.collect(e)

    def discard_in_flight(self, reason: str) -> None:
        """Drop every launched generation; the sampler goes back to the oldest one's prompts."""
        if not getattr(self, "in_flight", None):
            return
        n, mark = len(self.in_flight), self.in_flight[0].mark
        self.in_flight = []
        if self.sampler is not None:
            self.sampler.load_state_dict(mark)
        self.event(f"discarded {n} in-flight rollout batch(es) ({reason}); their prompts are drawn again")

    def sync_weights(self, learner: str = "learner", rollout: str = "rollout") -> dict[str, float]:
        """:meth:`RoleHost.sync_weights`, and the engines now hold the learner's version."""
        out = super().sync_weights(learner, rollout)  # type: ignore[misc]
        if rollout == "rollout":
            self.engine_version = self.learner_version
        return out

    def sampler_checkpoint_state(self) -> dict:
        """The sampler position a resumed run starts from: before the oldest batch still in flight."""
        if not getattr(self, "in_flight", None):
            return self.sampler.state_dict()
        return dict(self.in_flight[0].mark) | {"in_flight": len(self.in_flight)}

    # ------------------------------------------------------------------ the learner's batch
    def off_policy_batch(self, s, old_lp: torch.Tensor) -> dict:
        """``logprobs`` = the learner's ``pi_old``, ``behaviour_logprobs`` = the engine's, and their metrics
        (:meth:`off_policy_stats`)."""
        engine_lp = s.batch["logprobs"]
        s.stats |= self.off_policy_stats(old_lp, engine_lp, s.batch["response_mask"])
        return {"logprobs": old_lp, "behaviour_logprobs": engine_lp}

    def off_policy_stats(self, old_lp: torch.Tensor, engine_lp: torch.Tensor, mask: torch.Tensor) -> dict:
        """The gap (``rollout/logprob_gap_abs``, ``rollout/logprob_kl``) and, with TIS, ``is/weight_mean``,
        ``is/weight_max``, ``is/clipfrac``."""
        from rlcustom.algos.off_policy import is_weight_stats, logprob_gap

        a = self.cfg.algo
        out = logprob_gap(old_lp, engine_lp, mask)
        if a.is_correction == "tis":
            out |= is_weight_stats(old_lp, engine_lp, mask, a.is_cap)
        return out

    def pi_old_from_update(self, one_step: bool) -> bool:
        """Whether ``pi_old`` is the update's own detached log-probs, with no learner forward before the update:
        ``algo.pi_old: auto``, the update is ``one_step`` (one optimizer step over the whole batch: every
        micro-batch's forward then runs with the weights a forward before the update would use) and the
        learner's training forward draws no dropout (``learner_dropout`` empty), so it gives the log-probs of
        that forward. Else (several optimizer steps per batch, dropout, ``forward``) the separate forward stays."""
        return one_step and getattr(self.cfg.algo, "pi_old", "auto") == "auto" and not self.learner_dropout

    @property
    def learner_dropout(self) -> list[str]:
        """Where the learner's training forward draws dropout: ``model.lora.dropout`` and the ``*dropout*`` rates
        of the model's ``config.json`` (e.g. ``attention_dropout``) that are > 0; read once."""
        if getattr(self, "_learner_dropout", None) is None:
            from transformers import AutoConfig

            from rlcustom.models.loading import resolve_model_path

            m = self.cfg.model
            out = ["model.lora.dropout"] if m.lora is not None and m.lora.dropout > 0 else []
            hf = AutoConfig.from_pretrained(resolve_model_path(m.path), trust_remote_code=m.trust_remote_code)
            out += [f"config.json {k}" for k, v in vars(hf).items()
                    if "dropout" in k and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0]
            self._learner_dropout = out
        return self._learner_dropout

    def pi_old_from_update_batch(self, s) -> dict:
        """The learner batch when ``pi_old`` comes from the update (:meth:`pi_old_from_update`): no ``logprobs``,
        the flag :data:`~rlcustom.algos.off_policy.PI_OLD_FROM_UPDATE`, the engine's log-probs as
        ``behaviour_logprobs`` (TIS)."""
        from rlcustom.algos.off_policy import PI_OLD_FROM_UPDATE

        batch = {k: v for k, v in s.batch.items() if k != "logprobs"}
        return batch | {"behaviour_logprobs": s.batch["logprobs"], PI_OLD_FROM_UPDATE: True}

    def pi_old_update_stats(self, s, stats: dict) -> dict:
        """``stats`` of an update whose batch took ``pi_old`` from its own forward, without those log-probs
        (:data:`~rlcustom.algos.off_policy.UPDATE_LOGPROBS`): they become ``s.old_lp``, and off-policy the gap
        and TIS metrics are measured on them (what :meth:`off_policy_batch` measures before a separate forward's
        update). ``stats`` unchanged when they are not there."""
        from rlcustom.algos.off_policy import UPDATE_LOGPROBS

        lp = stats.pop(UPDATE_LOGPROBS, None)
        if lp is None:
            return stats
        s.old_lp = lp
        if self.off_policy:
            stats |= self.off_policy_stats(lp, s.batch["behaviour_logprobs"], s.batch["response_mask"])
        return stats

    def is_kwargs(self) -> dict:
        """The learner objective's ``is_cap`` when TIS is on."""
        a = self.cfg.algo
        return {"is_cap": float(a.is_cap)} if getattr(a, "is_correction", "none") == "tis" else {}

