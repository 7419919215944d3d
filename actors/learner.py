"""LearnerActor: a causal LM (or reward model) trained with DeepSpeed (ZeRO 0-3, LoRA, CPU offload).

One instance per data-parallel rank; the scheduler wraps the class with
``ray.remote`` and gives every rank its own rows of each batch. The same code
runs in-process (world size 1) for tests and debugging. The training itself
(loss scaling over micro-batches and ranks, the non-finite policy, the LR
schedule, weight payloads, checkpoint files) is :mod:`rlcustom.training`; this
class builds the module, names the objectives and keeps the Ray-facing API.

The weighting unit of a step is chosen per call (``train_step(..., weighting=...)``)
or, when not given, by the objective's ``weighting`` attribute (default ``"tokens"``;
per-sequence objectives set ``fn.weighting = "rows"``).

Checkpoints (``save``/``load``)
-------------------------------
``path/model.safetensors`` (rank 0): trainable parameters (the adapter only for
LoRA, under the names of ``get_peft_model_state_dict``; otherwise plain HF
names). ``path/learner.json`` (rank 0): what the checkpoint is. Per rank
``optim_rank{r}.pt`` and ``rng_rank{r}.pt`` (:mod:`rlcustom.training.checkpoint`).
Ranks on several nodes need ``path`` on a shared file system.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch

from rlcustom.actors.base import ActorBase
from rlcustom.config import ModelConfig, OptimConfig
from rlcustom.training import checkpoint, export
from rlcustom.training import weights as W
from rlcustom.training.engine import TrainingEngine
from rlcustom.training.modules import build_learner_module


def _objective(loss_name: str):
    from rlcustom.registry import OBJECTIVES

    import rlcustom.objectives  # noqa: F401 - registers the built-in objectives

    return OBJECTIVES.get(loss_name)


class LearnerActor(ActorBase):
    """A DeepSpeed-trained policy (or any causal LM) on one data-parallel rank."""

    role = "learner"

    def __init__(self, model: ModelConfig, optim: OptimConfig, *, rank: int = 0, world_size: int = 1,
                 master_addr: str = "127.0.0.1", master_port: int = 29500, zero_stage: int = 2,
                 offload_optimizer: bool = False, offload_params: bool = False, grad_accum: int = 1,
                 seed: int = 0, backend: Literal["auto", "gloo", "nccl"] = "auto",
                 num_threads: int | None = None, model_kind: Literal["causal_lm", "reward"] = "causal_lm",
                 num_layers: int | None = None, value_head: bool = False) -> None:
        super().__init__(seed=seed, rank=rank, num_threads=num_threads)
        self.model_cfg, self.optim_cfg, self.model_kind = model, optim, model_kind
        self.lora = model.lora
        self.offload_optimizer, self.offload_params = offload_optimizer, offload_params
        module = build_learner_module(model, model_kind=model_kind, num_layers=num_layers, seed=seed, rank=rank,
                                      value_head=value_head)
        self.training = TrainingEngine(module, optim, dtype=model.dtype, rank=rank, world_size=world_size,
                                       master_addr=master_addr, master_port=master_port, zero_stage=zero_stage,
                                       offload_optimizer=offload_optimizer, offload_params=offload_params,
                                       grad_accum=grad_accum, backend=backend, what="learner")
        t = self.training
        self.world_size, self.zero_stage, self.backend, self.device = world_size, zero_stage, t.backend, t.device
        self.engine, self.optimizer, self.scheduler, self.base_optimizer = t.engine, t.optimizer, t.scheduler, \
            t.base_optimizer

    # ------------------------------------------------------------------ training

    def train_step(self, batch: dict, loss_name: str, *, weighting: str | None = None,
                   max_grad_norm: float | None = None, **loss_kwargs) -> dict[str, float]:
        """One optimizer step on this rank's rows (see :mod:`rlcustom.training.engine` for the loss scaling).

        ``max_grad_norm`` clips this step's gradient to that global norm instead of
        ``optim.max_grad_norm`` (0: no clipping), e.g. to clip the parts of an
        alternating objective separately (L3M, Section 5.3).
        """
        fn = _objective(loss_name)
        return self.training.train_step(batch, fn, name=loss_name, weighting=weighting or getattr(fn, "weighting",
                                                                                                  "tokens"),
                                        max_grad_norm=max_grad_norm, loss_kwargs=loss_kwargs)

    def compute_grads(self, batch: dict, loss_name: str, *, weighting: str | None = None,
                      **loss_kwargs) -> dict[str, torch.Tensor]:
        """Full gradients as ``train_step`` would apply them, without stepping (collective).
        Names as in :meth:`named_weights` (``adapter_only=True`` names for LoRA)."""
        fn = _objective(loss_name)
        lora = self.lora is not None
        return self.training.compute_grads(batch, fn, weighting=weighting or getattr(fn, "weighting", "tokens"),
                                           loss_kwargs=loss_kwargs, public_name=lambda n: W.public_name(n, lora))

    def forward_logprobs(self, batch: dict) -> torch.Tensor:
        """Per-token log-probs [B, T] of the response tokens (0 on padding), on CPU.

        Local under ZeRO 0-2; under ZeRO-3 a collective (call on every rank, each with a row).
        """
        from rlcustom.models.forward import response_logprobs

        return torch.cat(self.training.forward(batch, response_logprobs), 0)

    def logprobs_and_values(self, batch: dict) -> torch.Tensor:
        """[B, T, 2]: per-token log-probs and the shared value head's ``V(x, y_<t)`` from one forward (a learner
        built with ``value_head=True``, PPO's ``algo.critic: shared``); 0 on padding."""
        from rlcustom.models.forward import token_logprobs
        from rlcustom.models.value_head import response_logits_and_values

        def fn(model, mb):
            logits, values = response_logits_and_values(model, mb)
            P, T = int(mb["prompt_len"]), mb["response_mask"].shape[1]
            lp = token_logprobs(logits, mb["input_ids"][:, P : P + T]) * mb["response_mask"]
            return torch.stack([lp, values], -1)

        return torch.cat(self.training.forward(batch, fn), 0)

    def reference_logprobs(self, batch: dict) -> torch.Tensor:
        """log pi_ref [B, T] of the response tokens: this LoRA learner's forward with the adapter disabled.

        The frozen base model is the initial policy (LoRA starts with ``B = 0``), so the learner serves
        the reference role without a model copy (``roles.reference.share``). As :meth:`forward_logprobs`
        (a collective under ZeRO-3).
        """
        if self.lora is None:
            raise ValueError("reference_logprobs needs a LoRA learner (model.lora is not set): the reference is "
                             "the base model under the adapter; use roles.reference.share: separate")
        with self.training.module.disable_adapter():
            return self.forward_logprobs(batch)

    # ------------------------------------------------------------------ weights

    def named_weights(self, adapter_only: bool | None = None) -> list[tuple[str, torch.Tensor]]:
        """Weights under plain HF names (see :func:`rlcustom.training.weights.named_weights`)."""
        return W.named_weights(self.training, self.lora is not None, adapter_only)

    def weight_meta(self, adapter_only: bool | None = None) -> list[tuple[str, tuple[int, ...], str]]:
        return W.weight_meta(self.training, self.lora is not None, adapter_only)

    def export_model(self, path: str) -> str:
        """A standalone model directory for the next stage (rank 0 writes; every rank calls under ZeRO-3)."""
        return export.export_model(self.training, self.model_cfg, path, lora=self.lora is not None,
                                   model_kind=self.model_kind)

    def sync_meta(self, adapter_only: bool = False) -> list:
        """Weight-sync metadata without touching the weights (rank 0 alone may call it under ZeRO-3)."""
        from rlcustom.engines.weight_sync import TensorMeta

        return [TensorMeta(n, s, d) for n, s, d in self.weight_meta(adapter_only)]

    def trainable_names(self) -> list[str]:
        return [W.public_name(n, self.lora is not None) for n, _ in self.training.trainable]

    def save_adapter(self, path: str) -> str:
        """Write the LoRA adapter with peft's ``save_pretrained`` (what vLLM's ``LoRARequest`` reads)."""
        if self.lora is None:
            raise ValueError("save_adapter needs a LoRA learner (model.lora is not set)")
        return export.save_adapter(self.training, path)

    # ------------------------------------------------------------------ checkpoints

    def save(self, path: str) -> list[str]:
        """Write this rank's part of a checkpoint into ``path`` (created if needed; nothing outside it).

        Collective under ZeRO-3 (the parameters are gathered): call on every rank.
        Returns the files this rank wrote.
        """
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        written = []
        lora = self.lora is not None
        # every rank takes part in the ZeRO-3 gathers; under ZeRO 0-2 only rank 0 copies the weights
        state = W.trainable_state(self.training, lora) if (self.rank == 0 or self.zero_stage == 3) else {}
        if self.rank == 0:
            save_file(state, str(path / "model.safetensors"), metadata={"format": "pt", "lora": str(lora)})
            meta = {"format": 1, "world_size": self.world_size, "zero_stage": self.zero_stage, "lora": lora,
                    "dtype": self.model_cfg.dtype, "model": self.model_cfg.path, **self.training.counters()}
            (path / "learner.json").write_text(json.dumps(meta, indent=2))
            written += ["model.safetensors", "learner.json"]
        return written + checkpoint.save_state(self.training, path)

    def load(self, path: str) -> dict:
        """Restore a checkpoint written by :meth:`save` with the same world size and ZeRO stage."""
        from safetensors.torch import load_file

        blob = checkpoint.check_layout(self.training, path)
        W.load_trainable_state(self.training, self.lora is not None,
                               load_file(str(Path(path) / "model.safetensors"), device="cpu"))
        checkpoint.load_state(self.training, path, blob)
        return self.state()

    def state(self) -> dict:
        return {**self.training.state(), "lora": self.lora is not None}

    # counters, read by tests and the trainers
    steps = property(lambda self: self.training.steps)
    updates = property(lambda self: self.training.updates)
    skipped = property(lambda self: self.training.skipped)
    consecutive_nonfinite = property(lambda self: self.training.consecutive_nonfinite)
