"""Role builders shared by the trainers: each places one role's actors in its bundles."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlcustom.trainers.base import Trainer


def _threads(trainer: "Trainer", role: str) -> int:
    rc = trainer.role_cfg(role)
    return rc.num_threads or max(1, int(round(rc.cpus)))


def build_rollout(trainer: "Trainer", role: str = "rollout", model=None):
    from rlcustom.actors.rollout import RolloutActor

    rc, cfg = trainer.role_cfg(role), trainer.cfg
    engine = rc.engine if rc.engine != "auto" else cfg.engine
    group = trainer.add_role(role, RolloutActor, lambda i: (
        (model or cfg.model,), {"engine": engine, "seed": cfg.seed, "rank": i, "num_threads": _threads(trainer, role),
                                "engine_kwargs": ({"tensor_parallel_size": rc.tensor_parallel_size}
                                                  if rc.tensor_parallel_size > 1 else {})}))
    # read in wait_roles_ready, not here: blocking now would start the other roles' actors only after this one
    trainer.after_ready["pad_id"] = (group, group.actors[0].pad_id.remote())
    return group


def build_learner(trainer: "Trainer", role: str = "learner", model=None, model_kind: str = "causal_lm",
                  num_layers: int | None = None):
    from rlcustom.actors.learner import LearnerActor
    from rlcustom.runtime.runtime import free_port
    from rlcustom.engines.weight_sync import WeightSyncMixin

    cls = type("SyncedLearner", (LearnerActor, WeightSyncMixin), {})
    rc, cfg = trainer.role_cfg(role), trainer.cfg
    port = free_port()
    return trainer.add_role(role, cls, lambda i: (
        (model or cfg.model, cfg.optim),
        {"rank": i, "world_size": rc.replicas, "master_addr": _master_addr(trainer, role), "master_port": port,
         "zero_stage": rc.zero_stage, "offload_optimizer": rc.offload_optimizer, "offload_params": rc.offload_params,
         "seed": cfg.seed, "num_threads": _threads(trainer, role), "model_kind": model_kind,
         **({"num_layers": num_layers} if num_layers else {})}))


def _master_addr(trainer: "Trainer", role: str) -> str:
    """IP of the node that holds bundle 0 of the role (so ranks on other nodes can reach it)."""
    node_id = trainer.placements[role].node_ids[0]
    if node_id is None:  # roles built in this process, without Ray (benchmarks/gpu_check.py)
        return "127.0.0.1"
    import ray

    for n in ray.nodes():
        if n.get("NodeID") == node_id and n.get("Alive"):
            return n.get("NodeManagerAddress", "127.0.0.1")
    return "127.0.0.1"


def build_reward(trainer: "Trainer", role: str = "reward"):
    from rlcustom.actors.reward import RewardActor

    r, cfg = trainer.cfg.reward, trainer.cfg
    return trainer.add_role(role, RewardActor, lambda i: (
        (r.spec,), {"model_path": r.model_path, "url": r.url, "kwargs": dict(r.kwargs), "seed": cfg.seed,
                    "rank": i, "num_threads": _threads(trainer, role),
                    "tokenizer_path": cfg.model.path, "timeout_s": r.timeout_s, "max_retries": r.max_retries,
                    "api_key_env": r.api_key_env}))


def build_reference(trainer: "Trainer", role: str = "reference", model_path: str | None = None):
    from rlcustom.actors.reference import ReferenceActor

    cfg = trainer.cfg
    return trainer.add_role(role, ReferenceActor, lambda i: (
        (model_path or cfg.model.path,), {"dtype": cfg.model.dtype, "trust_remote_code": cfg.model.trust_remote_code,
                                          "seed": cfg.seed, "num_threads": _threads(trainer, role), "rank": i}))


def first_last(history: list[dict], key: str, k: int = 3) -> str:
    vals = [h[key] for h in history if key in h]
    if not vals:
        return f"{key}: no values"
    k = max(1, min(k, len(vals) // 2 or 1))
    first, last = sum(vals[:k]) / k, sum(vals[-k:]) / k
    return f"{key}: first {k} steps {first:.3f} -> last {k} steps {last:.3f} ({len(vals)} steps)"


def build_value(trainer: "Trainer", role: str = "critic", *, model_path: str | None = None, lr: float | None = None,
                num_layers: int | None = None):
    from rlcustom.actors.value import ValueActor

    from rlcustom.runtime.runtime import free_port

    cfg, rc, port = trainer.cfg, trainer.role_cfg(role), free_port()
    return trainer.add_role(role, ValueActor, lambda i: (  # data-parallel ranks, as build_learner's
        (model_path or cfg.model.path, cfg.optim), {"dtype": cfg.model.dtype, "lr": lr, "num_layers": num_layers,
                                                    "seed": cfg.seed, "rank": i, "world_size": rc.replicas,
                                                    "master_addr": _master_addr(trainer, role), "master_port": port,
                                                    "zero_stage": rc.zero_stage,
                                                    "offload_optimizer": rc.offload_optimizer,
                                                    "offload_params": rc.offload_params,
                                                    "num_threads": _threads(trainer, role)}))
