"""An environment's calls, bounded: a call that raises, hangs, returns the wrong types or a giant
observation ends that episode with a reason; it never reaches the rollout loop as an exception.

Each ``reset``/``step`` runs on its own daemon thread and is waited for at most ``timeout_s``
(``async def`` methods are run to completion on that thread with :func:`asyncio.run`). A call still
running at its deadline is abandoned: the episode ends as ``env_timeout`` and the environment is
never called again (Python cannot kill a thread; an environment that may hang for good should do its
work in a subprocess, as the ``python`` tool does through :mod:`rlcustom.rewards.sandbox`).

Failure reasons: ``env_error`` (it raised), ``env_timeout``, ``env_bad_type`` (``reset`` must return
a str; ``step`` an ``(observation: str, reward: real, done: bool)`` tuple, optionally with a fourth
``info`` dict of counters), ``env_bad_reward`` (a non-finite reward) and ``env_observation_too_long``
(over ``max_observation_chars``).
"""
from __future__ import annotations

import asyncio
import inspect
import math
import numbers
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FAILURES", "GuardedEnv", "Outcome", "PendingCall"]

FAILURES = ("env_error", "env_timeout", "env_bad_type", "env_bad_reward", "env_observation_too_long")


@dataclass
class Outcome:
    """What one environment call gave: an observation, a reward, done, counters; or a failure."""

    observation: str = ""
    reward: float = 0.0
    done: bool = False
    info: dict[str, float] = field(default_factory=dict)
    failure: str | None = None  # one of FAILURES
    message: str = ""


class PendingCall:
    """One call on a daemon thread; :meth:`result` waits until its deadline."""

    def __init__(self, fn: Any, arg: Any, timeout_s: float, check: Any, owner: "GuardedEnv | None" = None) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.timeout_s, self.check, self.owner = timeout_s, check, owner
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn, arg), daemon=True, name="rlcustom-env-call")
        self.thread.start()

    def _run(self, fn: Any, arg: Any) -> None:
        try:
            v = fn(arg)
            self.value = asyncio.run(v) if inspect.isawaitable(v) else v
        except BaseException as e:  # noqa: BLE001  (SystemExit too: an environment must not end the actor)
            self.error = e

    def result(self) -> Outcome:
        self.thread.join(max(0.0, self.deadline - time.monotonic()))
        if self.thread.is_alive():
            out = Outcome(failure="env_timeout", message=f"no answer within {self.timeout_s:g} s")
        elif self.error is not None:
            out = Outcome(failure="env_error", message=f"{type(self.error).__name__}: {self.error}"[:500])
        else:
            out = self.check(self.value)
        if out.failure and self.owner is not None:
            self.owner.dead = out  # a failed environment is never called again
        return out


class _Done:
    """The pending call of an environment that already failed (never called again)."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome

    def result(self) -> Outcome:
        return self.outcome


class GuardedEnv:
    """Wraps an environment object (``reset(row)``, ``step(action_text)``) with the checks above."""

    def __init__(self, env: Any, timeout_s: float = 10.0, max_observation_chars: int = 4096) -> None:
        self.env, self.timeout_s, self.max_chars = env, timeout_s, max_observation_chars
        self.dead: Outcome | None = None

    def _call(self, method: str, arg: Any, check: Any) -> Any:
        if self.dead is not None:
            return _Done(self.dead)
        fn = getattr(self.env, method, None)
        if not callable(fn):
            self.dead = Outcome(failure="env_bad_type", message=f"{type(self.env).__name__} has no {method}()")
            return _Done(self.dead)
        return PendingCall(fn, arg, self.timeout_s, check, owner=self)

    def reset(self, row: dict) -> Any:
        return self._call("reset", dict(row), self._check_reset)

    def step(self, action: str) -> Any:
        return self._call("step", action, self._check_step)

    def _observation(self, obs: Any, what: str) -> Outcome | None:
        if not isinstance(obs, str):
            return Outcome(failure="env_bad_type", message=f"{what} returned a {type(obs).__name__} observation, "
                                                           "expected str")
        if len(obs) > self.max_chars:
            return Outcome(failure="env_observation_too_long",
                           message=f"{what} returned {len(obs)} characters (max_observation_chars={self.max_chars})")
        return None

    def _check_reset(self, value: Any) -> Outcome:
        value = "" if value is None else value
        return self._observation(value, "reset") or Outcome(observation=value)

    def _check_step(self, value: Any) -> Outcome:
        if not isinstance(value, tuple) or len(value) not in (3, 4):
            return Outcome(failure="env_bad_type", message=f"step returned {type(value).__name__}, expected "
                                                           "(observation, reward, done[, info])")
        obs, reward, done = value[:3]
        info = value[3] if len(value) == 4 else {}
        bad = self._observation(obs, "step")
        if bad:
            return bad
        if isinstance(reward, bool) or not isinstance(reward, numbers.Real):
            return Outcome(failure="env_bad_type", message=f"step returned a {type(reward).__name__} reward")
        if not math.isfinite(float(reward)):
            return Outcome(failure="env_bad_reward", message=f"step returned reward {reward}")
        if not isinstance(done, bool) and type(done).__name__ != "bool_":  # numpy's bool too
            return Outcome(failure="env_bad_type", message=f"step returned a {type(done).__name__} done flag")
        if not isinstance(info, dict) or not all(isinstance(k, str) and isinstance(v, numbers.Real)
                                                 for k, v in info.items()):
            return Outcome(failure="env_bad_type", message="step's info must map str to numbers")
        return Outcome(observation=obs, reward=float(reward), done=bool(done),
                       info={k: float(v) for k, v in info.items()})
