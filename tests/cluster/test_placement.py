"""Scheduler on a simulated multi-node cluster (ray.cluster_utils.Cluster, GPUs declared as resources)."""
import time

import pytest
import ray

from rlcustom.config import RoleConfig
from rlcustom.runtime.placement import SchedulingError, place_roles, plan_groups, release


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # the suite's shared local Ray: this module needs a cluster of its own
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [c.add_node(num_cpus=2, num_gpus=2) for _ in range(3)]
    ray.init(address=c.address)
    c.wait_for_nodes()
    yield c, nodes
    ray.shutdown()
    c.shutdown()


@ray.remote
class Probe:
    def where(self):
        return ray.get_runtime_context().get_node_id(), ray.get_gpu_ids()


def test_plan_lands_on_expected_nodes(cluster):
    roles = {
        "rollout": RoleConfig(replicas=2, gpus=1, cpus=0.5),
        "learner": RoleConfig(replicas=4, gpus=1, cpus=0.5),
        "reference": RoleConfig(replicas=4, gpus=1, cpus=0.5, colocate_with="learner"),
    }
    pl = place_roles(roles, timeout_s=30)
    try:
        where = {}
        for role, p in pl.items():
            actors = [Probe.options(**p.actor_options(i)).remote() for i in range(p.replicas)]
            where[role] = ray.get([a.where.remote() for a in actors], timeout=60)
        rollout_nodes = [n for n, _ in where["rollout"]]
        learner_nodes = [n for n, _ in where["learner"]]
        # PACK: the 2 rollout replicas fill one node's 2 GPUs; the 4 learners fill the other two nodes
        assert len(set(rollout_nodes)) == 1
        assert sorted(learner_nodes.count(n) for n in set(learner_nodes)) == [2, 2]
        assert not set(rollout_nodes) & set(learner_nodes)
        assert len(set(rollout_nodes) | set(learner_nodes)) == 3
        # reference replica i shares learner replica i's bundle: same node, same GPU
        assert [n for n, _ in where["reference"]] == learner_nodes
        assert [g for _, g in where["reference"]] == [g for _, g in where["learner"]]
        assert pl["reference"].share == 0.5 and pl["reference"].host == "learner"
        assert pl["learner"].node_ids == learner_nodes
    finally:
        release(pl)


def test_strict_spread_uses_distinct_nodes(cluster):
    pl = place_roles({"learner": RoleConfig(replicas=3, gpus=1, cpus=0.5, strategy="STRICT_SPREAD")}, timeout_s=30)
    try:
        assert len(set(pl["learner"].node_ids)) == 3
    finally:
        release(pl)


def test_unplaceable_plan_fails_fast_with_role_and_need(cluster):
    t = time.monotonic()
    with pytest.raises(SchedulingError) as e:  # 8 GPUs asked, 6 exist
        place_roles({"learner": RoleConfig(replicas=8, gpus=1)}, timeout_s=30)
    assert "role 'learner'" in str(e.value) and "8 x {CPU: 1, GPU: 1}" in str(e.value)
    with pytest.raises(SchedulingError) as e:  # fits in total, not per node: 3 GPUs on one node
        place_roles({"rollout": RoleConfig(replicas=1, gpus=3)}, timeout_s=5)
    assert "role 'rollout'" in str(e.value) and "after waiting 5 s" in str(e.value)
    assert time.monotonic() - t < 30
    # nothing leaked: the whole cluster can still be placed
    pl = place_roles({"learner": RoleConfig(replicas=6, gpus=1, cpus=0.5)}, timeout_s=30)
    release(pl)


def test_colocation_validation():
    with pytest.raises(SchedulingError, match="not a role"):
        plan_groups({"reference": RoleConfig(colocate_with="learnr")})
    with pytest.raises(SchedulingError, match="only 1 bundles"):
        plan_groups({"learner": RoleConfig(replicas=1), "reference": RoleConfig(replicas=2, colocate_with="learner")})
