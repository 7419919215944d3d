"""What every algorithm shares: the step loop, progress, checkpoint cadence and signals.

A trainer subclass writes ``build()`` (its roles) and ``step()`` (one update); RL trainers derive
from :class:`rlcustom.trainers.pipeline.PipelineTrainer`, whose step is ``generate -> score ->
filter -> advantages -> update -> sync``. Around the step this class runs the loop: Ray start-up
and placement (:class:`~rlcustom.runtime.host.RoleHost`), the prompt sampler
(:class:`~rlcustom.data.sampler.PromptSampler`, checked before Ray starts), W&B, checkpoints every
``save_every`` steps and ``resume: auto`` (:class:`~rlcustom.trainers.state.CheckpointMixin`),
SIGTERM/SIGINT (finish the step, checkpoint, exit non-zero), and the :class:`FaultPolicy`
(actor deaths, non-finite steps; see :mod:`rlcustom.runtime.faults`).
"""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from rlcustom.config import to_dict
from rlcustom.errors import NonFiniteError, RLCustomError
from rlcustom.registry import TRAINERS
from rlcustom.rewards import NonFiniteRewardError
from rlcustom.runtime.faults import FaultPolicy, unwrap_ray_error
from rlcustom.runtime.host import RoleHost
from rlcustom.runtime.runtime import Timer, phase_times
from rlcustom.trainers.checkpoint import CheckpointManager
from rlcustom.trainers.state import CheckpointMixin

__all__ = ["Interrupted", "Trainer", "phase_times", "register_trainer", "unwrap_ray_error"]


def register_trainer(name: str):
    def deco(cls):
        cls.name = name
        TRAINERS.register(name)(cls)
        return cls

    return deco


class Interrupted(RLCustomError):
    """The run stopped on SIGTERM/SIGINT after finishing its step and writing a checkpoint (the message names it)."""


