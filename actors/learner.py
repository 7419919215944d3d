"""LearnerActor: a causal LM trained with DeepSpeed (ZeRO 0-3, LoRA, CPU offload).

One instance per data-parallel rank; the scheduler wraps the class with
``ray.remote`` and gives every rank its own rows of each batch. The same code
runs in-process (world size 1) for tests and debugging.

Loss scaling (what ``train_step`` optimises)
--------------------------------------------
The rows a rank receives are cut into micro-batches of ``optim.micro_batch_size``.
An objective returns the *mean* loss of the micro-batch it is given. Each
micro-batch loss is multiplied by ``world_size * n_mb / N`` before its backward,
where ``n_mb`` is the micro-batch's count of the weighting unit and ``N`` the
count over the whole batch on all ranks (one small all-reduce per step).
DeepSpeed then averages the gradients over ranks, so the update uses the
gradient of the full-batch mean, however the rows are split over ranks and
micro-batches.

The weighting unit is chosen per step (``train_step(..., weighting=...)``) or,
when not given, by the objective's ``weighting`` attribute:

- ``"tokens"`` (the default): ``n_mb`` = valid response tokens
  (``response_mask.sum()``). Exact for token-mean objectives such as
  ``reinforce`` and ``sft`` (``masked_mean`` over the micro-batch).
- ``"rows"``: ``n_mb`` = rows. Exact for per-sequence means (pairwise and
  reward-model losses); such an objective sets ``fn.weighting = "rows"``.
- ``"equal"``: every micro-batch (on every rank) counts the same.

Non-finite steps
----------------
A step is skipped, with parameters, optimizer state and LR schedule untouched,
when any rank's loss or the global gradient norm is NaN/Inf. A rank whose loss
is not finite back-propagates ``loss * nan`` so that every rank sees non-finite
gradients after the reduction; DeepSpeed's ZeRO/bf16/fp16 optimizers then skip
the update themselves (their overflow check), and under ZeRO-0 fp32 (a plain
torch optimizer) the learner checks the reduced gradients and discards them.
After ``optim.max_consecutive_nonfinite`` skipped steps in a row ``train_step``
raises :class:`~rlcustom.errors.NonFiniteError`.

Checkpoints (``save``/``load``)
-------------------------------
``path/model.safetensors`` (rank 0): trainable parameters (the adapter only for
LoRA, under the names of ``get_peft_model_state_dict``; otherwise plain HF
names). ``path/optim_rank{r}.pt``: this rank's optimizer state (DeepSpeed's
ZeRO state dict with its non-tensor objects turned into plain data), LR
scheduler state, counters. ``path/rng_rank{r}.pt``: torch (CPU and CUDA), Python
and NumPy RNG states. ``path/learner.json`` (rank 0): what the checkpoint is.
Every ``.pt`` file loads with ``torch.load(..., weights_only=True)``. ZeRO
optimizer state is partitioned, so a checkpoint is loaded with the same world
size and ZeRO stage that wrote it. Ranks on several nodes need ``path`` on a
shared file system (every rank reads ``model.safetensors``).
"""
from __future__ import annotations

import enum
import json
import logging
import math
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal

import torch

from rlcustom.actors.base import ActorBase
from rlcustom.config import ModelConfig, OptimConfig
from rlcustom.errors import NonFiniteError

ADAPTER = "default"  # peft's adapter name
WEIGHTINGS = ("tokens", "rows", "equal")


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of ``optim.lr`` for the update after ``step`` applied updates.

    Linear warmup ``(step + 1) / warmup_steps`` (the first update already uses
    a non-zero LR), then ``constant`` 1, ``linear`` decay to 0 at
    ``total_steps`` or ``cosine`` decay ``0.5 (1 + cos(pi * progress))``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown LR schedule {schedule!r} (expected constant, linear or cosine)")


