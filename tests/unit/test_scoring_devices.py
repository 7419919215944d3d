"""Scorers on one shared device run one after another with all their threads; on separate devices they stay
concurrent with their own (rlcustom.trainers.roles.sequential_scorers / _threads)."""
from __future__ import annotations

from types import SimpleNamespace

from rlcustom.config import RoleConfig
from rlcustom.trainers.roles import _threads, sequential_scorers


def trainer(roles: dict[str, RoleConfig], nodes: dict[str, str] | None = None, shared=None):
    used = ("rollout", "learner", "reference", "reward", "critic")
    place = {r: SimpleNamespace(node_ids=[(nodes or {}).get(r, "n0")]) for r in used}
    return SimpleNamespace(roles_used=used, role_cfg=lambda r: roles.get(r, RoleConfig()), placements=place,
                           shared_roles=lambda: shared or {})


def test_cpu_scorers_on_one_node_are_sequential_with_all_their_threads():
    t = trainer({"reference": RoleConfig(cpus=0.5), "reward": RoleConfig(cpus=0.5), "critic": RoleConfig(cpus=1.0),
                 "learner": RoleConfig(cpus=1.0)})
    assert sequential_scorers(t) == ("reference", "reward", "critic")
    assert [_threads(t, r) for r in ("reference", "reward", "critic")] == [2, 2, 2]  # 0.5 + 0.5 + 1 CPUs
    assert _threads(t, "learner") == 1  # not a scorer: its own CPUs
    t = trainer({"reference": RoleConfig(cpus=0.5, num_threads=3), "reward": RoleConfig(cpus=0.5)})
    assert _threads(t, "reference") == 3  # an explicit num_threads wins


def test_separate_devices_stay_concurrent():
    t = trainer({r: RoleConfig(cpus=1.0) for r in ("reference", "reward", "critic")},
                nodes={"reference": "n0", "reward": "n1", "critic": "n0"})
    assert sequential_scorers(t) == () and _threads(t, "reference") == 1
    gpus = {r: RoleConfig(cpus=1.0, gpus=1.0) for r in ("reference", "critic")} | {"reward": RoleConfig(gpus=1.0)}
    assert sequential_scorers(trainer(gpus)) == ()  # a GPU each
    one_gpu = {"reference": RoleConfig(gpus=0.3), "reward": RoleConfig(gpus=0.3, colocate_with="reference"),
               "critic": RoleConfig(gpus=0.3, colocate_with="reference")}
    assert sequential_scorers(trainer(one_gpu)) == ("reference", "reward", "critic")  # one GPU's fractions


def test_a_shared_reference_leaves_fewer_scorers():
    t = trainer({}, shared={"reference": "learner", "critic": "learner"})
    assert sequential_scorers(t) == ()  # the reward alone
    t = trainer({"reward": RoleConfig(cpus=1.0), "critic": RoleConfig(cpus=1.0)}, shared={"reference": "learner"})
    assert sequential_scorers(t) == ("reward", "critic") and _threads(t, "critic") == 2
