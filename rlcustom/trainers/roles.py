"""Role builders shared by the trainers: each places one role's actors in its bundles."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlcustom.trainers.base import Trainer


SCORERS = ("reference", "reward", "critic")  # roles whose forwards score a step's rollouts


def sequential_scorers(trainer: "Trainer") -> tuple[str, ...]:
    """The scoring roles (with actors of their own) that share one device: every one on CPU on a single node
    (they share its cores), or all on GPU in one colocated placement group (one GPU's fractions). Their
    forwards then run one after another, each with all their threads, instead of all at once with a
    thread each (:func:`_threads`, :func:`rlcustom.trainers.scoring.settle`); ``()`` when they stay concurrent
    (separate devices, or fewer than two)."""
    shared = trainer.shared_roles()
    roles = [r for r in SCORERS if r in trainer.roles_used and r not in shared]
    if len(roles) < 2:
        return ()
    rcs = {r: trainer.role_cfg(r) for r in roles}
    if all(rc.gpus == 0 for rc in rcs.values()):
        places = [trainer.placements.get(r) for r in roles]
        nodes = {n for p in places if p is not None for n in p.node_ids if n is not None}
        return tuple(roles) if len(nodes) <= 1 else ()
    hosts = {rc.colocate_with or r for r, rc in rcs.items()}
    return tuple(roles) if len(hosts) == 1 and all(rc.gpus > 0 for rc in rcs.values()) else ()


def _threads(trainer: "Trainer", role: str) -> int | None:
    """``num_threads``, else the role's CPUs; a scorer that shares its device with others (run one after another)
    gets all their CPUs. In-process roles (``cluster.backend: inprocess``) keep this process's threads (None)."""
    if getattr(trainer, "in_process", False):
        return None
    rc = trainer.role_cfg(role)
    if rc.num_threads:
        return rc.num_threads
    seq = sequential_scorers(trainer) if role in SCORERS else ()
    cpus = sum(trainer.role_cfg(r).cpus for r in seq) if role in seq else rc.cpus
    return max(1, int(round(cpus)))


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
                  num_layers: int | None = None, value_head: bool = False):
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
         **({"num_layers": num_layers} if num_layers else {}), **({"value_head": True} if value_head else {})}))


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


def reference_on_learner(cfg, shareable: bool = True) -> bool:
    """Whether the reference role is the LoRA learner with its adapter disabled (``roles.reference.share``:
    ``learner``; ``auto`` when ``model.lora`` is set and the trainer's reference is the initial policy)."""
    rc = cfg.roles.get("reference")
    share = rc.share if rc is not None else "auto"
    if share == "learner" and (cfg.model.lora is None or not shareable):
        why = "model.lora is not set" if cfg.model.lora is None else f"trainer '{cfg.trainer}' needs its own reference"
        raise ValueError(f"key 'roles.reference.share': learner needs a LoRA learner whose base is the reference "
                         f"({why}); use auto or separate")
    return shareable and cfg.model.lora is not None and share in ("auto", "learner")


def shared_roles(trainer: "Trainer") -> dict[str, str]:
    """``{"reference": "learner"}`` when the learner serves the reference (see :func:`reference_on_learner`)."""
    used = trainer.roles_used
    if "reference" in used and "learner" in used and reference_on_learner(
            trainer.cfg, getattr(trainer, "reference_shareable", False)):
        return {"reference": "learner"}
    return {}


def build_reference(trainer: "Trainer", role: str = "reference", model_path: str | None = None):
    """The reference's actors, or with :func:`shared_roles` the learner's (built first) answering its ``logprobs``
    with the adapter disabled."""
    from rlcustom.actors.reference import ReferenceActor

    cfg = trainer.cfg
    if shared_roles(trainer).get(role) == "learner" and model_path in (None, cfg.model.path):
        return trainer.share_role(role, "learner", {"logprobs": "reference_logprobs"})
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
