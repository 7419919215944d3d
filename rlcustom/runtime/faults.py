"""What a run does about faults: the :class:`FaultPolicy` the trainer's loop consults.

* a rollout replica dies: its ``generate`` call is retried after Ray restarts it
  (:func:`rlcustom.runtime.transport.generate_with_retry`);
* a stateless replica (reward, reference) dies before the learner updated in this step: Ray restarts
  it and the step runs again (same prompts and seeds, so nothing changes but the time): :meth:`retry_step`;
* any other death (a learner rank, a critic, a restart budget spent): every role is rebuilt and the
  run continues from the last checkpoint (:meth:`recover`, at most ``max_recoveries`` times);
* a NaN/inf reward (:class:`~rlcustom.rewards.NonFiniteRewardError`), loss or gradient: the step
  makes no update and is counted in ``skipped/nonfinite_{reward,loss,grad}`` (:meth:`check_finite`);
  ``optim.max_consecutive_nonfinite`` bad steps in a row stop the run with a checkpoint and a
  message naming the source.
"""
from __future__ import annotations

import math
from typing import Any


def unwrap_ray_error(err: BaseException) -> BaseException:
    """The exception an actor raised (its one-line message), not Ray's wrapper with the remote traceback."""
    from ray.exceptions import RayTaskError

    while isinstance(err, RayTaskError) and getattr(err, "cause", None) is not None:
        err = err.cause
    return err


class FaultPolicy:
    """Counters and decisions for one run; ``host`` is the trainer (its groups, event log and rebuild)."""

    def __init__(self, host: Any, *, max_consecutive_nonfinite: int, max_recoveries: int = 2,
                 max_step_retries: int = 2) -> None:
        self.host = host
        self.max_consecutive_nonfinite = max_consecutive_nonfinite
        self.max_recoveries, self.max_step_retries = max_recoveries, max_step_retries
        self.skip_counts = {"reward": 0, "loss": 0, "grad": 0, "metric": 0}  # non-finite steps by source
        self.bad_steps = 0  # consecutive
        self.recoveries = self.retries = 0
        self.last_reward_error = "reward"

    # ------------------------------------------------------------------ actor deaths
    def role_of(self, err: BaseException) -> str | None:
        actor_id = getattr(err, "actor_id", None)
        for role, g in self.host.groups.items():
            if any(a._actor_id.hex() == actor_id for a in g.actors):
                return role
        return None

    def on_actor_death(self, err: BaseException, trained_this_step: bool) -> None:
        """Retry the step in place when a stateless replica died before any update; else rebuild every role
        from the last checkpoint (:meth:`recover`); re-raise once the recovery budget is spent."""
        if self.retries < self.max_step_retries and self.retry_step(err, trained_this_step):
            self.retries += 1
            return
        if self.recoveries >= self.max_recoveries:
            raise err
        self.recoveries += 1
        self.recover(err)

    def recover(self, err: BaseException) -> None:
        """Rebuild every role and continue from the latest checkpoint (the start if none yet).

        A dead DeepSpeed rank cannot rejoin its group mid-step, so all roles restart together."""
        h = self.host
        h.event(f"step {h.step_idx + 1}: an actor died ({type(err).__name__}); restarting all roles from "
                f"the last checkpoint")
        h.shutdown()
        h.weight_sync.ready = False
        h.place()
        h.build()
        h.wait_roles_ready()
        h.step_idx = 0
        if h.sampler is not None:
            h.sampler.load_state_dict({"position": 0})
        if h.ckpt.latest() is not None:
            h.maybe_resume(force_latest=True)
        if "learner" in h.groups and "rollout" in h.groups:
            h.sync_weights()

    def retry_step(self, err: BaseException, trained_this_step: bool) -> bool:
        """A stateless replica died and nothing was updated yet in this step: wait for Ray's restart of it,
        then run the step again. False when that does not apply (the caller then recovers from a checkpoint)."""
        h = self.host
        role = self.role_of(err)
        if role is None or role in h.stateful_roles or role in ("learner", "rollout") or trained_this_step:
            return False
        h.event(f"step {h.step_idx + 1}: a {role} actor died ({type(err).__name__}); "
                f"retrying the step once Ray has restarted it")
        try:
            h.groups[role].wait_ready(600)
        except Exception:  # noqa: BLE001 - its restart budget is spent: rebuild everything instead
            return False
        return True

    def step_done(self) -> None:
        self.retries = 0

    # ------------------------------------------------------------------ non-finite values
    def reward_skip(self, err: BaseException) -> dict[str, float]:
        self.last_reward_error = str(err)
        return {"skipped/nonfinite_reward_step": 1.0}

    def check_finite(self, stats: dict[str, float]) -> str | None:
        """Classify this step (reward / loss / grad / other metric non-finite, or fine), add the
        ``skipped/*`` counters to ``stats``, and return the stop message once
        ``optim.max_consecutive_nonfinite`` bad steps came in a row."""
        source, what = None, ""
        if stats.pop("skipped/nonfinite_reward_step", 0.0):
            source, what = "reward", self.last_reward_error
        elif stats.get("train/nonfinite_loss", 0.0) > 0:
            source, what = "loss", f"learner loss (train/loss={stats.get('train/loss', float('nan')):.4g})"
        elif stats.get("train/skipped", 0.0) > 0:
            source, what = "grad", f"gradient (train/grad_norm={stats.get('train/grad_norm', float('nan')):.4g})"
        else:
            bad = [k for k, v in stats.items() if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                source, what = "metric", "metric " + ", ".join(bad)
        if source is not None:
            self.skip_counts[source] += 1
        self.bad_steps = self.bad_steps + 1 if source else 0
        stats.update({f"skipped/nonfinite_{k}": float(v) for k, v in self.skip_counts.items()})
        stats["skipped/consecutive"] = float(self.bad_steps)
        if source is None:
            return None
        stats["train/skipped"] = 1.0
        self.host.event(f"step {self.host.step_idx}: skipped, no update (non-finite {what})")
        if self.bad_steps >= self.max_consecutive_nonfinite:
            return f"{self.bad_steps} consecutive steps with non-finite values; last: {what}"
        return None
