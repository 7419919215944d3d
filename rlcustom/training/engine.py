"""TrainingEngine: one DeepSpeed-trained module on one data-parallel rank (ZeRO 0-3, CPU offload).

The learner (a causal LM or reward model) and the critic (a value model) both train
through it; their Ray actors in ``actors/`` only build the module and name the objectives.

Loss scaling (what ``train_step`` optimises)
--------------------------------------------
The rows a rank receives are cut into micro-batches of ``optim.micro_batch_size``
rows, or with ``optim.pack`` into packed micro-batches of at most
``optim.max_tokens_per_micro_batch`` tokens without padding
(:mod:`rlcustom.models.packing`; the same per-row outputs, so the same losses).
An objective returns the *mean* loss of the micro-batch it is given. Each
micro-batch loss is multiplied by ``world_size * n_mb / N`` before its backward,
where ``n_mb`` is the micro-batch's count of the weighting unit and ``N`` the
count over the whole batch on all ranks (one small all-reduce per step).
DeepSpeed then averages the gradients over ranks, so the update uses the
gradient of the full-batch mean, however the rows are split over ranks and
micro-batches. Weighting units (:data:`~rlcustom.training.batches.WEIGHTINGS`):
``"tokens"`` (valid response tokens; exact for token-mean objectives), ``"rows"``
(exact for per-sequence means) and ``"equal"`` (every micro-batch counts the same).

Non-finite steps
----------------
See :mod:`rlcustom.training.step`: a step whose loss (on any rank) or gradient norm
is not finite is skipped with parameters, optimizer state and LR schedule untouched;
after ``optim.max_consecutive_nonfinite`` skipped steps in a row ``train_step``
raises :class:`~rlcustom.errors.NonFiniteError`.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Literal

import torch

from rlcustom.errors import NonFiniteError
from rlcustom.training.accumulate import Objective, accumulate
from rlcustom.training.batches import all_reduce, check_weighting, split_micro_batches, split_packed, to_device
from rlcustom.training.ds_config import ds_config, init_process_group, resolve_backend
from rlcustom.training.optim import build_optimizer, build_scheduler
from rlcustom.training.step import apply_or_skip, discard_grads, grad_clipping

if TYPE_CHECKING:  # the config dataclasses, for annotations only (training does not import config)
    from rlcustom.config import OptimConfig


class TrainingEngine:
    """``module``'s trainable parameters (``requires_grad``) under DeepSpeed with AdamW and the LR schedule.

    ``what`` names the role in error messages ("learner", "critic").
    """

    def __init__(self, module: torch.nn.Module, optim: OptimConfig, *, dtype: str, rank: int = 0,
                 world_size: int = 1, master_addr: str = "127.0.0.1", master_port: int | None = None,
                 zero_stage: int = 2, offload_optimizer: bool = False, offload_params: bool = False,
                 grad_accum: int = 1, backend: Literal["auto", "gloo", "nccl"] = "auto",
                 what: str = "learner") -> None:
        import deepspeed

        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        self.optim_cfg, self.what = optim, what
        self.rank, self.world_size, self.zero_stage = rank, world_size, zero_stage
        self.backend = resolve_backend(backend)
        cfg = ds_config(optim, dtype=dtype, world_size=world_size, zero_stage=zero_stage,
                        offload_optimizer=offload_optimizer, offload_params=offload_params,
                        grad_accum=grad_accum, pin_memory=torch.cuda.is_available())
        init_process_group(rank=rank, world_size=world_size, master_addr=master_addr, master_port=master_port,
                           backend=self.backend)
        trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not trainable:
            raise ValueError(f"{what}: the model has no trainable parameters")
        opt = build_optimizer(trainable, optim, offload_optimizer=offload_optimizer)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=module, optimizer=opt, lr_scheduler=build_scheduler(opt, optim), config=cfg)
        self.base_optimizer = opt
        self.device = self.engine.device
        self.trainable = [(n, p) for n, p in self.engine.module.named_parameters() if p.requires_grad]
        self.steps = 0           # train_step calls
        self.updates = 0         # applied optimizer updates
        self.skipped = 0         # skipped (non-finite) steps in total
        self.consecutive_nonfinite = 0

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    @property
    def lr(self) -> float:
        """The LR the next update uses."""
        return float(self.base_optimizer.param_groups[0]["lr"])

    def micro_batches(self, batch: dict) -> list[dict]:
        """``optim.micro_batch_size`` rows each, or with ``optim.pack`` packed micro-batches of at most
        ``optim.max_tokens_per_micro_batch`` tokens (:func:`~rlcustom.training.batches.split_packed`)."""
        o = self.optim_cfg
        if o.pack:
            return split_packed(batch, o.max_tokens_per_micro_batch, self.rank)
        return split_micro_batches(batch, o.micro_batch_size, self.rank)

    def all_reduce(self, values: list[float], op: str = "sum") -> list[float]:
        return all_reduce(values, op, world_size=self.world_size, device=self.device)

    # ------------------------------------------------------------------ training

    def train_step(self, batch: dict, fn: Objective, *, name: str, weighting: str = "tokens",
                   max_grad_norm: float | None = None, loss_kwargs: dict | None = None,
                   global_loss: bool = False) -> dict[str, float]:
        """One optimizer step on this rank's rows with objective ``fn`` (registered as ``name``).

        ``max_grad_norm`` clips this step's gradient to that global norm instead of
        ``optim.max_grad_norm`` (0: no clipping). Returns this rank's stats averaged over its
        micro-batches plus ``train/loss`` (all ranks' with ``global_loss``), ``train/grad_norm``
        (before clipping; inf/nan on a skipped step), ``train/lr`` (the LR this update used),
        ``train/skipped`` (0/1), ``train/nonfinite_steps`` (consecutive skipped steps) and
        ``train/step_seconds``.
        """
        t0 = time.perf_counter()
        self.steps += 1
        lr = self.lr
        stats, _, _ = accumulate(self, batch, fn, check_weighting(weighting), loss_kwargs or {},
                                 global_loss=global_loss)
        with grad_clipping(self, max_grad_norm):
            skipped, grad_norm = apply_or_skip(self)
        if skipped:
            self.skipped += 1
            self.consecutive_nonfinite += 1
        else:
            self.updates += 1
            self.consecutive_nonfinite = 0
        clip = self.optim_cfg.max_grad_norm if max_grad_norm is None else float(max_grad_norm)
        stats.update({"train/grad_norm": grad_norm, "train/max_grad_norm": clip, "train/lr": lr,
                      "train/skipped": float(skipped),
                      "train/nonfinite_steps": float(self.consecutive_nonfinite),
                      "train/skipped_total": float(self.skipped),
                      "train/step_seconds": time.perf_counter() - t0})
        limit = self.optim_cfg.max_consecutive_nonfinite
        if self.consecutive_nonfinite >= limit:
            raise NonFiniteError(
                f"objective {name!r}: non-finite loss or gradient in {self.consecutive_nonfinite} consecutive "
                f"steps ({self.what} step {self.steps}, rank {self.rank}; loss={stats['train/loss']:.4g}, "
                f"grad_norm={grad_norm:.4g}); check the advantages/rewards or lower optim.lr "
                f"(optim.max_consecutive_nonfinite={limit})")
        return stats

    def compute_grads(self, batch: dict, fn: Objective, *, weighting: str = "tokens",
                      loss_kwargs: dict | None = None,
                      public_name: Callable[[str], str] = lambda n: n) -> dict[str, torch.Tensor]:
        """Full (rank-averaged, gathered) gradients of the trainable parameters, scaled exactly as
        ``train_step`` would apply them, without stepping; the accumulated gradients are dropped
        afterwards. Collective: call on every rank."""
        from deepspeed.utils import safe_get_full_grad

        _, first_mb, objective = accumulate(self, batch, fn, check_weighting(weighting), loss_kwargs or {})
        out: dict[str, torch.Tensor] = {}
        for n, p in self.trainable:
            g = safe_get_full_grad(p)  # ZeRO-1/2/3: a collective
            if g is not None:
                out[public_name(n)] = g.detach().float().cpu().clone()
        discard_grads(self, first_mb, objective)
        return out

    @torch.no_grad()
    def forward(self, batch: dict, fn: Callable[[Any, dict], torch.Tensor]) -> list[torch.Tensor]:
        """``fn(engine, micro_batch)`` on this rank's micro-batches in eval mode, results on CPU.

        Under ZeRO-3 every forward gathers parameters, so this is a collective: every rank
        runs as many forwards as the rank with the most micro-batches.
        """
        self.engine.eval()
        mbs = self.micro_batches(to_device(batch, self.device))
        n = len(mbs)
        if self.zero_stage == 3:
            n = int(self.all_reduce([float(n)], "max")[0])
        out = [fn(self.engine, mbs[min(i, len(mbs) - 1)]).float().cpu() for i in range(n)]
        return out[: len(mbs)]

    # ------------------------------------------------------------------ counters

    def counters(self) -> dict[str, int]:
        e = self.engine
        return {"steps": self.steps, "updates": self.updates, "skipped": self.skipped,
                "consecutive_nonfinite": self.consecutive_nonfinite, "ds_global_steps": int(e.global_steps),
                "ds_skipped_steps": int(e.skipped_steps), "ds_global_samples": int(e.global_samples)}

    def set_counters(self, c: dict) -> None:
        self.steps, self.updates, self.skipped = c["steps"], c["updates"], c["skipped"]
        self.consecutive_nonfinite = c["consecutive_nonfinite"]
        self.engine.global_steps, self.engine.skipped_steps = c["ds_global_steps"], c["ds_skipped_steps"]
        self.engine.global_samples = c["ds_global_samples"]

    def state(self) -> dict:
        return {**self.counters(), "rank": self.rank, "world_size": self.world_size, "zero_stage": self.zero_stage,
                "lr": self.lr, "trainable_params": int(sum(getattr(p, "ds_numel", p.numel())
                                                            for _, p in self.trainable))}
