"""A full algorithm step on a simulated 2-node cluster with the learner's DeepSpeed ranks on both nodes."""
import json

import pytest
import ray

from rlcustom.config import load_config
from rlcustom.trainers.pg import PGTrainer


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # the suite's shared local Ray: this module needs a cluster of its own
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(2):
        c.add_node(num_cpus=2)
    ray.init(address=c.address)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def test_learner_ranks_span_nodes(two_nodes, tiny_dir, tmp_path):
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in ["Say hi.", "Name a color.", "What is rain?"]))
    cfg = load_config(None, [
        "trainer=pg", f"model.path={tiny_dir}", f"output_dir={tmp_path / 'run'}", f"data.prompts={p}",
        "data.split=all", "steps=2", "sampling.max_new_tokens=6", "sampling.n=2", "algo.prompts_per_step=2",
        "algo.check_sync=true", "engine=hf", "reward.spec=length_tokens", "tracking.mode=disabled",
        "roles.learner.replicas=2", "roles.learner.cpus=1", "roles.learner.strategy=STRICT_SPREAD",
        "roles.learner.zero_stage=2", "roles.rollout.cpus=0.5", "roles.reward.cpus=0.5"])
    seen = {}

    class Probe(PGTrainer):
        def build(self):
            super().build()
            seen["learner_nodes"] = self.groups["learner"].wait_ready(120)

    res = Probe(cfg).fit()
    nodes = [r["node_id"] for r in seen["learner_nodes"]]
    assert len(set(nodes)) == 2  # rank 0 and rank 1 on different nodes, one gloo group across them
    assert len(res["history"]) == 2
    assert all(h["system/sync_max_logprob_diff"] < 1e-5 for h in res["history"])
