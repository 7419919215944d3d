"""The environment interface of multi-turn rollouts, and how a spec names one.

An environment is any object with::

    reset(row: dict) -> str                       # the episode's start; row = the prompt record's fields
    step(action: str) -> (observation: str, reward: float, done: bool[, info: dict[str, float]])

one instance per episode. ``row`` holds the prompt record's columns other than the prompt
(``answer``, ``tests``, ...; :mod:`rlcustom.data.fields`). ``reset`` returns text placed after the
prompt before the first model turn (context, never trained on; usually ``""``). ``step`` receives the
text of the model's latest turn and returns the next observation (appended as a chat turn of
``rollout.observation_role``), that turn's reward :math:`r_t`, whether the episode is over, and
optionally counters (``{"tool_calls": 1}``) summed per episode into ``env/<name>`` metrics. The
episode's return :math:`R = \\sum_t r_t` is its sequence score. Either method may be ``async def``.
Every call is bounded (:mod:`rlcustom.envs.guard`).

A spec is a registered name (``@ENVIRONMENTS.register("name")`` on a class or factory; the built-ins
are in :mod:`rlcustom.envs.tool_env`) or ``"module.path:Class"``; ``rollout.env_kwargs`` go to its
constructor.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Protocol, runtime_checkable

from rlcustom.errors import ConfigError
from rlcustom.registry import ENVIRONMENTS

__all__ = ["Environment", "make_env", "resolve_env"]


@runtime_checkable
class Environment(Protocol):
    def reset(self, row: dict) -> str: ...

    def step(self, action: str) -> tuple: ...


def resolve_env(spec: str) -> Callable[..., Any]:
    """The class (or factory) named by ``spec``; :class:`ConfigError` naming ``rollout.env`` otherwise."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"rollout.env must be a registered environment or 'module.path:Class', got {spec!r}")
    spec = spec.strip()
    if spec in ENVIRONMENTS:
        return ENVIRONMENTS.get(spec)
    if ":" not in spec:
        try:
            ENVIRONMENTS.get(spec)  # for the close-match hint
        except KeyError as e:
            raise ConfigError(f"rollout.env: {e.args[0]}; or give 'module.path:Class'") from None
    mod_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - any import failure is reported the same way
        raise ConfigError(f"rollout.env {spec!r}: cannot import module {mod_name!r}: {type(e).__name__}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"rollout.env {spec!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"rollout.env {spec!r}: {attr!r} is a {type(obj).__name__}, not a class or factory")
    return obj


def make_env(spec: str, kwargs: dict | None = None) -> Any:
    """A fresh environment for one episode."""
    return resolve_env(spec)(**dict(kwargs or {}))
