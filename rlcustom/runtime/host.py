"""The roles of one run: placement, worker groups, weight sync and rollouts, as a trainer uses them.

:class:`RoleHost` is the runtime half of a trainer (the loop is :class:`rlcustom.trainers.base.Trainer`):
``place()`` reserves the bundles, ``add_role()`` creates a :class:`~rlcustom.runtime.runtime.RoleGroup`,
``rollouts()`` generates with a crashed-replica retry, ``sync_weights()`` pushes learner weights to the
rollout engines, ``learner_train()`` runs one data-parallel update, ``shutdown()`` releases everything.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

from rlcustom.config import RoleConfig
from rlcustom.runtime.runtime import RoleGroup, init_ray, make_group, shard_batch
from rlcustom.runtime.transport import WeightSync, check_sync, generate_with_retry


class RoleHost:
    cfg: Any
    roles_used: tuple[str, ...] = ()  # roles this trainer places (defaults fill missing ones)
    step_idx: int

    def init_roles(self) -> None:
        self.groups: dict[str, RoleGroup] = {}
        self.placements: dict = {}
        self.pad_id = 0
        self.after_ready: dict[str, tuple[RoleGroup, Any]] = {}  # attribute -> (group, ObjectRef) set when ready
        self._trained_this_step = False  # set by learner_train: a retried step would update twice
        # in one process the weights are handed over (get_weights -> load_weights), not sent
        sync = "object_store" if self.in_process else self.cfg.sync
        self.weight_sync = WeightSync(sync, adapter_only=self.cfg.model.lora is not None,
                                      zero3=self.role_cfg("learner").zero_stage == 3)

    def event(self, msg: str) -> None:
        raise NotImplementedError

    def role_cfg(self, role: str) -> RoleConfig:
        return self.cfg.roles.get(role) or RoleConfig()

    def shared_roles(self) -> dict[str, str]:
        """Roles served by another role's actors (role -> that role): they get no bundles or actors of their own
        (:meth:`share_role`)."""
        return {}

    @property
    def in_process(self) -> bool:
        """``cluster.backend: inprocess``: roles are objects in this process (:mod:`rlcustom.runtime.inprocess`)."""
        return self.cfg.cluster.backend == "inprocess"

    def place(self) -> None:
        used = [r for r in self.roles_used if r not in self.shared_roles()]
        roles = {r: self.role_cfg(r) for r in used}
        roles.update({r: rc for r, rc in self.cfg.roles.items() if r in used})
        if self.in_process:
            from rlcustom.runtime import inprocess

            inprocess.check_replicas(roles)
            self.placements = inprocess.placements(used)
            return
        from rlcustom.runtime.placement import place_roles

        init_ray(self.cfg.cluster)
        self.placements = place_roles(roles, timeout_s=self.cfg.cluster.placement_timeout_s)

    def add_role(self, role: str, cls: type, args_for: Callable[[int], tuple[tuple, dict]]) -> RoleGroup:
        rc = self.role_cfg(role)
        if self.in_process:
            from rlcustom.runtime import inprocess

            self.groups[role] = inprocess.make_group(role, cls, rc.replicas, args_for)
            return self.groups[role]
        group = make_group(role, cls, self.placements[role], args_for=args_for, max_restarts=rc.max_restarts,
                           timeout_s=rc.call_timeout_s)
        self.groups[role] = group
        return group

    def share_role(self, role: str, host: str, aliases: dict[str, str]) -> RoleGroup:
        """``role`` answered by ``host``'s actors: ``groups[role].scatter(m, ...)`` calls ``aliases.get(m, m)`` on
        them (e.g. the reference's ``logprobs`` as the LoRA learner's ``reference_logprobs``)."""
        h = self.groups[host]
        # the host group's own class: a subclass (e.g. in-process groups without Ray) keeps its dispatch
        group = type(h)(role, h.actors, h.placement, h.timeout_s, aliases=dict(aliases))
        self.groups[role] = group
        return group

    def wait_roles_ready(self, timeout_s: float = 900.0) -> None:
        """Wait for every role's actors (created without waiting, so their start-ups overlap), then set the
        attributes that builders asked of them (``after_ready``, e.g. the rollout's pad id)."""
        for g in self.groups.values():
            g.wait_ready(timeout_s)
        for attr, (g, ref) in self.after_ready.items():
            setattr(self, attr, g.get(ref, f"{g.role} {attr.replace('_', ' ')}"))
        self.after_ready.clear()

    def sync_weights(self, learner: str = "learner", rollout: str = "rollout") -> dict[str, float]:
        """Learner rank 0 -> every rollout replica; LoRA runs send only the adapter."""
        return self.weight_sync(self.groups[learner], self.groups[rollout])

    def check_sync(self, ro, learner: str = "learner", rollout: str = "rollout") -> dict[str, float]:
        return check_sync(ro, self.groups[learner], self.groups[rollout], self.pad_id,
                          self.role_cfg(learner).zero_stage == 3)

    def rollouts(self, prompts: list, params, rollout: str = "rollout", attempts: int = 3):
        """Prompts split over rollout replicas; a crashed replica costs a retry of this call only."""
        rg = self.groups[rollout]

        def on_death(e: BaseException, attempt: int) -> None:
            self.event(f"step {self.step_idx}: rollout actor died ({type(e).__name__}); "
                       f"retrying the generate call after a weight re-sync (attempt {attempt + 2}/{attempts})")
            rg.wait_ready(600)  # Ray restarts it (max_restarts); its weights are the initial ones
            self.weight_sync.ready = False
            if "learner" in self.groups:
                self.sync_weights(rollout=rollout)

        from rlcustom.data.fields import attach_fields

        ro = generate_with_retry(rg, prompts, params, on_death=on_death, attempts=attempts, step=self.step_idx,
                                 episodes=self.episodes_cfg())
        self.log_episode_failures(ro)
        return attach_fields(ro, prompts)  # each sample carries its record's answer, tests, ... to the reward

    def episodes_cfg(self):
        """``rollout:`` when ``rollout.env`` is set (rollouts are multi-turn episodes, rlcustom.envs), else None."""
        env = getattr(self.cfg, "rollout", None)
        return env if env is not None and env.env else None

    def log_episode_failures(self, ro) -> None:
        """One event per failed episode (an environment that raised, hung, ...), up to ``rollout.log_failures``."""
        env = self.episodes_cfg()
        if env is not None:
            from rlcustom.envs.metrics import failure_lines

            for line in failure_lines(ro, env.log_failures):
                self.event(f"step {self.step_idx + 1}: {line}")

    @contextlib.contextmanager
    def device_for_training(self, rollout: str = "rollout", learner: str = "learner"):
        """Rollout engines that share GPUs with the learner sleep (free their memory) while it trains."""
        rc, lc = self.role_cfg(rollout), self.role_cfg(learner)
        shared = (rc.colocate_with == learner or lc.colocate_with == rollout) and (rc.gpus or lc.gpus)
        rg = self.groups.get(rollout)
        if shared and rg is not None:
            rg.broadcast("sleep")
        try:
            yield
        finally:
            if shared and rg is not None:
                rg.broadcast("wake")

    def learner_train(self, batch: dict, loss: str, learner: str = "learner", **kw) -> dict[str, float]:
        """Rows split across learner ranks (data parallel); stats averaged over ranks, per-row tensor stats (the
        update's own log-probs, :data:`~rlcustom.algos.off_policy.UPDATE_LOGPROBS`) concatenated in row order."""
        import torch

        lg = self.groups[learner]
        self._trained_this_step = True
        shards = shard_batch(batch, len(lg))
        stats = lg.get([a.train_step.remote(s, loss, **kw) for a, s in zip(lg.actors, shards)], f"{learner}.train_step")
        keys = set().union(*stats)
        rows = {k for k in keys if torch.is_tensor(stats[0].get(k))}
        return {k: torch.cat([s[k] for s in stats]) if k in rows else sum(s.get(k, 0.0) for s in stats) / len(stats)
                for k in keys}

    def shutdown(self) -> None:
        if self.in_process:  # the roles' objects go with their references
            self.groups, self.placements = {}, {}
            return
        import ray

        from rlcustom.runtime.placement import release

        for g in self.groups.values():
            for a in g.actors:
                with contextlib.suppress(Exception):  # best effort: the actor may already be dead
                    ray.kill(a)
        self.groups = {}
        if self.placements:
            release(self.placements)
            self.placements = {}
