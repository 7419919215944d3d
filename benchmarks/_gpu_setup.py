"""Set-up for ``rlcustom bench gpu_check`` (not a benchmark itself: leading underscore).

What the check runs on: the device and dtype, the model directory (tiny, SmolLM2-135M's
architecture with random weights, or a path), fixed prompts, a result row, and the
learner / rollout roles built exactly as the trainers build them, in this process.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# SmolLM2-135M(-Instruct)'s architecture (its config.json as transformers 5 writes it): the weights are
# random, so nothing is downloaded and nothing large has to travel to a GPU machine. The timings of a
# forward pass depend on shapes, not on what the weights learned.
SMOLLM2_135M_CONFIG = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 49152, "hidden_size": 576,
    "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
    "head_dim": 64, "hidden_act": "silu", "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}, "tie_word_embeddings": True,
    "attention_bias": False, "mlp_bias": False, "initializer_range": 0.02,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
}
MODELS = ("tiny", "smollm2-135m-config")
QUESTIONS = ["What is the capital of France?", "Tell me a joke.", "How do I bake bread?", "hi",
             "Name three colors.", "Why is the sky blue?", "Write a haiku about rain.", "What is 2 + 2?"]
NO_IMPORT = ("ray", "vllm")  # absent on the GPU machine; kept out of this process here too


@dataclass
class Row:
    part: str
    status: str  # pass | fail | skipped: <reason> | not available: <reason>
    metric: str
    seconds: float
    data: dict = field(default_factory=dict)


@dataclass
class Ctx:
    """What every part shares."""

    device: str  # cuda | cpu
    dtype: str  # bfloat16 on cuda, float32 on cpu
    model_name: str
    model_dir: Path
    tokenizer: object
    batch: int
    new_tokens: int
    train_steps: int
    repeats: int
    trainer_steps: int
    work: Path
    roles: dict = field(default_factory=dict)  # learners and rollout actors made by part (a)/(b), reused by (c)

    @property
    def backend(self) -> str:
        return "nccl" if self.device == "cuda" else "gloo"

    @property
    def bf16(self) -> bool:
        return self.dtype == "bfloat16"

    def prompts(self, n: int | None = None) -> list[str]:
        n = n or self.batch
        qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]
        return [self.tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                   add_generation_prompt=True) for q in qs]


def block_imports(names: tuple[str, ...] = NO_IMPORT) -> list[str]:
    """Make ``names`` look absent (``import`` fails, ``find_spec`` is None), as on the GPU machine.

    Returns those already imported before (then the check cannot claim it ran without them)."""
    already = [n for n in names if sys.modules.get(n) is not None]
    for n in names:
        if n not in sys.modules:
            sys.modules[n] = None  # type: ignore[assignment]
    return already


def ensure_actors_package() -> str:
    """``rlcustom.actors`` is the repository's top-level ``actors/`` folder (pyproject's package-dir mapping).
    In a plain checkout that was never pip-installed (the GPU machine: the repository travels as files),
    register it by hand so the imports resolve as in an installed package. Returns where it comes from."""
    import importlib.util

    import rlcustom

    if importlib.util.find_spec("rlcustom.actors") is not None:
        return "installed"
    root = Path(__file__).resolve().parent.parent / "actors"
    spec = importlib.util.spec_from_file_location("rlcustom.actors", root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["rlcustom.actors"] = mod
    spec.loader.exec_module(mod)
    rlcustom.actors = mod  # type: ignore[attr-defined]
    return f"checkout ({root})"


def optional(name: str) -> str | None:
    """Why ``name`` cannot be imported here, or None when it can."""
    try:
        __import__(name)
        return None
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken install
        return f"{name} not importable ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"


def prepare_model(name: str, work: Path) -> Path:
    """A model directory for ``name``: ``tiny`` / ``smollm2-135m-config`` are written (random weights,
    fp32 safetensors, the embedded SmolLM2 tokenizer); anything else is a directory used as it is."""
    if name == "tiny":
        from rlcustom.models.tiny import save_tiny

        return save_tiny(work / "tiny", seed=0)
    if name == "smollm2-135m-config":
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        from rlcustom.models.tiny import tiny_tokenizer

        cfg = AutoConfig.for_model(**SMOLLM2_135M_CONFIG)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        path = work / "smollm2-135m-config"
        model.save_pretrained(path, safe_serialization=True)
        tiny_tokenizer().save_pretrained(path)
        return path
    p = Path(name).expanduser()
    if not (p / "config.json").is_file():
        from rlcustom.errors import RLCustomError

        raise RLCustomError(f"--model {name}: expected {', '.join(MODELS)} or a model directory with config.json")
    return p


def make_ctx(a) -> Ctx:
    from rlcustom.models.loading import load_tokenizer

    work = Path(tempfile.mkdtemp(prefix="rlcustom-gpu-check-"))
    model = a.model if a.model != "auto" else ("smollm2-135m-config" if a.device == "cuda" else "tiny")
    path = prepare_model(model, work)
    dtype = a.dtype or ("bfloat16" if a.device == "cuda" else "float32")
    return Ctx(device=a.device, dtype=dtype, model_name=model,
               model_dir=path, tokenizer=load_tokenizer(path), batch=a.batch, new_tokens=a.new_tokens,
               train_steps=a.train_steps, repeats=a.repeats, trainer_steps=a.trainer_steps, work=work)


# ----------------------------------------------------------------------------- roles, as the trainers build them


def weight_sync_module():
    """The actor side of the weight sync (``SyncGroup``, ``WeightSyncMixin``, ``meta_of``)."""
    import importlib

    try:
        return importlib.import_module("rlcustom.engines.weight_sync")
    except ModuleNotFoundError:  # its place before the runtime split
        return importlib.import_module("rlcustom.runtime.weight_sync")


def make_learner(ctx: Ctx, lora: bool):
    """A ZeRO-2 learner rank (world size 1) with the weight-sync methods, as ``build_learner`` makes it."""
    from rlcustom.actors.learner import LearnerActor
    from rlcustom.config import LoraConfig, ModelConfig, OptimConfig
    from rlcustom.runtime.runtime import free_port

    cls = type("SyncedLearner", (LearnerActor, weight_sync_module().WeightSyncMixin), {})
    model = ModelConfig(path=str(ctx.model_dir), dtype=ctx.dtype,
                        lora=LoraConfig(r=8, alpha=16.0, dropout=0.0) if lora else None)
    optim = OptimConfig(lr=1e-3 if lora else 1e-4, micro_batch_size=8)
    # the first learner creates this process's (world size 1) group; the next ones join it
    return cls(model, optim, zero_stage=2, backend=ctx.backend, master_port=free_port(), seed=0)


def make_rollout(ctx: Ctx, lora: bool):
    """A rollout actor on the ``hf`` engine (a LoRA-wrapped one follows a LoRA learner's adapter)."""
    from rlcustom.actors.rollout import RolloutActor
    from rlcustom.config import LoraConfig, ModelConfig

    model = ModelConfig(path=str(ctx.model_dir), dtype=ctx.dtype,
                        lora=LoraConfig(r=8, alpha=16.0, dropout=0.0) if lora else None)
    return RolloutActor(model, engine="hf", seed=0, engine_kwargs={"batch_size": max(ctx.batch, 16)})


def fixed_params(ctx: Ctx, greedy: bool = False, seed: int = 0):
    """``new_tokens`` per answer, EOS ignored: every call does the same amount of work."""
    from rlcustom.engines.base import SamplingParams

    return SamplingParams(max_new_tokens=ctx.new_tokens, temperature=0.0 if greedy else 1.0, seed=seed,
                          stop_on_eos=False)


def sync_cuda(ctx: Ctx) -> None:
    if ctx.device == "cuda":
        import torch

        torch.cuda.synchronize()


def timed(ctx: Ctx, fn):
    """(result, seconds) with the device drained before and after."""
    sync_cuda(ctx)
    t = time.perf_counter()
    out = fn()
    sync_cuda(ctx)
    return out, time.perf_counter() - t


def finite(xs) -> bool:
    return all(math.isfinite(float(x)) for x in xs)


def fmt(x: float) -> str:
    return f"{x:.3g}"


def as_dict(row: Row) -> dict:
    return dataclasses.asdict(row)
