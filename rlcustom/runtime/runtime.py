"""Ray start-up and worker groups: the handles a trainer's stages talk to.

``RoleGroup`` wraps the actors of one role and dispatches explicitly:

* ``group.scatter("score", rollouts)`` splits the rows over the replicas (one future each),
  ``group.gather(refs)`` waits and concatenates them in row order (tensors padded on dim 1);
* ``group.broadcast("sleep")`` runs the same call on every replica and returns every answer;
* ``group.get(refs)`` waits with a timeout (a task that can never be scheduled must not hang a run).
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from rlcustom.errors import RLCustomError
from rlcustom.runtime.placement import RolePlacement


class ActorTimeout(RLCustomError):
    """A role's call did not answer within its timeout (the message names the role and the call)."""


def init_ray(cluster_cfg=None, *, num_cpus: int | None = None, runtime_env: dict | None = None) -> None:
    """Join ``cluster.address`` or start a local Ray.

    The local dashboard, and the job server it carries, stay off unless ``cluster.include_dashboard``;
    when on, they listen on ``cluster.dashboard_host`` (127.0.0.1 unless configured). Ray itself maps
    ``_node_ip_address=127.0.0.1`` to the machine's address on Linux and its GCS/raylet gRPC ports listen
    on all interfaces: those are guarded by Ray's token authentication, not by the bind address."""
    import ray

    from rlcustom.console import is_verbose

    if ray.is_initialized():
        return
    to_driver = is_verbose()  # actors' lines ("(Learner pid=...) ...") on the console only with --verbose
    address = getattr(cluster_cfg, "address", None)
    env = {"env_vars": {k: v for k, v in os.environ.items()
                        if k.startswith(("WANDB_MODE", "RLCUSTOM_", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                         "VLLM_CPU", "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS"))}}
    if runtime_env:
        env.update(runtime_env)
    address = address or os.environ.get("RAY_ADDRESS")  # a submitted job joins its cluster: local-only
    if address:                                           # settings (cluster.num_cpus, dashboard) do not apply
        ray.init(address=address, runtime_env=env, log_to_driver=to_driver)
    else:
        ray.init(num_cpus=num_cpus or getattr(cluster_cfg, "num_cpus", None),
                 include_dashboard=bool(getattr(cluster_cfg, "include_dashboard", False)),
                 dashboard_host=getattr(cluster_cfg, "dashboard_host", None) or "127.0.0.1",
                 _node_ip_address="127.0.0.1", runtime_env=env, log_to_driver=to_driver)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_get(refs: Any, timeout: float, what: str) -> Any:
    import ray
    from ray.exceptions import GetTimeoutError

    try:
        return ray.get(refs, timeout=timeout)
    except GetTimeoutError:
        raise ActorTimeout(f"{what} did not finish within {timeout:g} s") from None


