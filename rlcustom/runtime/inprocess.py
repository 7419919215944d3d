"""``cluster.backend: inprocess``: every role an object in the driver's process, no Ray.

The trainer code is the same (``group.scatter``/``gather``/``broadcast``, ``actor.method.remote(...)``);
only the handles differ: :class:`InProcessActor` runs ``obj.method(...)`` at ``.remote(...)`` and hands
back an :class:`InProcessRef` holding the value (or the exception, raised at ``get`` as Ray raises a
task's error). Roles therefore run one after another, in this process's threads: for a debugger
(``breakpoint()`` in a reward or an actor works), for profiling, and for the test suite, where the
start-up of three to five actor processes costs more than a tiny model's whole run. There is no
placement, no restart after a crash and one learner rank (DeepSpeed with world size 1); weights reach
the rollout engine by a hand-over (``get_weights`` -> ``load_weights``), not a transport.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable

from rlcustom.errors import ConfigError
from rlcustom.runtime.runtime import RoleGroup

SINGLE_RANK_ROLES = ("learner", "critic")  # DeepSpeed ranks are processes: one per process here


class InProcessRef:
    """A finished call: its value, or the exception it raised (re-raised by :func:`resolve`)."""

    __slots__ = ("value", "error")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error


def resolve(x: Any) -> Any:
    """The value behind a ref (raising its error); a list of refs element-wise; anything else unchanged."""
    if isinstance(x, list):
        return [resolve(r) for r in x]
    if isinstance(x, InProcessRef):
        if x.error is not None:
            raise x.error
        return x.value
    return x


class _Method:
    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def remote(self, *args, **kwargs) -> InProcessRef:
        # refs passed as arguments are resolved first, as Ray does
        args = tuple(resolve(a) if isinstance(a, InProcessRef) else a for a in args)
        kwargs = {k: resolve(v) if isinstance(v, InProcessRef) else v for k, v in kwargs.items()}
        try:
            return InProcessRef(self.fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 - handed to the caller at get(), like a Ray task error
            return InProcessRef(error=e)


class InProcessActor:
    """``handle.method.remote(...)`` runs ``obj.method(...)`` now, in this process."""

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __getattr__(self, name: str) -> _Method:
        return _Method(getattr(self._obj, name))  # AttributeError for a method the class lacks, as hasattr expects


class InProcessGroup(RoleGroup):
    """A :class:`RoleGroup` over :class:`InProcessActor` handles: ``get`` resolves refs, no timeouts."""

    def get(self, refs: Any, what: str | None = None) -> Any:
        return resolve(refs)

    def wait_ready(self, timeout: float) -> list[dict]:
        return [resolve(a.ready.remote()) for a in self.actors]

    def wait_all(self, refs: list[Any]) -> None:  # a call has finished when .remote() returns
        return None


def check_replicas(roles: dict) -> None:
    """One rank per DeepSpeed role: ``roles.learner.replicas: 2`` needs processes (the Ray backend)."""
    for role in SINGLE_RANK_ROLES:
        rc = roles.get(role)
        if rc is not None and rc.replicas > 1:
            raise ConfigError(f"roles.{role}.replicas is {rc.replicas}, but cluster.backend 'inprocess' runs one "
                              f"rank per role in this process: set it to 1 or use cluster.backend: ray")


def placements(roles: list[str]) -> dict:
    """Stand-ins for the placement of each role: no bundles, no node (``node_ids[0] is None``: this process)."""
    return {r: SimpleNamespace(node_ids=[None]) for r in roles}


def make_group(role: str, cls: type, replicas: int, args_for: Callable[[int], tuple[tuple, dict]]) -> InProcessGroup:
    actors = []
    for i in range(replicas):
        a, kw = args_for(i)
        actors.append(InProcessActor(cls(*a, **kw)))
    return InProcessGroup(role, actors)
