"""Resource plan -> Ray placement groups: one scheduler for every algorithm.

Each role that is not colocated gets one placement group with one bundle per
replica (``{"CPU": cpus, "GPU": gpus}``) and the role's strategy (PACK by
default; STRICT_SPREAD puts replicas on different nodes). A role with
``colocate_with: host`` has no group of its own: replica ``i`` runs in the
host's bundle ``i`` and the two time-share the device (each actor asks for a
fraction of the bundle, so Ray keeps both on it).

A plan that cannot be placed fails within ``placement_timeout_s`` with a
message naming the role and what it needs; it never hangs.
"""
from __future__ import annotations

import contextlib

from dataclasses import dataclass, field
from typing import Any, Mapping

from rlcustom.errors import RLCustomError


class SchedulingError(RLCustomError):
    """A role cannot be placed on the cluster."""


@dataclass
class RolePlacement:
    role: str
    replicas: int
    bundle: dict[str, float]  # resources of one replica's bundle
    pg: Any  # ray PlacementGroup (the host's one for colocated roles)
    host: str  # the role that owns the placement group (itself unless colocated)
    share: float = 1.0  # fraction of the bundle this role's actors ask for
    node_ids: list[str] = field(default_factory=list)

    def actor_options(self, replica: int) -> dict:
        """``ray.remote(cls).options(**this)`` for replica ``replica``."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if replica >= self.replicas:
            raise IndexError(f"role '{self.role}' has {self.replicas} replicas, asked for {replica}")
        return {
            "num_cpus": self.bundle.get("CPU", 0.0) * self.share,
            "num_gpus": self.bundle.get("GPU", 0.0) * self.share,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                placement_group=self.pg, placement_group_bundle_index=replica,
                placement_group_capture_child_tasks=False,
            ),
        }


def _bundle(role_cfg) -> dict[str, float]:
    b = {"CPU": max(float(role_cfg.cpus), 0.01)}  # a bundle must reserve something
    if role_cfg.gpus:
        b["GPU"] = float(role_cfg.gpus)
    return b


def _fmt(b: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in b.items()) + "}"


def plan_groups(roles: Mapping[str, Any]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Validate colocation; returns (host -> [roles sharing it], role -> host)."""
    host_of: dict[str, str] = {}
    for name, rc in roles.items():
        if rc.colocate_with is None:
            host_of[name] = name
    for name, rc in roles.items():
        if rc.colocate_with is None:
            continue
        host = rc.colocate_with
        if host not in roles:
            raise SchedulingError(f"role '{name}': colocate_with '{host}' is not a role (roles: {', '.join(roles)})")
        if roles[host].colocate_with is not None:
            raise SchedulingError(f"role '{name}': colocate_with '{host}', which is itself colocated; name the host role")
        if rc.replicas > roles[host].replicas:
            raise SchedulingError(f"role '{name}' has {rc.replicas} replicas but its host '{host}' has only "
                                  f"{roles[host].replicas} bundles to share")
        host_of[name] = host
    groups: dict[str, list[str]] = {}
    for name, host in host_of.items():
        groups.setdefault(host, []).append(name)
    return groups, host_of


def place_roles(roles: Mapping[str, Any], timeout_s: float = 30.0) -> dict[str, RolePlacement]:
    """Create (and wait for) the placement groups of a plan; Ray must be initialised."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    groups, _ = plan_groups(roles)
    total = ray.cluster_resources()
    made: list[Any] = []
    out: dict[str, RolePlacement] = {}
    try:
        for host, members in groups.items():
            rc = roles[host]
            bundle = _bundle(rc)
            for k, v in bundle.items():  # an obviously impossible ask fails at once
                if v * rc.replicas > total.get(k, 0.0) + 1e-9 or (k == "GPU" and v > 0 and total.get(k, 0.0) == 0):
                    raise SchedulingError(_unplaceable(host, rc, bundle, total))
            pg = placement_group([dict(bundle) for _ in range(rc.replicas)], strategy=rc.strategy,
                                 name=f"rlcustom-{host}")
            made.append(pg)
            ready = pg.ready()
            done, _ = ray.wait([ready], timeout=timeout_s)
            if not done:
                raise SchedulingError(_unplaceable(host, rc, bundle, ray.available_resources(), timeout_s))
            share = 1.0 / len(members)
            for role in members:
                out[role] = RolePlacement(role, roles[role].replicas, bundle, pg, host, share)
        _fill_node_ids(out)
        return out
    except BaseException:
        for pg in made:
            with contextlib.suppress(Exception):  # best effort: undo the groups made before the failure
                remove_placement_group(pg)
        raise


def _unplaceable(role: str, rc, bundle: Mapping[str, float], avail: Mapping[str, float], waited: float | None = None) -> str:
    have = {k: round(v, 2) for k, v in avail.items() if k in ("CPU", "GPU") or k in bundle}
    when = f" after waiting {waited:g} s" if waited else ""
    return (f"cannot place role '{role}': it needs {rc.replicas} x {_fmt(bundle)} with strategy {rc.strategy}, "
            f"the cluster has {_fmt(have)} available{when}")


def _fill_node_ids(placements: Mapping[str, RolePlacement]) -> None:
    from ray.util import placement_group_table

    for p in placements.values():
        table = placement_group_table(p.pg)
        nodes = table.get("bundles_to_node_id", {})
        p.node_ids = [nodes.get(i) for i in range(p.replicas)]


def release(placements: Mapping[str, RolePlacement]) -> None:
    from ray.util.placement_group import remove_placement_group

    seen = set()
    for p in placements.values():
        if id(p.pg) in seen:
            continue
        seen.add(id(p.pg))
        with contextlib.suppress(Exception):  # best effort: a group may be gone with its cluster already
            remove_placement_group(p.pg)