@dataclass
class RoleGroup:
    """The actors of one role, created in the role's placement bundles."""

    role: str
    actors: list[Any]
    placement: RolePlacement | None = None
    timeout_s: float = 600.0
    factory: Callable[[int], Any] | None = None  # re-creates replica i after a fatal crash
    events: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # method -> the actors' method (a role served by another's)

    def __len__(self) -> int:
        return len(self.actors)

    def call(self, method: str, *args, **kwargs) -> list[Any]:
        method = self.aliases.get(method, method)
        return [getattr(a, method).remote(*args, **kwargs) for a in self.actors]

    def scatter(self, method: str, payload: Any, *args, **kwargs) -> list[Any]:
        """Rows of ``payload`` (a batch dict or Rollouts) split over the replicas; one future per non-empty part."""
        from rlcustom.engines.base import Rollouts

        if isinstance(payload, Rollouts):
            parts = [payload.select(range(s.start, s.stop)) for s in shard_rows(len(payload), len(self))]
        else:
            parts = shard_batch(payload, len(self))
        method = self.aliases.get(method, method)
        return [getattr(a, method).remote(p, *args, **kwargs) for a, p in zip(self.actors, parts) if num_rows(p)]

    def gather(self, refs: list[Any], what: str | None = None) -> Any:
        """Per-replica results of :meth:`scatter` in row order: tensors concatenated on dim 0 (padded on dim 1),
        lists by extension."""
        import torch

        parts = self.get(refs, what)
        if parts and isinstance(parts[0], torch.Tensor):
            if parts[0].dim() > 1:
                width = max(p.shape[1] for p in parts)
                parts = [torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts]
            return torch.cat(parts)
        return [x for p in parts for x in p]

    def broadcast(self, method: str, *args, **kwargs) -> list[Any]:
        """The same call on every replica; every replica's answer."""
        return self.get(self.call(method, *args, **kwargs), f"{self.role}.{method}")

    def get(self, refs: Any, what: str | None = None) -> Any:
        try:
            return ray_get(refs, self.timeout_s, what or f"role '{self.role}'")
        except ActorTimeout as e:  # say which knob: a loaded machine or long generations may need more
            raise ActorTimeout(f"{e} (raise roles.{self.role}.call_timeout_s if the work is just slow)") from None

    run = broadcast

    def wait_all(self, refs: list[Any]) -> None:
        """Until every call in ``refs`` has finished (or the call timeout passed; ``get`` then says which)."""
        import ray

        ray.wait(refs, num_returns=len(refs), timeout=self.timeout_s)

    def wait_ready(self, timeout: float) -> list[dict]:
        """Every replica answers ``ready()``; a restarting one is polled until it is back or time is up."""
        from ray.exceptions import ActorUnavailableError

        deadline = time.monotonic() + timeout
        out = []
        for a in self.actors:
            while True:
                left = deadline - time.monotonic()
                try:
                    out.append(ray_get(a.ready.remote(), max(left, 0.1), f"role '{self.role}' start-up"))
                    break
                except ActorUnavailableError:  # restarting after a crash
                    if left <= 0:
                        raise ActorTimeout(f"role '{self.role}': a replica did not come back within {timeout:g} s")
                    time.sleep(0.5)
        return out


def make_group(role: str, cls: type, placement: RolePlacement, *, args_for: Callable[[int], tuple[tuple, dict]],
               max_restarts: int = 2, timeout_s: float = 600.0, runtime_env: dict | None = None) -> RoleGroup:
    """Create ``placement.replicas`` actors of ``cls``; replica i gets ``args_for(i)``.

    Actors restart on crash (``max_restarts``); in-flight calls then raise
    ``RayActorError`` and the trainer decides whether to retry the step.
    """
    import ray

    remote_cls = ray.remote(cls)

    def create(i: int):
        a, kw = args_for(i)
        opts = placement.actor_options(i) | {"max_restarts": max_restarts, "max_task_retries": 0,
                                             "name": None}
        if runtime_env:
            opts["runtime_env"] = runtime_env
        return remote_cls.options(**opts).remote(*a, **kw)

    actors = [create(i) for i in range(placement.replicas)]
    return RoleGroup(role, actors, placement, timeout_s, create)


def shard_rows(n: int, parts: int) -> list[slice]:
    """Contiguous, near-equal row ranges for ``parts`` replicas."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        out.append(slice(start, start + size))
        start += size
    return out


def num_rows(payload: Any) -> int:
    """Rows of a batch dict (its first tensor with a batch dimension) or of a sequence."""
    import torch

    if isinstance(payload, dict):
        return next(v.shape[0] for v in payload.values() if isinstance(v, torch.Tensor) and v.dim() > 0)
    return len(payload)


def shard_batch(batch: dict, parts: int) -> list[dict]:
    import torch

    B = next(v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor))
    return [{k: (v[s] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == B else v)
             for k, v in batch.items()} for s in shard_rows(B, parts)]


class Timer:
    """``with timer("generate"): ...`` accumulates seconds per phase."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self_inner):
                self_inner.t = time.perf_counter()

            def __exit__(self_inner, *exc):
                timer.totals[name] = timer.totals.get(name, 0.0) + time.perf_counter() - self_inner.t

        return _Ctx()

    def summary(self, prefix: str = "timing/") -> dict[str, float]:
        out = {f"{prefix}{k}_s": v for k, v in self.totals.items()}
        self.totals = {}
        return out


def phase_times(history: list[dict]) -> str:
    """'time per step: generate 4.1 s, score 1.2 s, ...' averaged over the run (the ``timing/*_s`` of :class:`Timer`)."""
    keys = [k for k in (history[0] if history else {}) if k.startswith("timing/") and k.endswith("_s")]
    parts = [f"{k[len('timing/'):-2]} {sum(h.get(k, 0.0) for h in history) / len(history):.2f} s" for k in keys]
    return "time per step: " + (", ".join(parts) if parts else "n/a")