def ds_config(optim: OptimConfig, *, dtype: str, world_size: int, zero_stage: int, offload_optimizer: bool,
              offload_params: bool, grad_accum: int, pin_memory: bool = False) -> dict:
    """The DeepSpeed config dict the learner runs with."""
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be one of 0, 1, 2, 3, got {zero_stage}")
    if offload_params and zero_stage != 3:
        raise ValueError(f"offload_params needs ZeRO stage 3, got zero_stage={zero_stage}")
    if offload_optimizer and zero_stage == 0:
        raise ValueError("offload_optimizer needs ZeRO stage 1, 2 or 3, got zero_stage=0")
    zero: dict[str, Any] = {"stage": zero_stage}
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin_memory}
    if offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin_memory}
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": optim.micro_batch_size,
        # bookkeeping only: train_step sets the accumulation boundary itself
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": optim.micro_batch_size * grad_accum * world_size,
        "gradient_clipping": optim.max_grad_norm,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if dtype == "bfloat16":
        cfg["bf16"] = {"enabled": True, "check_grad_overflow": True}
    elif dtype == "float16":
        cfg["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    return cfg


# --------------------------------------------------------------------------- helpers for checkpoints

_SAFE_SCALARS = (bool, int, float, str, type(None))


class _Drop:
    def __repr__(self) -> str:
        return "<dropped>"


_DROP = _Drop()


def to_plain(obj: Any) -> Any:
    """``obj`` as data that ``torch.load(weights_only=True)`` accepts, or ``_DROP``.

    Tensors (moved to CPU), numbers, strings, lists, tuples and dicts with str/int
    keys pass; enums become their value; anything holding another object is ``_DROP``.
    """
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, enum.Enum):
        return to_plain(obj.value)
    if isinstance(obj, _SAFE_SCALARS):
        return obj
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            pv = to_plain(v)
            if not isinstance(k, (str, int)) or pv is _DROP:
                return _DROP
            out[k] = pv
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v) for v in obj]
        if any(v is _DROP for v in items):
            return _DROP
        return items if isinstance(obj, list) else tuple(items)
    return _DROP


def plain_state(sd: dict) -> dict:
    """The entries of a state dict that are plain data (see :func:`to_plain`); the rest are left out.

    DeepSpeed's ZeRO state dict holds a ``LossScaler`` object and ``param_slice_mappings``
    (fragment-address objects): on load these come from the live optimizer instead
    (the loss scaler's attributes are saved separately).
    """
    out = {}
    for k, v in sd.items():
        pv = to_plain(v)
        if pv is not _DROP:
            out[k] = pv
    return out


def _rng_state() -> dict:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _plain_random_state(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state["numpy"] = {"kind": str(kind), "keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
                          "has_gauss": int(has_gauss), "gauss": float(gauss)}
    except ImportError:  # pragma: no cover - numpy ships with torch's deps
        pass
    return state


def _plain_random_state(st: tuple) -> tuple:
    version, internal, gauss = st
    return (int(version), tuple(int(x) for x in internal), gauss)


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["gauss"]))


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    """Full shape of a parameter, also when ZeRO-3 has partitioned it away."""
    ds = getattr(t, "ds_shape", None)
    return tuple(ds) if ds is not None else tuple(t.shape)


# --------------------------------------------------------------------------- the actor