class Trainer(RoleHost, CheckpointMixin):
    name = "base"
    roles_used: tuple[str, ...] = ()  # roles this trainer places (defaults fill missing ones)
    stateful_roles: tuple[str, ...] = ("learner",)  # roles that write into checkpoints
    env_rollouts = False  # True: its rollouts may be multi-turn episodes (rollout.env; rlcustom.trainers.episodes)
    max_recoveries = 2
    max_step_retries = 2  # in-place retries of one step after a stateless actor died

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.out_dir = Path(cfg.output_dir)
        self.timer = Timer()
        self.step_idx = 0
        self.ckpt = CheckpointManager(self.out_dir, keep=cfg.keep_checkpoints)
        self.events: list[str] = []
        self._stop_signal: int | None = None
        self.wandb_id: str | None = None
        self.samples: tuple | None = None  # (prompts, completions, rewards) a step sets for the W&B table
        self.tracker = None
        self.sampler = None  # the prompt stream (PromptSampler), made by preflight() for trainers with rollouts
        self.init_roles()
        self.faults = FaultPolicy(self, max_consecutive_nonfinite=cfg.optim.max_consecutive_nonfinite,
                                  max_recoveries=self.max_recoveries, max_step_retries=self.max_step_retries)

    # ------------------------------------------------------------------ to override
    def build(self) -> None:
        """Create the role groups (``self.add_role``) and load data."""

    def step(self) -> dict[str, float]:
        raise NotImplementedError

    def summary(self, history: list[dict]) -> list[str]:
        return []

    def discard_in_flight(self, reason: str) -> None:
        """Drop work launched for later steps (the pipeline trainer's overlapped rollouts); this loop has none."""

    def shared_roles(self) -> dict[str, str]:
        from rlcustom.trainers.roles import shared_roles

        return shared_roles(self)

    def preflight(self) -> None:
        """Data, reward columns, environment and resume checks before Ray starts (:func:`run_checks.check_run`)."""
        from rlcustom.trainers.run_checks import check_run

        check_run(self)

    # ------------------------------------------------------------------ the loop
    def event(self, msg: str) -> None:
        self.events.append(msg)
        print(f"[rlcustom] {msg}", flush=True)

    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum
        self.event(f"received {signal.Signals(signum).name}: finishing step {self.step_idx + 1}, then checkpoint")

    def fit(self) -> dict[str, Any]:
        from rlcustom.runtime.transport import actor_died
        from rlcustom.tracking import Tracker, progress

        tracker = bar = None
        prev: dict = {}
        try:
            self.preflight()
            self.place()
            # after ray.init, which installs its own SIGTERM handler: ours finishes the step and checkpoints
            prev = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
            for s in prev:
                signal.signal(s, self._on_signal)
            self.build()
            self.wait_roles_ready()
            self.maybe_resume()
            if "learner" in self.groups and "rollout" in self.groups and self.step_idx > 0:
                self.sync_weights()  # a resumed learner's weights go to fresh engines
            tracker = self.tracker = Tracker(self.cfg.tracking, self.out_dir, config=to_dict(self.cfg),
                                             run_id=self.wandb_id, handle_signals=False)
            tracker.start()
            self.wandb_id = tracker.run_id
            bar = progress(total=self.cfg.steps, initial=self.step_idx, desc=self.name, unit="step")
            while self.step_idx < self.cfg.steps:
                self._trained_this_step = False
                mark = self.sampler_checkpoint_state() if self.sampler is not None else None
                try:
                    stats = self.step()
                except NonFiniteRewardError as e:  # no update was made with the bad rewards
                    self.timer.summary()  # this step's phase times are not a real step's
                    stats = self.faults.reward_skip(unwrap_ray_error(e))
                except Exception as e:  # an actor died: retry or recover (Ray only; anything else propagates)
                    if not actor_died(e):
                        raise
                    self.discard_in_flight(f"an actor died in step {self.step_idx + 1}")
                    if mark is not None:
                        self.sampler.load_state_dict(mark)  # a step run again draws the same prompts
                    self.faults.on_actor_death(e, self._trained_this_step)
                    continue
                self.faults.step_done()
                self.step_idx += 1
                self._after_step(stats, tracker, bar)
            bar.close()
            return self._finish(tracker)
        except NonFiniteError as e:
            path = self.save_checkpoint() if self.groups or self.step_idx else None
            raise NonFiniteError(f"{unwrap_ray_error(e)}; last good state saved at {path}") from None
        except KeyboardInterrupt:
            if self.groups:
                self.save_checkpoint()
            raise
        except RLCustomError as e:  # raised inside an actor: the user's one line, not Ray's remote traceback
            inner = unwrap_ray_error(e)
            if inner is not e:
                raise inner from None
            raise
        finally:
            if bar is not None:
                bar.close()  # an error message then starts on its own line
            if tracker is not None:
                tracker.finish(exit_code=0 if self._stop_signal is None else 1)
            for s, h in prev.items():
                signal.signal(s, h)
            self.shutdown()

    def _after_step(self, stats: dict[str, float], tracker, bar) -> None:
        """Log, show progress, checkpoint on cadence or after a signal."""
        stop = self.faults.check_finite(stats)
        tracker.log(stats, step=self.step_idx)
        if stop:
            raise NonFiniteError(stop)
        if self.samples is not None:
            tracker.log_samples(self.step_idx, *self.samples)
            self.samples = None
        bar.update(1)
        from rlcustom.console import step_postfix

        bar.set_postfix_str(step_postfix(stats))  # "reward 0.41 | KL 0.01 | step 3.1 s (generate 1.2, ...)"
        if self.cfg.save_every and self.step_idx % self.cfg.save_every == 0:
            self.save_checkpoint()
        if self._stop_signal is not None:
            path = self.save_checkpoint()
            raise Interrupted(f"stopped by {signal.Signals(self._stop_signal).name} at step "
                              f"{self.step_idx}; checkpoint {path} (resume: run the same command)")

    def _finish(self, tracker) -> dict[str, Any]:
        path = self.save_checkpoint()
        lines = [f"{self.name}: {self.step_idx} steps done; checkpoint {path}"]
        if "learner" in self.groups:  # a standalone model for the next stage (model.path / reward.model_path)
            model_dir = str(self.out_dir / "model")
            self.groups["learner"].broadcast("export_model", model_dir)
            lines.append(f"model: {model_dir}")
        lines += self.summary(tracker.history) + [phase_times(tracker.history)]
        lines += self.events[-5:] + [tracker.summary_line()]
        return {"history": tracker.history, "checkpoint": str(path), "summary": "\n".join(lines), "events": self.events}
