"""ReferenceActor: a frozen copy of the initial policy that returns per-token log-probs (KL anchor)."""
from __future__ import annotations

import torch

from rlcustom.actors.base import ActorBase
from rlcustom.engines.base import Rollouts
from rlcustom.models.forward import check_linear_head, response_hidden, response_logprobs
from rlcustom.models.heads import default_device, micro_batches, trim_batch


class ReferenceActor(ActorBase):
    """Frozen causal LM; ``logprobs(batch) -> [B, T]`` without gradient, micro-batched.

    ``lora_path`` applies a peft adapter over ``model_path`` and merges it (e.g. an
    SFT adapter as the reference). Each micro-batch is trimmed of columns that are
    padding in all its rows before the forward (identical results, less work).
    ``device`` defaults to the GPU Ray gave this actor, if any, else CPU.
    """

    role = "reference"

    def __init__(self, model_path, *, dtype: str = "float32", lora_path: str | None = None,
                 trust_remote_code: bool = False, seed: int = 0, rank: int = 0, num_threads: int | None = None,
                 micro_batch_size: int = 16, device: str | None = None) -> None:
        super().__init__(seed=seed, rank=rank, num_threads=num_threads)
        from rlcustom.models.loading import load_causal_lm

        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
        model_path = getattr(model_path, "path", model_path)  # a ModelConfig works too
        self.model_path = str(model_path)
        model = load_causal_lm(model_path, dtype=dtype, trust_remote_code=trust_remote_code)
        if lora_path:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(lora_path)).merge_and_unload()
        self.model = model.to(default_device(device)).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.micro_batch_size = int(micro_batch_size)
        cfg = self.model.config
        self.pad_id = next((int(x) for x in (getattr(cfg, "pad_token_id", None), getattr(cfg, "eos_token_id", None))
                            if isinstance(x, int)), 0)

    @torch.no_grad()
    def logprobs(self, batch: dict | Rollouts) -> torch.Tensor:
        """log pi_ref(y_t | x, y_<t) as [B, T] float32 on CPU (0 on padding).

        ``batch`` follows :meth:`Rollouts.padded` (a :class:`Rollouts` is padded here).
        """
        if isinstance(batch, Rollouts):
            batch = batch.padded(self.pad_id)
        device = next(self.model.parameters()).device
        B, T = batch["response_mask"].shape
        out = torch.zeros((B, T), dtype=torch.float32)
        for rows, mb in micro_batches(batch, self.micro_batch_size):
            mb, t_keep = trim_batch(mb)
            if t_keep == 0:
                continue
            mb = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in mb.items()}
            out[rows, :t_keep] = response_logprobs(self.model, mb).float().cpu()
        return out

    @torch.no_grad()
    def response_hidden(self, batch: dict, dtype: str = "float32") -> list[torch.Tensor]:
        """Ragged final hidden states, one ``[T_i, H]`` CPU tensor per row (``T_i`` = its response length).

        The frozen model's logits at those positions are ``lm_head(h)``: a cache of ``h``
        (H floats per token instead of V) lets a learner get ``log pi_ref`` over the whole
        vocabulary for one matrix product (Q-Adapter's ``base_forward: cached``). The first
        call checks that the model's logits are that linear head.
        """
        device = next(self.model.parameters()).device
        out_dtype = getattr(torch, dtype)
        rows_out: list[torch.Tensor | None] = [None] * int(batch["response_mask"].shape[0])
        lengths = batch["response_mask"].sum(1).long().tolist()
        for rows, mb in micro_batches(batch, self.micro_batch_size):
            mb, t_keep = trim_batch(mb)
            mb = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in mb.items()}
            if not getattr(self, "_head_checked", False) and t_keep:
                check_linear_head(self.model, mb)
                self._head_checked = True
            h = response_hidden(self.model, mb).to("cpu", out_dtype) if t_keep else None
            for j, i in enumerate(range(rows.start, rows.stop)):
                n = lengths[i]
                rows_out[i] = h[j, :n].clone() if n else torch.zeros((0, self.model.config.hidden_size), dtype=out_dtype)
        return rows_out

    def logprobs_rollouts(self, rollouts: Rollouts, pad_id: int | None = None) -> list[list[float]]:
        """Ragged per-sample log-probs (like ``Rollouts.logprobs``), cheap to ship between actors."""
        lp = self.logprobs(rollouts.padded(self.pad_id if pad_id is None else pad_id))
        return [lp[i, : len(r)].tolist() for i, r in enumerate(rollouts.response_ids)]