class LearnerActor(ActorBase):
    """A DeepSpeed-trained policy (or any causal LM) on one data-parallel rank."""

    role = "learner"

    def __init__(self, model: ModelConfig, optim: OptimConfig, *, rank: int = 0, world_size: int = 1,
                 master_addr: str = "127.0.0.1", master_port: int = 29500, zero_stage: int = 2,
                 offload_optimizer: bool = False, offload_params: bool = False, grad_accum: int = 1,
                 seed: int = 0, backend: Literal["auto", "gloo", "nccl"] = "auto",
                 num_threads: int | None = None, model_kind: Literal["causal_lm", "reward"] = "causal_lm",
                 num_layers: int | None = None) -> None:
        super().__init__(seed=seed, rank=rank, num_threads=num_threads)
        import deepspeed

        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        self.model_cfg, self.optim_cfg = model, optim
        self.world_size, self.zero_stage = world_size, zero_stage
        self.lora = model.lora
        self.offload_optimizer, self.offload_params = offload_optimizer, offload_params
        cuda = torch.cuda.is_available()
        if backend == "auto":
            backend = "nccl" if cuda else "gloo"
        if backend == "nccl" and not cuda:
            raise ValueError("backend='nccl' needs a CUDA GPU; use 'gloo' (or 'auto') on CPU")
        self.backend = backend
        cfg = ds_config(optim, dtype=model.dtype, world_size=world_size, zero_stage=zero_stage,
                        offload_optimizer=offload_optimizer, offload_params=offload_params,
                        grad_accum=grad_accum, pin_memory=cuda)

        # -- process group: DeepSpeed reads the env (without it, it tries MPI discovery)
        import torch.distributed as tdist

        if tdist.is_initialized():
            if tdist.get_world_size() != world_size or tdist.get_rank() != rank or tdist.get_backend() != backend:
                raise RuntimeError(f"this process already belongs to a {tdist.get_backend()} process group of world "
                                   f"size {tdist.get_world_size()} (rank {tdist.get_rank()}); cannot be rank {rank} "
                                   f"of {world_size} with {backend}")
        else:
            os.environ.update(MASTER_ADDR=str(master_addr), MASTER_PORT=str(master_port), RANK=str(rank),
                              WORLD_SIZE=str(world_size), LOCAL_RANK="0")
        if cuda:  # each Ray actor sees its own GPU(s) as device 0..
            torch.cuda.set_device(0)
        deepspeed.init_distributed(backend, auto_mpi_discovery=False)

        # -- model (same LoRA init on every rank: seed before creating the adapter)
        from rlcustom.models.loading import load_causal_lm

        self.model_kind = model_kind
        if model_kind == "reward":  # a Bradley-Terry reward model: LM backbone + scalar head
            from rlcustom.models.heads import RewardModel

            if self.lora is not None:
                raise ValueError("model_kind='reward' trains the full backbone and head; unset model.lora")
            module = RewardModel.from_pretrained(model.path, dtype=model.dtype, num_layers=num_layers,
                                                 trust_remote_code=model.trust_remote_code)
        else:
            module = load_causal_lm(model.path, dtype=model.dtype, trust_remote_code=model.trust_remote_code)
        if self.lora is not None:
            from peft import LoraConfig as PeftLoraConfig
            from peft import get_peft_model

            torch.manual_seed(seed)
            pcfg = PeftLoraConfig(r=self.lora.r, lora_alpha=self.lora.alpha, lora_dropout=self.lora.dropout,
                                  target_modules=list(self.lora.target_modules), bias="none", task_type="CAUSAL_LM")
            module = get_peft_model(module, pcfg)
            torch.manual_seed(seed + rank)
        else:
            for p in module.parameters():
                p.requires_grad_(True)
        trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not trainable:
            raise ValueError(f"{model.path}: no trainable parameters")
        groups = [
            {"params": [p for _, p in trainable if p.ndim >= 2], "weight_decay": optim.weight_decay},
            {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0},  # biases, norms
        ]
        groups = [g for g in groups if g["params"]]
        betas = tuple(optim.betas[:2])
        if offload_optimizer:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            opt = DeepSpeedCPUAdam(groups, lr=optim.lr, betas=betas, eps=optim.eps, weight_decay=optim.weight_decay,
                                   adamw_mode=True)
        else:
            opt = torch.optim.AdamW(groups, lr=optim.lr, betas=betas, eps=optim.eps, weight_decay=optim.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(
            s, warmup_steps=optim.warmup_steps, total_steps=optim.total_steps, schedule=optim.schedule))
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=module, optimizer=opt, lr_scheduler=sched, config=cfg)
        self.base_optimizer = opt
        self.device = self.engine.device
        self._trainable = [(n, p) for n, p in self.engine.module.named_parameters() if p.requires_grad]
        self.steps = 0           # train_step calls
        self.updates = 0         # applied optimizer updates
        self.skipped = 0         # skipped (non-finite) steps in total
        self.consecutive_nonfinite = 0

    # ------------------------------------------------------------------ batches

    def _to_device(self, batch: dict) -> dict:
        return {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}

    @staticmethod
    def _rows(batch: dict) -> int:
        return int(batch["input_ids"].shape[0])

    @staticmethod
    def _slice(batch: dict, start: int, stop: int) -> dict:
        B = int(batch["input_ids"].shape[0])
        out = {}
        for k, v in batch.items():
            if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == B:
                out[k] = v[start:stop]
            elif isinstance(v, (list, tuple)) and len(v) == B:
                out[k] = v[start:stop]
            else:
                out[k] = v
        return out

    def _micro_batches(self, batch: dict) -> list[dict]:
        B, mbs = self._rows(batch), self.optim_cfg.micro_batch_size
        if B == 0:
            raise ValueError(f"rank {self.rank}: empty batch (every rank needs at least one row)")
        return [self._slice(batch, i, min(B, i + mbs)) for i in range(0, B, mbs)]

    @staticmethod
    def _count(mb: dict, weighting: str) -> float:
        if weighting == "tokens":
            return float(mb["response_mask"].sum())
        if weighting == "rows":
            return float(mb["input_ids"].shape[0])
        return 1.0

    def _all_reduce(self, values: list[float], op: str = "sum") -> list[float]:
        if self.world_size == 1:
            return values
        import deepspeed.comm as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return t.tolist()

    # ------------------------------------------------------------------ forward/backward

    def _accumulate(self, batch: dict, loss_name: str, weighting: str | None,
                    loss_kwargs: dict) -> tuple[dict, dict, Any]:
        """Forward/backward over this rank's micro-batches; the last backward is the accumulation boundary.

        Returns (local stats, first micro-batch, objective with its kwargs bound). Stats: objective stats averaged over
        the real micro-batches, ``train/loss`` (this rank's mean loss under the weighting) and
        ``train/nonfinite_loss`` (this rank's).
        """
        from rlcustom.registry import OBJECTIVES

        import rlcustom.algos.objectives  # noqa: F401 - registers the built-in objectives

        fn = OBJECTIVES.get(loss_name)
        weighting = weighting or getattr(fn, "weighting", "tokens")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
        batch = self._to_device(batch)
        mbs = self._micro_batches(batch)
        counts = [self._count(mb, weighting) for mb in mbs]
        total, = self._all_reduce([sum(counts)], "sum")
        n_steps, = self._all_reduce([float(len(mbs))], "max")  # ranks with fewer rows pad with zero-weight repeats
        total = max(total, 1.0)
        self.engine.train()
        sums: dict[str, float] = {}
        loss_num, loss_den, nonfinite, plain = 0.0, 0.0, False, []
        for i in range(int(n_steps)):
            real = i < len(mbs)
            mb = mbs[i] if real else mbs[-1]
            w = (self.world_size * counts[i] / total) if real else 0.0
            self.engine.set_gradient_accumulation_boundary(i == int(n_steps) - 1)
            loss, stats = fn(self.engine, mb, **loss_kwargs)
            lv = float(loss.detach())
            scaled = loss * w
            if real and not math.isfinite(lv):
                nonfinite = True
                scaled = loss * float("nan")  # poison the reduced gradients: every rank then skips
            self.engine.backward(scaled, scale_wrt_gas=False)
            if real:
                plain.append(lv)
                loss_num += lv * counts[i]
                loss_den += counts[i]
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
        out = {k: v / len(mbs) for k, v in sums.items()}
        out["train/loss"] = loss_num / loss_den if loss_den > 0 else sum(plain) / len(plain)
        out["train/micro_batches"] = float(len(mbs))
        out["train/rows"] = float(self._rows(batch))
        out["train/tokens"] = float(batch["response_mask"].sum()) if "response_mask" in batch else 0.0
        out["train/nonfinite_loss"] = float(nonfinite)
        return out, mbs[0], lambda model, mb: fn(model, mb, **loss_kwargs)

    def _ds_skips_nonfinite(self) -> bool:
        """True when DeepSpeed's optimizer wrapper checks the gradients and skips bad steps itself."""
        return hasattr(self.optimizer, "overflow")

    def _local_grad_norm(self) -> float:
        """Global grad norm under ZeRO-0 (the gradients in ``p.grad`` are already all-reduced)."""
        sq = torch.zeros((), dtype=torch.float64, device=self.device)
        for _, p in self._trainable:
            if p.grad is not None:
                sq += p.grad.detach().double().pow(2).sum()
        return float(sq.sqrt())

    def _discard_grads(self, first_mb: dict, objective) -> None:
        """Drop the accumulated gradients without touching parameters or optimizer state."""
        if not self._ds_skips_nonfinite():
            self.engine.zero_grad()
            return
        # ZeRO keeps reduced gradients in its own partitions; its overflow path clears them
        # (and leaves the optimizer alone), so feed it a poisoned gradient and step.
        e = self.engine
        counters = (e.global_steps, e.skipped_steps, e.global_samples)
        ds_log = logging.getLogger("DeepSpeed")
        level = ds_log.level
        ds_log.setLevel(logging.ERROR)  # not a real overflow: keep its "OVERFLOW! Skipping step" quiet
        try:
            e.set_gradient_accumulation_boundary(True)
            loss, _ = objective(e, first_mb)
            e.backward(loss * float("nan"), scale_wrt_gas=False)
            e.step()
        finally:
            ds_log.setLevel(level)
        if not self.optimizer.overflow:
            raise RuntimeError("DeepSpeed did not skip a step with NaN gradients; gradients were not discarded")
        e.global_steps, e.skipped_steps, e.global_samples = counters

    # ------------------------------------------------------------------ public API

    @contextmanager
    def _grad_clipping(self, max_grad_norm: float | None) -> Iterator[None]:
        """Clip this step's global gradient norm to ``max_grad_norm`` instead of ``optim.max_grad_norm``
        (``0`` disables clipping; ``None`` keeps the configured value).

        DeepSpeed clips inside ``engine.step()``: ZeRO-0 fp32 reads the engine config
        (``clip_fp32_gradients``), the ZeRO 1-3 / bf16 / fp16 optimizer wrappers their own
        ``clip_grad`` (on the partitioned, reduced gradients). Both are set for the step and
        restored after it, so clipping stays DeepSpeed's (correct under every ZeRO stage).
        """
        if max_grad_norm is None:
            yield
            return
        v = float(max_grad_norm)
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"max_grad_norm must be a finite number >= 0, got {max_grad_norm}")
        cfg, opt = self.engine._config, self.optimizer
        old_cfg, old_opt = cfg.gradient_clipping, getattr(opt, "clip_grad", None)
        cfg.gradient_clipping = v
        if old_opt is not None:
            opt.clip_grad = v
        try:
            yield
        finally:
            cfg.gradient_clipping = old_cfg
            if old_opt is not None:
                opt.clip_grad = old_opt

    def train_step(self, batch: dict, loss_name: str, *, weighting: str | None = None,
                   max_grad_norm: float | None = None, **loss_kwargs) -> dict[str, float]:
        """One optimizer step on this rank's rows (see the module docstring for the loss scaling).

        ``max_grad_norm`` clips this step's gradient to that global norm instead of
        ``optim.max_grad_norm`` (0: no clipping), e.g. to clip the parts of an
        alternating objective separately (L3M, Section 5.3).

        Returns this rank's stats averaged over its micro-batches plus ``train/loss``,
        ``train/grad_norm`` (before clipping; inf/nan on a skipped step), ``train/lr``
        (the LR this update used), ``train/skipped`` (0/1), ``train/nonfinite_steps``
        (consecutive skipped steps) and ``train/step_seconds``.
        """
        t0 = time.perf_counter()
        self.steps += 1
        lr = float(self.base_optimizer.param_groups[0]["lr"])
        stats, _, _ = self._accumulate(batch, loss_name, weighting, loss_kwargs)
        with self._grad_clipping(max_grad_norm):
            if self._ds_skips_nonfinite():
                self.engine.step()
                skipped = bool(self.optimizer.overflow)
                gn = self.engine.get_global_grad_norm()
                grad_norm = float(gn) if gn is not None else float("nan")
            else:
                grad_norm = self._local_grad_norm()
                skipped = not math.isfinite(grad_norm)
                if skipped:
                    self.engine.zero_grad()
                else:
                    self.engine.step()
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
                f"objective {loss_name!r}: non-finite loss or gradient in {self.consecutive_nonfinite} consecutive "
                f"steps (learner step {self.steps}, rank {self.rank}; loss={stats['train/loss']:.4g}, "
                f"grad_norm={grad_norm:.4g}); check the advantages/rewards or lower optim.lr "
                f"(optim.max_consecutive_nonfinite={limit})")
        return stats

    def compute_grads(self, batch: dict, loss_name: str, *, weighting: str | None = None,
                      **loss_kwargs) -> dict[str, torch.Tensor]:
        """Full (rank-averaged, gathered) gradients of the trainable parameters for ``batch``,
        scaled exactly as ``train_step`` would apply them, without stepping; the
        accumulated gradients are dropped afterwards. Collective: call on every rank.
        Names as in :meth:`named_weights` (``adapter_only=True`` names for LoRA)."""
        from deepspeed.utils import safe_get_full_grad

        _, first_mb, objective = self._accumulate(batch, loss_name, weighting, loss_kwargs)
        out: dict[str, torch.Tensor] = {}
        for n, p in self._trainable:
            g = safe_get_full_grad(p)  # ZeRO-1/2/3: a collective
            if g is not None:
                out[self._public_name(n)] = g.detach().float().cpu().clone()
        self._discard_grads(first_mb, objective)
        return out

    @torch.no_grad()
    def forward_logprobs(self, batch: dict) -> torch.Tensor:
        """Per-token log-probs [B, T] of the response tokens (0 on padding), on CPU.

        Local under ZeRO 0-2. Under ZeRO-3 every forward gathers parameters, so this is a
        collective: call it on every rank (each with at least one row).
        """
        from rlcustom.models.forward import response_logprobs

        self.engine.eval()
        batch = self._to_device(batch)
        mbs = self._micro_batches(batch)
        n = len(mbs)
        if self.zero_stage == 3:  # same number of forwards (= parameter gathers) on every rank
            n = int(self._all_reduce([float(n)], "max")[0])
        out = [response_logprobs(self.engine, mbs[min(i, len(mbs) - 1)]).float().cpu() for i in range(n)]
        return torch.cat(out[: len(mbs)], 0)

    # ------------------------------------------------------------------ weights

    @property
    def _hf_model(self):
        """The transformers model (inside peft's wrappers for LoRA)."""
        m = self.engine.module
        return m.base_model.model if self.lora is not None else m

    def _public_name(self, name: str) -> str:
        """Parameter name in the engine's module -> the name callers see."""
        if self.lora is not None:
            return name.replace(f".{ADAPTER}.", ".")  # get_peft_model_state_dict naming
        return name

    @contextmanager
    def _gathered(self, params: list, modifier_rank: int | None = None) -> Iterator[None]:
        """Full parameters inside the block under ZeRO-3 (a collective); with ``modifier_rank``
        that rank's in-place changes are re-partitioned on exit. A no-op under ZeRO 0-2."""
        if self.zero_stage == 3 and params:
            import deepspeed

            with deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank):
                yield
        else:
            yield

    def _lora_layers(self) -> dict:
        from peft.tuners.lora import LoraLayer

        return {n: m for n, m in self._hf_model.named_modules() if isinstance(m, LoraLayer)}

    def _weight_entries(self) -> list[tuple[str, str, torch.Tensor, Any]]:
        """(public name, state-dict key, tensor, lora layer or None) of the merged HF state dict."""
        sd = self._hf_model.state_dict(keep_vars=True)
        layers = self._lora_layers() if self.lora is not None else {}
        entries = []
        for key, t in sd.items():
            if ".lora_" in key:
                continue
            if ".base_layer." in key:
                mod, leaf = key.split(".base_layer.", 1)
                entries.append((f"{mod}.{leaf}", key, t, layers.get(mod) if leaf == "weight" else None))
            else:
                entries.append((key, key, t, None))
        return entries

    def named_weights(self, adapter_only: bool | None = None) -> list[tuple[str, torch.Tensor]]:
        """Weights under plain ``AutoModelForCausalLM`` state-dict names.

        ``adapter_only=None`` means "the adapter if this is a LoRA learner". For LoRA,
        ``adapter_only=False`` gives merged weights (W + scale * B A) under the base names;
        ``True`` gives the peft adapter state dict (``get_peft_model_state_dict`` names).
        Under ZeRO-3 this gathers the parameters: call it on every rank. Tensors stay on
        the learner's device; under ZeRO 0-2 unmerged ones are detached views of the live
        parameters (copy them before the next ``train_step`` if they must not change).
        """
        if adapter_only is None:
            adapter_only = self.lora is not None
        if adapter_only:
            if self.lora is None:
                raise ValueError("adapter_only=True needs a LoRA learner (model.lora is not set)")
            from peft import get_peft_model_state_dict

            module = self.engine.module
            lora_params = [(n, p) for n, p in module.named_parameters() if ".lora_" in n]
            with self._gathered([p for _, p in lora_params]):
                sd = {n: p.detach().clone() for n, p in lora_params}
            return list(get_peft_model_state_dict(module, state_dict=sd, adapter_name=ADAPTER).items())
        out = []
        for name, _key, t, layer in self._weight_entries():
            if layer is not None:
                ps = [t, layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight]
                with self._gathered(ps), torch.no_grad():
                    w = t.detach().clone()
                    w += layer.get_delta_weight(ADAPTER).to(w.dtype)
                out.append((name, w))
            elif self.zero_stage == 3 and hasattr(t, "ds_id"):
                with self._gathered([t]):
                    out.append((name, t.detach().clone()))
            else:
                out.append((name, t.detach()))
        return out

    def weight_meta(self, adapter_only: bool | None = None) -> list[tuple[str, tuple[int, ...], str]]:
        """(name, shape, dtype str) of :meth:`named_weights`, without gathering (except the small adapter)."""
        if adapter_only is None:
            adapter_only = self.lora is not None
        if adapter_only:
            if self.lora is None:
                raise ValueError("adapter_only=True needs a LoRA learner (model.lora is not set)")
            from peft import get_peft_model_state_dict

            module = self.engine.module  # names via peft on shape-only stand-ins (no ZeRO-3 gather)
            fake = {n: torch.empty(_shape(p), dtype=p.dtype, device="meta")
                    for n, p in module.named_parameters() if ".lora_" in n}
            named = get_peft_model_state_dict(module, state_dict=fake, adapter_name=ADAPTER).items()
            return [(n, tuple(t.shape), str(t.dtype)) for n, t in named]
        return [(name, _shape(t), str(t.dtype)) for name, _k, t, _l in self._weight_entries()]

    def export_model(self, path: str) -> str:
        """A standalone model directory for the next stage (rank 0 writes; every rank calls under ZeRO-3).

        Causal LMs: a transformers directory (LoRA merged into the base) + tokenizer, loadable as
        ``model.path``. Reward models: a :class:`RewardModel` directory for ``reward.spec: model``.
        """
        from rlcustom.models.loading import load_tokenizer

        tok = load_tokenizer(self.model_cfg.path, trust_remote_code=self.model_cfg.trust_remote_code)
        if self.model_kind == "reward":
            if self.zero_stage == 3:
                with self._gathered(list(self.engine.module.parameters())):
                    if self.rank == 0:
                        self.engine.module.save(path, tokenizer=tok)
            elif self.rank == 0:
                self.engine.module.save(path, tokenizer=tok)
            return path
        named = self.named_weights(adapter_only=False)  # merged under plain HF names (gathered for ZeRO-3)
        if self.rank == 0:
            from rlcustom.models.loading import load_causal_lm

            base = load_causal_lm(self.model_cfg.path, dtype=self.model_cfg.dtype,
                                  trust_remote_code=self.model_cfg.trust_remote_code)
            base.load_state_dict(dict(named), strict=False)
            base.save_pretrained(path, safe_serialization=True)
            tok.save_pretrained(path)
        return path

    def sync_meta(self, adapter_only: bool = False) -> list:
        """Weight-sync metadata without touching the weights (rank 0 alone may call it under ZeRO-3)."""
        from rlcustom.runtime.weight_sync import TensorMeta

        return [TensorMeta(n, s, d) for n, s, d in self.weight_meta(adapter_only)]

    def trainable_names(self) -> list[str]:
        return [self._public_name(n) for n, _ in self._trainable]

    def save_adapter(self, path: str) -> str:
        """Write the LoRA adapter with peft's ``save_pretrained`` (what vLLM's ``LoRARequest`` reads)."""
        if self.lora is None:
            raise ValueError("save_adapter needs a LoRA learner (model.lora is not set)")
        module = self.engine.module
        lora_params = [(n, p) for n, p in module.named_parameters() if ".lora_" in n]
        with self._gathered([p for _, p in lora_params]):
            sd = {n: p.detach().cpu().clone() for n, p in lora_params}
        module.save_pretrained(path, state_dict=sd, safe_serialization=True)
        return str(path)

    # ------------------------------------------------------------------ checkpoints

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        if self.lora is not None:
            return {n: t.detach().cpu().contiguous() for n, t in self.named_weights(adapter_only=True)}
        out = {}
        for n, p in self._trainable:
            with self._gathered([p]):
                out[n] = p.detach().cpu().clone().contiguous()
        return out

    def _load_trainable_state(self, sd: dict[str, torch.Tensor]) -> None:
        if self.lora is not None:
            from peft import set_peft_model_state_dict

            module = self.engine.module
            lora_params = [p for n, p in module.named_parameters() if ".lora_" in n]
            with self._gathered(lora_params, modifier_rank=0), torch.no_grad():
                res = set_peft_model_state_dict(module, sd, adapter_name=ADAPTER)
            bad = [k for k in getattr(res, "unexpected_keys", []) if ".lora_" in k]
            if bad:
                raise KeyError(f"checkpoint adapter has unexpected keys: {bad[:3]}")
            return
        params = dict(self._trainable)
        missing = sorted(set(params) - set(sd))
        if missing:
            raise KeyError(f"checkpoint lacks {len(missing)} trainable tensors, e.g. {missing[:3]}")
        for n, p in params.items():
            with self._gathered([p], modifier_rank=0), torch.no_grad():
                p.data.copy_(sd[n].to(p.device, p.dtype))

    def _counters(self) -> dict[str, int]:
        return {"steps": self.steps, "updates": self.updates, "skipped": self.skipped,
                "consecutive_nonfinite": self.consecutive_nonfinite,
                "ds_global_steps": int(self.engine.global_steps), "ds_skipped_steps": int(self.engine.skipped_steps),
                "ds_global_samples": int(self.engine.global_samples)}

    def save(self, path: str) -> list[str]:
        """Write this rank's part of a checkpoint into ``path`` (created if needed; nothing outside it).

        Collective under ZeRO-3 (the parameters are gathered): call on every rank.
        Returns the files this rank wrote.
        """
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        written = []
        # every rank takes part in the ZeRO-3 gathers; under ZeRO 0-2 only rank 0 copies the weights
        state = self._trainable_state() if (self.rank == 0 or self.zero_stage == 3) else {}
        if self.rank == 0:
            save_file(state, str(path / "model.safetensors"),
                      metadata={"format": "pt", "lora": str(self.lora is not None)})
            meta = {"format": 1, "world_size": self.world_size, "zero_stage": self.zero_stage,
                    "lora": self.lora is not None, "dtype": self.model_cfg.dtype, "model": self.model_cfg.path,
                    **self._counters()}
            (path / "learner.json").write_text(json.dumps(meta, indent=2))
            written += ["model.safetensors", "learner.json"]
        opt_sd = plain_state(self.optimizer.state_dict())
        scaler = getattr(self.optimizer, "loss_scaler", None)
        blob = {"format": 1, "world_size": self.world_size, "zero_stage": self.zero_stage,
                "optimizer": opt_sd, "scheduler": plain_state(self.scheduler.state_dict()),
                "loss_scaler": plain_state(dict(vars(scaler))) if scaler is not None else None,
                "counters": self._counters()}
        torch.save(blob, path / f"optim_rank{self.rank}.pt")
        torch.save(_rng_state(), path / f"rng_rank{self.rank}.pt")
        written += [f"optim_rank{self.rank}.pt", f"rng_rank{self.rank}.pt"]
        return written

    def load(self, path: str) -> dict:
        """Restore a checkpoint written by :meth:`save` with the same world size and ZeRO stage."""
        from safetensors.torch import load_file

        path = Path(path)
        blob = torch.load(path / f"optim_rank{self.rank}.pt", map_location="cpu", weights_only=True)
        if blob["world_size"] != self.world_size or blob["zero_stage"] != self.zero_stage:
            raise ValueError(f"{path}: written by {blob['world_size']} rank(s) with ZeRO-{blob['zero_stage']}; "
                             f"this learner has {self.world_size} rank(s) with ZeRO-{self.zero_stage} "
                             "(ZeRO optimizer state is partitioned per rank)")
        self._load_trainable_state(load_file(str(path / "model.safetensors"), device="cpu"))
        from deepspeed.runtime.base_optimizer import ZeROOptimizer

        live = self.optimizer.state_dict()
        live.update(blob["optimizer"])  # objects left out at save time come from the live optimizer
        if isinstance(self.optimizer, ZeROOptimizer):  # ZeRO 1-3 and BF16_Optimizer: one state dict per rank
            sds: list = [None] * self.world_size
            sds[self.rank] = live
            self.optimizer.load_state_dict(sds, load_optimizer_states=True, load_from_fp32_weights=True)
        else:  # torch optimizer (ZeRO-0 fp32) or FP16_Optimizer
            self.optimizer.load_state_dict(live)
        scaler = getattr(self.optimizer, "loss_scaler", None)
        if scaler is not None and blob.get("loss_scaler"):
            for k, v in blob["loss_scaler"].items():
                if hasattr(scaler, k) and not callable(getattr(scaler, k)):
                    setattr(scaler, k, v)
        self.scheduler.load_state_dict(blob["scheduler"])
        from rlcustom.actors.optim_hparams import apply_optim_hparams  # a forced new optim.lr is applied

        apply_optim_hparams(self.base_optimizer, self.scheduler, self.optim_cfg)
        c = blob["counters"]
        self.steps, self.updates, self.skipped = c["steps"], c["updates"], c["skipped"]
        self.consecutive_nonfinite = c["consecutive_nonfinite"]
        self.engine.global_steps, self.engine.skipped_steps = c["ds_global_steps"], c["ds_skipped_steps"]
        self.engine.global_samples = c["ds_global_samples"]
        _set_rng_state(torch.load(path / f"rng_rank{self.rank}.pt", map_location="cpu", weights_only=True))
        return self.state()

    def state(self) -> dict:
        return {**self._counters(), "rank": self.rank, "world_size": self.world_size, "zero_stage": self.zero_stage,
                "lora": self.lora is not None, "lr": float(self.base_optimizer.param_groups[0]["lr"]),
                "trainable_params": int(sum(getattr(p, "ds_numel", p.numel()) for _, p in self._trainable))}
