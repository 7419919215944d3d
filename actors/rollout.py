"""RolloutActor: a generation engine (vLLM or transformers) that follows the learner's weights."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from rlcustom.actors.base import ActorBase
from rlcustom.actors.episodes import EpisodeMixin
from rlcustom.engines.base import Rollouts, SamplingParams
from rlcustom.engines.weight_sync import WeightSyncMixin


class RolloutActor(ActorBase, WeightSyncMixin, EpisodeMixin):
    """Generation (``generate``), multi-turn episodes with an environment (``episodes``, from
    :class:`~rlcustom.actors.episodes.EpisodeMixin`) and weight sync."""

    role = "rollout"

    def __init__(self, model, *, engine: str = "auto", seed: int = 0, rank: int = 0,
                 num_threads: int | None = None, engine_kwargs: dict | None = None) -> None:
        super().__init__(seed=seed, rank=rank, num_threads=num_threads)
        from rlcustom.engines import make_engine

        self.model_cfg = model
        self.lora = model.lora
        kw = dict(engine_kwargs or {})
        self.engine = make_engine(engine, model.path, dtype=model.dtype, seed=seed,
                                  trust_remote_code=model.trust_remote_code,
                                  **({"enable_lora": True, "max_lora_rank": max(16, self.lora.r)}
                                     if self.lora and engine_kind(engine) == "vllm" else {}), **kw)
        self._lora_handle = None
        self._lora_dir = Path(tempfile.mkdtemp(prefix="rlcustom-lora-"))
        self._lora_version = 0
        if self.lora and self.engine.name == "hf":
            self._wrap_hf_lora()
        self.weights_version = 0

    # -- generation ------------------------------------------------------------
    def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]], params: SamplingParams) -> Rollouts:
        if self.engine.name == "vllm" and self._lora_handle is not None:
            return self.engine.generate(prompts, params, lora=self._lora_handle)
        return self.engine.generate(prompts, params)

    def logprobs_of(self, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> list[list[float]]:
        """Log-probs of fixed responses under the current weights (checks that a sync landed)."""
        if self.engine.name == "vllm":
            if self._lora_handle is not None:
                return self.engine.logprobs_of(prompt_ids, response_ids, lora=self._lora_handle)
            return self.engine.logprobs_of(prompt_ids, response_ids)
        from rlcustom.models.forward import response_logprobs

        r = Rollouts(prompt_ids, response_ids, [[0.0] * len(x) for x in response_ids], ["length"] * len(prompt_ids),
                     list(range(len(prompt_ids))))
        batch = r.padded(self.engine.pad_id, device=self.engine.device)  # where the engine's model is
        with torch.no_grad():
            lp = response_logprobs(self.engine.model, batch)
        return [lp[i, : len(x)].tolist() for i, x in enumerate(response_ids)]

    # -- weights ---------------------------------------------------------------
    def load_weights(self, named, adapter_only: bool = False) -> int:
        """Install new weights in place: full HF-named tensors, or LoRA adapter tensors only."""
        if isinstance(named, dict):
            named = list(named.items())
        if adapter_only:
            self._load_adapter(named)
        elif self.engine.name == "vllm":
            self.engine.load_weights(named)
        else:
            model = self.engine.model
            target = model.get_base_model() if hasattr(model, "get_base_model") else model
            missing = [n for n, _ in named if n not in target.state_dict()]
            if missing:
                raise KeyError(f"rollout: unknown weight names {missing[:3]} (sync from a different architecture?)")
            target.load_state_dict(dict(named), strict=False)
        self.weights_version += 1
        return self.weights_version

    def _wrap_hf_lora(self) -> None:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=self.lora.r, lora_alpha=self.lora.alpha, lora_dropout=0.0,
                         target_modules=list(self.lora.target_modules), task_type="CAUSAL_LM")
        self.engine.model = get_peft_model(self.engine.model, cfg).eval()

    def _load_adapter(self, named) -> None:
        if self.engine.name == "hf":
            from peft import set_peft_model_state_dict

            res = set_peft_model_state_dict(self.engine.model, dict(named))
            unexpected = getattr(res, "unexpected_keys", [])
            if unexpected:
                raise KeyError(f"rollout: adapter tensors not in the model: {unexpected[:3]}")
            return
        # vLLM: write a peft adapter directory and register it under a fresh id
        from safetensors.torch import save_file

        self._lora_version += 1
        d = self._lora_dir / f"v{self._lora_version}"
        d.mkdir(parents=True, exist_ok=True)
        save_file({n: t.contiguous() for n, t in named}, str(d / "adapter_model.safetensors"))
        (d / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": self.lora.r, "lora_alpha": self.lora.alpha,
            "lora_dropout": 0.0, "target_modules": list(self.lora.target_modules), "bias": "none",
            "base_model_name_or_path": str(self.model_cfg.path), "fan_in_fan_out": False,
        }))
        self._lora_handle = self.engine.load_lora(str(d))

    # -- memory ----------------------------------------------------------------
    def sleep(self, level: int = 1) -> bool:
        """Free the device for a colocated role (vLLM sleep mode on GPU; no-op elsewhere)."""
        fn = getattr(self.engine, "sleep", None)
        return bool(fn(level)) if fn else False

    def wake(self) -> bool:
        fn = getattr(self.engine, "wake", None)
        return bool(fn()) if fn else False

    def rss_bytes(self) -> int:
        """Resident memory of this actor's process (load tests check that it stays bounded)."""
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def pad_id(self) -> int:
        tok = self.engine.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def close(self) -> None:
        fn = getattr(self.engine, "close", None)
        if fn:
            fn()


def engine_kind(kind: str) -> str:
    if kind != "auto":
        return kind
    from rlcustom.engines import resolve_engine_kind

    return resolve_engine_kind("auto")
