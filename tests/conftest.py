"""Shared fixtures: tiny seeded models (seconds), offline W&B, no network."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread in the test process for every test, as each Ray role gets one here (an in-process actor
    that sets its own does not carry it into the next test): the in-process trainer runs
    (``cluster.backend: inprocess``) then cost what their Ray runs cost minus the actors' start-ups, and two
    OpenMP threads do not spin against every other process when the machine is loaded (measured: a tiny DPO run
    118 s with two threads beside a busy process, 27 s with one)."""
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): 2-layer random Llama with the SmolLM2 tokenizer, seed 0."""
    from rlcustom.models.tiny import tiny_llama

    return tiny_llama(seed=0)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The same tiny model written as an HF directory (for engines that need a path)."""
    from rlcustom.models.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def chat_prompts(tiny):
    _, tok = tiny
    qs = ["What is the capital of France?", "Tell me a joke.", "How do I bake bread?", "hi"]
    return [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            for q in qs]


@pytest.fixture(scope="session")
def stopping_tiny_dir(tmp_path_factory):
    """A tiny model that can stop (EOS reachable, mean length ~12 of 16): for length rewards/constraints."""
    from rlcustom.models.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny_eos") / "model", seed=0, eos_logit=6.0)


@pytest.fixture(scope="session")
def _session_ray():
    """Shuts down, at the end of the session, the Ray that :func:`local_ray` shares between modules."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def local_ray(_session_ray):
    """A real local Ray (2 logical CPUs, no dashboard), started once and shared by every module that asks for
    it (a Ray start-up costs seconds). A module that needs a cluster of its own shuts this one down first
    (``ray.shutdown()``); the next module that asks for it gets a fresh one. After each module, placement
    groups it left behind (a failed test's actors) are removed so that the next module starts with every CPU."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False)
    yield
    if ray.is_initialized():
        from ray.util import placement_group_table, remove_placement_group
        from ray.util.placement_group import PlacementGroup

        for pg_id, info in placement_group_table().items():
            if info.get("state") != "REMOVED":
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
