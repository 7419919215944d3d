"""Learner -> rollout weight transport, as the trainer's ``sync`` stage calls it.

Two transports (``sync:`` in the config): ``collective`` (a process group of its own: rank 0 is
learner rank 0, ranks 1..N the rollout replicas; see :mod:`rlcustom.engines.weight_sync` for the
actor side) and ``object_store`` (the state dict through Ray's object store). LoRA runs send the
adapter only. The group is built lazily on the first sync and rebuilt after a replica restart.
"""
from __future__ import annotations

import sys
import time

from rlcustom.runtime.runtime import RoleGroup, free_port


class WeightSync:
    def __init__(self, mode: str, *, adapter_only: bool, zero3: bool) -> None:
        self.mode, self.adapter_only, self.zero3 = mode, adapter_only, zero3
        self.ready = False  # the collective group exists (False after a restart: built again)

    def __call__(self, lg: RoleGroup, rg: RoleGroup) -> dict[str, float]:
        """Learner rank 0 -> every rollout replica."""
        t0 = time.perf_counter()
        if self.mode == "object_store":
            ref = lg.actors[0].get_weights.remote(self.adapter_only)
            rg.get([a.load_weights.remote(ref, self.adapter_only) for a in rg.actors], "sync (object store)")
            return {"timing/sync_s": time.perf_counter() - t0}
        if not self.ready:
            self._setup(lg, rg)
        meta = lg.get(lg.actors[0].sync_meta.remote(self.adapter_only), "sync meta")
        refs = [lg.actors[0].sync_send.remote(self.adapter_only)]
        if self.zero3:  # ZeRO-3 gathers are collective across learner ranks
            refs += [a.sync_gather_only.remote(self.adapter_only) for a in lg.actors[1:]]
        refs += [a.sync_recv.remote(meta, self.adapter_only) for a in rg.actors]
        stats = rg.get(refs, "weight sync")
        return {"timing/sync_s": time.perf_counter() - t0, "system/sync_bytes": stats[0].get("sync/bytes", 0.0)}

    def _setup(self, lg: RoleGroup, rg: RoleGroup) -> None:
        info = lg.get(lg.actors[0].ready.remote(), "learner ready")
        host = info.get("ip") or "127.0.0.1"
        port, world = free_port(), 1 + len(rg)
        refs = [lg.actors[0].init_sync_group.remote(host, port, world, 0)]
        refs += [a.init_sync_group.remote(host, port, world, i + 1) for i, a in enumerate(rg.actors)]
        lg.get(refs, "sync group set-up")
        self.ready = True


def check_sync(ro, lg: RoleGroup, rg: RoleGroup, pad_id: int, zero3: bool) -> dict[str, float]:
    """Max |log-prob difference| between rollout engine and learner on the first sample."""
    from rlcustom.engines.base import Rollouts

    one = ro.select([0])
    eng = rg.get(rg.actors[0].logprobs_of.remote(one.prompt_ids, one.response_ids), "rollout logprobs")
    batch = Rollouts(one.prompt_ids, one.response_ids, eng, ["length"], [0]).padded(pad_id)
    ranks = lg.actors if zero3 else lg.actors[:1]  # ZeRO-3: the forward is collective
    ln = lg.get([a.forward_logprobs.remote(batch) for a in ranks], "learner logprobs")[0]
    diff = max(abs(a - b) for a, b in zip(eng[0], ln[0, : len(eng[0])].tolist())) if eng[0] else 0.0
    return {"system/sync_max_logprob_diff": float(diff)}


def generate_with_retry(rg: RoleGroup, prompts: list, params, *, on_death, attempts: int = 3, step: int = 0,
                        episodes=None):
    """Prompts split over rollout replicas (replica i samples with seed ``seed + 7919 i``); a crashed replica
    costs a retry of this call only: ``on_death(err, attempt)`` waits for Ray's restart and re-syncs weights.
    ``episodes`` (a :class:`~rlcustom.config.rollout.RolloutConfig` with ``env`` set): multi-turn episodes
    (``RolloutActor.episodes``), each replica given its prompts' fields (``prompts.fields``)."""
    from rlcustom.engines.base import Rollouts
    from rlcustom.errors import RLCustomError

    for attempt in range(attempts):
        try:
            return Rollouts.concat(rg.get(launch_generate(rg, prompts, params, episodes), "generate"))
        except Exception as e:
            if not actor_died(e):
                raise
            on_death(e, attempt)
    raise RLCustomError(f"rollout failed {attempts} times in step {step}")


def actor_died(e: BaseException) -> bool:
    """A Ray actor crashed or is restarting (never true without Ray: in-process roles raise their own errors)."""
    exc = sys.modules.get("ray.exceptions")
    return exc is not None and isinstance(e, (exc.RayActorError, exc.ActorUnavailableError))


def launch_generate(rg: RoleGroup, prompts: list, params, episodes=None) -> list:
    """One ``generate`` (or, with ``episodes``, multi-turn ``episodes``) future per rollout replica with rows
    (replica i samples with seed ``seed + 7919 i``); ``Rollouts.concat(rg.get(refs))`` is the batch in prompt order."""
    from rlcustom.runtime.runtime import shard_rows

    parts = shard_rows(len(prompts), len(rg))
    fields = getattr(prompts, "fields", None) or [{} for _ in prompts]
    return [(a.episodes.remote(list(prompts[s]), fields[s], params.with_(seed=(params.seed or 0) + 7919 * i), episodes)
             if episodes is not None else a.generate.remote(prompts[s], params.with_(seed=(params.seed or 0) + 7919 * i)))
            for i, (a, s) in enumerate(zip(rg.actors, parts)) if s.stop > s.start]
