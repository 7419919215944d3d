"""Saving and restoring a trainer: its own state, every stateful role's files, the data position.

``trainer_state.json`` holds the step, the trainer's ``state_dict()``, the sampler position, the
non-finite counters, the W&B run id and the (redacted) config; each stateful role writes its own
folder (:class:`~rlcustom.trainers.checkpoint.CheckpointManager` makes the whole write atomic).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rlcustom.config import to_dict
from rlcustom.errors import CheckpointError, RLCustomError
from rlcustom.runtime.faults import unwrap_ray_error


class CheckpointMixin:
    def state_dict(self) -> dict[str, Any]:
        """The trainer's own state beyond the step and sampler (e.g. L3M's EMA of the constraints); a trainer
        with such state overrides this and :meth:`load_state_dict`."""
        return {}

    def sampler_checkpoint_state(self) -> dict[str, int]:
        """Where a resumed run's prompts continue (a trainer with rollouts in flight: before the oldest)."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; nothing to restore for a trainer without own state."""

    def save_checkpoint(self) -> Path:
        def write_roles(tmp: Path) -> None:
            refs = []
            for role in self.stateful_roles:
                if role in self.groups:
                    g = self.groups[role]
                    refs += [a.save.remote(str(tmp / role)) for a in g.actors]
            if refs:
                next(iter(self.groups.values())).get(refs, "checkpoint save")

        from rlcustom.tracking import redact
        from rlcustom.trainers.checkpoint_identity import identity

        state = {"step": self.step_idx, "trainer": self.state_dict(), "wandb_id": self.wandb_id,
                 "skipped": dict(self.faults.skip_counts), "config": redact(to_dict(self.cfg)),
                 "identity": redact(identity(self.cfg))}  # what resume compares (checkpoint_identity.py)
        if self.sampler is not None:
            state["sampler"] = self.sampler_checkpoint_state()
        try:
            path = self.ckpt.save(self.step_idx, state, write_roles)
        except Exception as e:  # noqa: BLE001 - disk full, a role's save raised, ...: say what is still there
            inner = unwrap_ray_error(e)
            msg = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
            raise CheckpointError(f"checkpoint at step {self.step_idx} failed ({type(inner).__name__}: {msg}); "
                                  f"the previous checkpoint is intact: {self.ckpt.latest() or 'none yet'}") from e
        if self.tracker is not None and self.cfg.tracking.checkpoint_artifacts:
            self.tracker.log_artifact(path, name=f"{self.name}-checkpoint")
        return path

    def maybe_resume(self, force_latest: bool = False) -> Path | None:
        r = "auto" if force_latest else self.cfg.resume
        if r == "never":
            return None
        path = self.ckpt.latest() if r == "auto" else Path(r)
        if path is None:
            return None
        if not (path / "trainer_state.json").is_file():
            raise RLCustomError(f"resume: {path} is not a checkpoint (no trainer_state.json)")
        if not force_latest:  # identity and files (also checked before Ray by the preflight)
            from rlcustom.trainers.checkpoint_identity import check_resume

            for change in check_resume(self.cfg, self.stateful_roles, self.roles_used).accepted:
                self.event(f"resume: accepting a changed {change} (resume_force)")
        state = self.ckpt.load_state(path)
        for role in self.stateful_roles:
            if role in self.groups and (path / role).exists():
                g = self.groups[role]
                g.get([a.load.remote(str(path / role)) for a in g.actors], f"{role} load")
        self.step_idx = int(state["step"])
        self.wandb_id = state.get("wandb_id")
        self.faults.skip_counts.update(state.get("skipped", {}))
        if self.sampler is not None:  # checkpoints from before the sampler: one batch of prompts per step
            per_step = getattr(self.cfg.algo, "prompts_per_step", 0)
            sampler_state = state.get("sampler") or {"position": self.step_idx * per_step}
            self.sampler.load_state_dict(sampler_state)
            if sampler_state.get("in_flight"):
                self.event(f"resume: discarded the {sampler_state['in_flight']} rollout batch(es) in flight at the "
                           f"checkpoint; their prompts are generated again (from position {sampler_state['position']})")
        self.load_state_dict(state.get("trainer", {}))
        self.event(f"resumed from {path} at step {self.step_idx}")
        return path
