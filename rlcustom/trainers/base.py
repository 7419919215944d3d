"""What every algorithm shares; a trainer subclass writes ``build()`` and ``step()``.

The base owns: Ray start-up and role placement through the one scheduler, the
step loop with a progress bar, W&B, checkpoints and ``resume: auto``, SIGTERM
/SIGINT (checkpoint, finish W&B, exit non-zero), non-finite steps, and the
learner -> rollout weight sync with rollout-crash retry.

Faults, and what the loop does about them:

* a rollout replica dies: its ``generate`` call is retried after Ray restarts it (:meth:`generate`);
* a stateless replica (reward, reference) dies before the learner updated in this step: Ray restarts
  it and the step runs again (same prompts and seeds, so nothing changes but the time);
* any other death (a learner rank, a critic, a restart budget spent): every role is rebuilt and the
  run continues from the last checkpoint (:meth:`_recover`, at most ``max_recoveries`` times);
* a NaN/inf reward (:class:`~rlcustom.rewards.NonFiniteRewardError`), loss or gradient: the step
  makes no update and is counted in ``skipped/nonfinite_{reward,loss,grad}``;
  ``optim.max_consecutive_nonfinite`` bad steps in a row stop the run with a checkpoint and a
  message naming the source;
* bad data or a missing model path: found before Ray starts (:meth:`preflight`), one line.
"""
from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import Any, Callable

from rlcustom.config import RoleConfig, to_dict
from rlcustom.errors import CheckpointError, NonFiniteError, RLCustomError
from rlcustom.rewards import NonFiniteRewardError
from rlcustom.registry import TRAINERS
from rlcustom.runtime.runtime import RoleGroup, Timer, free_port, init_ray, make_group
from rlcustom.trainers.checkpoint import CheckpointManager


def register_trainer(name: str):
    def deco(cls):
        cls.name = name
        TRAINERS.register(name)(cls)
        return cls

    return deco


class Interrupted(RLCustomError):
    pass


