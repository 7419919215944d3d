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


@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray for one test module (2 logical CPUs, no dashboard), shut down after it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