class Trainer:
    name = "base"
    roles_used: tuple[str, ...] = ()  # roles this trainer places (defaults fill missing ones)
    stateful_roles: tuple[str, ...] = ("learner",)  # roles that write into checkpoints

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.out_dir = Path(cfg.output_dir)
        self.timer = Timer()
        self.step_idx = 0
        self.groups: dict[str, RoleGroup] = {}
        self.placements: dict = {}
        self.ckpt = CheckpointManager(self.out_dir, keep=cfg.keep_checkpoints)
        self.events: list[str] = []
        self._stop_signal: int | None = None
        self._sync_ready = False
        self._bad_steps = 0
        self.skip_counts = {"reward": 0, "loss": 0, "grad": 0, "metric": 0}  # non-finite steps by source
        self._trained_this_step = False  # set by learner_train: a retried step would update twice
        self.wandb_id: str | None = None
        self.pad_id = 0
        self.samples: tuple | None = None
        self.tracker = None

    # ------------------------------------------------------------------ to override
    def build(self) -> None:
        """Create the role groups (``self.add_role``) and load data."""

    def step(self) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def summary(self, history: list[dict]) -> list[str]:
        return []

    # ------------------------------------------------------------------ roles
    def role_cfg(self, role: str) -> RoleConfig:
        return self.cfg.roles.get(role) or RoleConfig()

    def place(self) -> None:
        from rlcustom.runtime.placement import place_roles

        init_ray(self.cfg.cluster)
        roles = {r: self.role_cfg(r) for r in self.roles_used}
        roles.update({r: rc for r, rc in self.cfg.roles.items() if r in self.roles_used})
        self.placements = place_roles(roles, timeout_s=self.cfg.cluster.placement_timeout_s)

    def add_role(self, role: str, cls: type, args_for: Callable[[int], tuple[tuple, dict]]) -> RoleGroup:
        rc = self.role_cfg(role)
        group = make_group(role, cls, self.placements[role], args_for=args_for, max_restarts=rc.max_restarts,
                           timeout_s=rc.call_timeout_s)
        self.groups[role] = group
        return group

    def wait_roles_ready(self, timeout_s: float = 900.0) -> None:
        for g in self.groups.values():
            g.wait_ready(timeout_s)

    # ------------------------------------------------------------------ weight sync
    def sync_weights(self, learner: str = "learner", rollout: str = "rollout") -> dict[str, float]:
        """Learner rank 0 -> every rollout replica; LoRA runs send only the adapter."""
        lg, rg = self.groups[learner], self.groups[rollout]
        adapter_only = self.cfg.model.lora is not None
        t0 = time.perf_counter()
        if self.cfg.sync == "object_store":
            ref = lg.actors[0].get_weights.remote(adapter_only)
            rg.get([a.load_weights.remote(ref, adapter_only) for a in rg.actors], "sync (object store)")
            return {"timing/sync_s": time.perf_counter() - t0}
        if not self._sync_ready:
            self._setup_sync_group(lg, rg)
        meta = lg.get(lg.actors[0].sync_meta.remote(adapter_only), "sync meta")
        refs = [lg.actors[0].sync_send.remote(adapter_only)]
        if self.role_cfg(learner).zero_stage == 3:  # ZeRO-3 gathers are collective across learner ranks
            refs += [a.sync_gather_only.remote(adapter_only) for a in lg.actors[1:]]
        refs += [a.sync_recv.remote(meta, adapter_only) for a in rg.actors]
        stats = rg.get(refs, "weight sync")
        return {"timing/sync_s": time.perf_counter() - t0, "system/sync_bytes": stats[0].get("sync/bytes", 0.0)}

    def _setup_sync_group(self, lg: RoleGroup, rg: RoleGroup) -> None:
        info = lg.get(lg.actors[0].ready.remote(), "learner ready")
        host = info.get("ip") or "127.0.0.1"
        port, world = free_port(), 1 + len(rg)
        refs = [lg.actors[0].init_sync_group.remote(host, port, world, 0)]
        refs += [a.init_sync_group.remote(host, port, world, i + 1) for i, a in enumerate(rg.actors)]
        lg.get(refs, "sync group set-up")
        self._sync_ready = True

    def generate(self, prompts: list, params, rollout: str = "rollout", attempts: int = 3):
        """Prompts split over rollout replicas; a crashed replica costs a retry of this call only."""
        from ray.exceptions import ActorUnavailableError, RayActorError

        from rlcustom.data.fields import attach_fields
        from rlcustom.engines.base import Rollouts
        from rlcustom.runtime.runtime import shard_rows

        rg = self.groups[rollout]
        for attempt in range(attempts):
            try:
                parts = shard_rows(len(prompts), len(rg))
                refs = [a.generate.remote(prompts[s], params.with_(seed=(params.seed or 0) + 7919 * i))
                        for i, (a, s) in enumerate(zip(rg.actors, parts)) if s.stop > s.start]
                return attach_fields(Rollouts.concat(rg.get(refs, "generate")), prompts)  # answer, tests, ...
            except (RayActorError, ActorUnavailableError) as e:
                self.event(f"step {self.step_idx}: rollout actor died ({type(e).__name__}); "
                           f"retrying the generate call after a weight re-sync (attempt {attempt + 2}/{attempts})")
                rg.wait_ready(600)  # Ray restarts it (max_restarts); its weights are the initial ones
                self._sync_ready = False
                if "learner" in self.groups:
                    self.sync_weights(rollout=rollout)
        raise RLCustomError(f"rollout failed {attempts} times in step {self.step_idx}")

    @contextlib.contextmanager
    def device_for_training(self, rollout: str = "rollout", learner: str = "learner"):
        """Rollout engines that share GPUs with the learner sleep (free their memory) while it trains."""
        rc, lc = self.role_cfg(rollout), self.role_cfg(learner)
        shared = (rc.colocate_with == learner or lc.colocate_with == rollout) and (rc.gpus or lc.gpus)
        rg = self.groups.get(rollout)
        if shared and rg is not None:
            rg.run("sleep")
        try:
            yield
        finally:
            if shared and rg is not None:
                rg.run("wake")

    def learner_train(self, batch: dict, loss: str, learner: str = "learner", **kw) -> dict[str, float]:
        """Rows split across learner ranks (data parallel); stats averaged over ranks."""
        from rlcustom.runtime.runtime import shard_batch

        lg = self.groups[learner]
        self._trained_this_step = True
        shards = shard_batch(batch, len(lg))
        stats = lg.get([a.train_step.remote(s, loss, **kw) for a, s in zip(lg.actors, shards)], f"{learner}.train_step")
        keys = set().union(*stats)
        return {k: sum(s.get(k, 0.0) for s in stats) / len(stats) for k in keys}

    def scatter(self, role: str, method: str, payload, *args, **kwargs) -> list:
        """Split rows of ``payload`` (a batch dict or Rollouts) over the role's replicas; returns futures."""
        from rlcustom.engines.base import Rollouts
        from rlcustom.runtime.runtime import shard_batch, shard_rows

        g = self.groups[role]
        if isinstance(payload, Rollouts):
            parts = [payload.select(range(s.start, s.stop)) for s in shard_rows(len(payload), len(g))]
        else:
            parts = shard_batch(payload, len(g))
        return [getattr(a, method).remote(p, *args, **kwargs) for a, p in zip(g.actors, parts) if len(_rows(p))]

    def gather(self, role: str, refs: list, what: str):
        """Concatenate per-replica results of :meth:`scatter` (tensors on dim 0, lists by extension)."""
        import torch

        parts = self.groups[role].get(refs, what)
        if parts and isinstance(parts[0], torch.Tensor):
            width = max(p.shape[1] for p in parts) if parts[0].dim() > 1 else None
            if width is not None:
                parts = [torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts]
            return torch.cat(parts)
        return [x for p in parts for x in p]

    def check_sync(self, ro, learner: str = "learner", rollout: str = "rollout") -> dict[str, float]:
        """Max |log-prob difference| between rollout engine and learner on the first sample."""
        from rlcustom.engines.base import Rollouts

        one = ro.select([0])
        lg, rg = self.groups[learner], self.groups[rollout]
        eng = rg.get(rg.actors[0].logprobs_of.remote(one.prompt_ids, one.response_ids), "rollout logprobs")
        batch = Rollouts(one.prompt_ids, one.response_ids, eng, ["length"], [0]).padded(self.pad_id)
        ranks = lg.actors if self.role_cfg(learner).zero_stage == 3 else lg.actors[:1]  # ZeRO-3: collective
        ln = lg.get([a.forward_logprobs.remote(batch) for a in ranks], "learner logprobs")[0]
        diff = max(abs(a - b) for a, b in zip(eng[0], ln[0, : len(eng[0])].tolist())) if eng[0] else 0.0
        return {"system/sync_max_logprob_diff": float(diff)}

    def event(self, msg: str) -> None:
        self.events.append(msg)
        print(f"[rlcustom] {msg}", flush=True)

    # ------------------------------------------------------------------ checkpoints
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

        state = {"step": self.step_idx, "trainer": self.state_dict(), "wandb_id": self.wandb_id,
                 "skipped": dict(self.skip_counts), "config": redact(to_dict(self.cfg))}
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
        state = self.ckpt.load_state(path)
        for role in self.stateful_roles:
            if role in self.groups and (path / role).exists():
                g = self.groups[role]
                g.get([a.load.remote(str(path / role)) for a in g.actors], f"{role} load")
        self.step_idx = int(state["step"])
        self.wandb_id = state.get("wandb_id")
        self.skip_counts.update(state.get("skipped", {}))
        self.load_state_dict(state.get("trainer", {}))
        self.event(f"resumed from {path} at step {self.step_idx}")
        return path

    # ------------------------------------------------------------------ the loop
    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum
        self.event(f"received {signal.Signals(signum).name}: finishing step {self.step_idx + 1}, then checkpoint")

    def fit(self) -> dict[str, Any]:
        from ray.exceptions import ActorUnavailableError, RayActorError

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
            tracker = Tracker(self.cfg.tracking, self.out_dir, config=to_dict(self.cfg), run_id=self.wandb_id,
                              handle_signals=False)
            tracker.start()
            self.tracker = tracker
            self.wandb_id = tracker.run_id
            bar = progress(total=self.cfg.steps, initial=self.step_idx, desc=self.name, unit="step")
            recoveries, retries = 0, 0
            while self.step_idx < self.cfg.steps:
                self._trained_this_step = False
                try:
                    stats = self.step()
                except NonFiniteRewardError as e:  # no update was made with the bad rewards
                    stats = self._reward_skip(unwrap_ray_error(e))
                except (RayActorError, ActorUnavailableError) as e:  # an actor died
                    if retries < self.max_step_retries and self._retry_step(e):
                        retries += 1
                        continue
                    if recoveries >= self.max_recoveries:
                        raise
                    recoveries += 1
                    self._recover(e)
                    continue
                retries = 0
                self.step_idx += 1
                stop = self._check_finite(stats)
                tracker.log(stats, step=self.step_idx)
                if stop:
                    raise NonFiniteError(stop)
                if self.samples is not None:  # (prompts, completions, rewards) set by the step
                    tracker.log_samples(self.step_idx, *self.samples)
                    self.samples = None
                bar.update(1)
                shown = [k for k in ("reward/mean", "kl/seq_mean", "train/loss", "train/nll", "train/reward_accuracy",
                                     "train/pair_accuracy") if k in stats][:3]
                bar.set_postfix({k.split("/")[-1]: f"{stats[k]:.3g}" for k in shown})
                if self.cfg.save_every and self.step_idx % self.cfg.save_every == 0:
                    self.save_checkpoint()
                if self._stop_signal is not None:
                    path = self.save_checkpoint()
                    raise Interrupted(f"stopped by {signal.Signals(self._stop_signal).name} at step "
                                      f"{self.step_idx}; checkpoint {path} (resume: run the same command)")
            bar.close()
            path = self.save_checkpoint()
            lines = [f"{self.name}: {self.step_idx} steps done; checkpoint {path}"]
            if "learner" in self.groups:  # a standalone model for the next stage (model.path / reward.model_path)
                model_dir = str(self.out_dir / "model")
                lg = self.groups["learner"]
                lg.get([a.export_model.remote(model_dir) for a in lg.actors], "export model")
                lines.append(f"model: {model_dir}")
            lines += self.summary(tracker.history) + [phase_times(tracker.history)]
            lines += self.events[-5:] + [tracker.summary_line()]
            return {"history": tracker.history, "checkpoint": str(path), "summary": "\n".join(lines),
                    "events": self.events}
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

    max_recoveries = 2
    max_step_retries = 2  # in-place retries of one step after a stateless actor died

    def preflight(self) -> None:
        """Model path, tokenizer and prompt data are checked before Ray starts: a typo costs one line, not a
        cluster start-up (the prompt set is kept for the run)."""
        if "rollout" in self.roles_used:
            from rlcustom.trainers.roles import prompt_batch

            prompt_batch(self, 0)

    def _role_of(self, err: BaseException) -> str | None:
        actor_id = getattr(err, "actor_id", None)
        for role, g in self.groups.items():
            if any(a._actor_id.hex() == actor_id for a in g.actors):
                return role
        return None

    def _retry_step(self, err: BaseException) -> bool:
        """A stateless replica died and nothing was updated yet in this step: wait for Ray's restart of it,
        then run the step again. False when that does not apply (the caller then recovers from a checkpoint)."""
        role = self._role_of(err)
        if role is None or role in self.stateful_roles or role in ("learner", "rollout") or self._trained_this_step:
            return False
        self.event(f"step {self.step_idx + 1}: a {role} actor died ({type(err).__name__}); "
                   f"retrying the step once Ray has restarted it")
        try:
            self.groups[role].wait_ready(600)
        except Exception:  # noqa: BLE001 - its restart budget is spent: rebuild everything instead
            return False
        return True

    def _reward_skip(self, err: BaseException) -> dict[str, float]:
        self.timer.summary()  # this step's phase times are not a real step's
        self._last_reward_error = str(err)
        return {"skipped/nonfinite_reward_step": 1.0}

    def _recover(self, err: BaseException) -> None:
        """Rebuild every role and continue from the latest checkpoint (the start if none yet).

        A dead DeepSpeed rank cannot rejoin its group mid-step, so all roles restart together."""
        self.event(f"step {self.step_idx + 1}: an actor died ({type(err).__name__}); restarting all roles from "
                   f"the last checkpoint")
        self.shutdown()
        self._sync_ready = False
        self.place()
        self.build()
        self.wait_roles_ready()
        self.step_idx = 0
        if self.ckpt.latest() is not None:
            self.maybe_resume(force_latest=True)
        if "learner" in self.groups and "rollout" in self.groups:
            self.sync_weights()

    def _check_finite(self, stats: dict[str, float]) -> str | None:
        """Classify this step (reward / loss / grad / other metric non-finite, or fine), add the
        ``skipped/*`` counters to ``stats``, and return the stop message once
        ``optim.max_consecutive_nonfinite`` bad steps came in a row."""
        import math

        source, what = None, ""
        if stats.pop("skipped/nonfinite_reward_step", 0.0):
            source, what = "reward", getattr(self, "_last_reward_error", "reward")
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
        self._bad_steps = self._bad_steps + 1 if source else 0
        stats.update({f"skipped/nonfinite_{k}": float(v) for k, v in self.skip_counts.items()})
        stats["skipped/consecutive"] = float(self._bad_steps)
        if source is None:
            return None
        stats["train/skipped"] = 1.0
        self.event(f"step {self.step_idx}: skipped, no update (non-finite {what})")
        limit = self.cfg.optim.max_consecutive_nonfinite
        if self._bad_steps >= limit:
            return f"{self._bad_steps} consecutive steps with non-finite values; last: {what}"
        return None

    def shutdown(self) -> None:
        import ray

        from rlcustom.runtime.placement import release

        for g in self.groups.values():
            for a in g.actors:
                try:
                    ray.kill(a)
                except Exception:  # noqa: BLE001
                    pass
        self.groups = {}
        if self.placements:
            release(self.placements)
            self.placements = {}


def unwrap_ray_error(err: BaseException) -> BaseException:
    """The exception an actor raised (its one-line message), not Ray's wrapper with the remote traceback."""
    from ray.exceptions import RayTaskError

    while isinstance(err, RayTaskError) and getattr(err, "cause", None) is not None:
        err = err.cause
    return err


def phase_times(history: list[dict]) -> str:
    """'time per step: generate 4.1 s, score 1.2 s, ...' averaged over the run."""
    keys = [k for k in (history[0] if history else {}) if k.startswith("timing/") and k.endswith("_s")]
    parts = [f"{k[len('timing/'):-2]} {sum(h.get(k, 0.0) for h in history) / len(history):.2f} s" for k in keys]
    return "time per step: " + (", ".join(parts) if parts else "n/a")


def _rows(payload) -> range:
    import torch

    if isinstance(payload, dict):
        t = next(v for v in payload.values() if isinstance(v, torch.Tensor) and v.dim() > 0)
        return range(t.shape[0])
    return range(len(payload))


def run_trainer(cfg) -> dict[str, Any]:
    import rlcustom.trainers  # noqa: F401  (registers the built-in trainers)

    cls = TRAINERS.get(cfg.trainer)
    return cls(cfg).fit()
