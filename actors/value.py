"""ValueActor: a value model (critic / VAS value estimator) with its own optimizer.

One actor per replica, plain torch AdamW in one process: no DeepSpeed/ZeRO and no
data parallelism across value replicas yet (each replica trains on what it is
given; a trainer that wants several should give them disjoint work and not
expect their weights to agree). Fine for critics of the sizes we train on CPU
and single GPUs; a ZeRO-sharded critic would follow ``LearnerActor``.

Column convention (see :func:`rlcustom.models.heads.response_values`): for a
batch from :meth:`Rollouts.padded` (response token ``t`` at column ``P + t``),
``values(batch)[:, t]`` is ``V(x, y_<t)``, the value head read at column
``P - 1 + t``: the state *before* token ``t`` is generated, read at the same
columns whose logits predict ``y_t`` (columns ``P-1 .. P+T-2``). This is the
``V(s_t)`` that :func:`rlcustom.algos.gae.gae_advantages` and
:func:`rlcustom.algos.td_lambda.td_lambda_targets` take.

Objectives (registered in :data:`rlcustom.registry.OBJECTIVES` when this module
is imported) read targets from ``batch["returns"]`` or ``batch["targets"]`` [B, T]:

* ``"value_mse"``: ``sum_valid (V - R)^2 / #valid`` (token mean over
  ``response_mask``, no 1/2; :func:`rlcustom.algos.td_lambda.value_mse_loss`);
* ``"value_clip"``: ``0.5 * max((V - R)^2, (clip(V, V_old - eps, V_old + eps) - R)^2)``
  token mean, with ``V_old = batch["old_values"]`` and ``eps = clip_eps`` (0.2);
  without ``old_values`` it is ``0.5 * (V - R)^2``
  (:func:`rlcustom.algos.ppo.ppo_value_loss`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from rlcustom.actors.base import ActorBase
from rlcustom.algos.ppo import ppo_value_loss
from rlcustom.algos.td_lambda import value_mse_loss
from rlcustom.engines.base import Rollouts
from rlcustom.errors import NonFiniteError
from rlcustom.models.heads import ValueModel, default_device, micro_batches, response_values, trim_batch
from rlcustom.registry import OBJECTIVES


def _register(name: str):
    """Register an objective; idempotent when this module is imported twice (as ``actors.value`` in a checkout
    and ``rlcustom.actors.value`` from the wheel), still an error against someone else's objective of that name."""
    def deco(fn):
        if name in OBJECTIVES:
            old = OBJECTIVES.get(name)
            if getattr(old, "__qualname__", None) == fn.__qualname__ and \
                    getattr(old, "__module__", "").endswith("actors.value"):
                return OBJECTIVES.register(name, override=True)(fn)
        return OBJECTIVES.register(name)(fn)
    return deco


def _targets(batch: dict) -> torch.Tensor:
    for key in ("returns", "targets"):
        if key in batch and batch[key] is not None:
            return batch[key]
    raise KeyError("value objective: the batch needs 'returns' or 'targets' [B, T]")


def _floats(stats: dict, prefix: str = "value/") -> dict[str, float]:
    return {prefix + k.removeprefix("value_"): float(v) for k, v in stats.items()}


@_register("value_mse")
def value_mse(model: ValueModel, batch: dict, **_) -> tuple[torch.Tensor, dict]:
    """Token-mean squared error of V(s_t) against ``returns``/``targets`` over ``response_mask``."""
    v = response_values(model, batch)
    mask = batch["response_mask"]
    loss, stats = value_mse_loss(v, _targets(batch).to(v), mask.to(v))
    return loss, _floats(stats)


@_register("value_clip")
def value_clip(model: ValueModel, batch: dict, clip_eps: float = 0.2, **_) -> tuple[torch.Tensor, dict]:
    """PPO's clipped value loss around ``old_values`` (plain ``0.5 * MSE`` when the batch has none)."""
    v = response_values(model, batch)
    mask = batch["response_mask"].to(v)
    old = batch.get("old_values")
    if old is None:
        loss, stats = ppo_value_loss(v, v.detach(), _targets(batch).to(v), mask, clip_eps=None)
    else:
        loss, stats = ppo_value_loss(v, old.to(v), _targets(batch).to(v), mask, clip_eps=clip_eps)
    return loss, _floats(stats)


class ValueActor(ActorBase):
    """A :class:`ValueModel` + AdamW; ``values``, ``train_step``, ``save``/``load``.

    ``model`` is a causal-LM name/directory (a fresh zero-initialised head over its
    backbone, optionally truncated to ``num_layers``), a directory written by
    :meth:`save`/``ValueModel.save``, or a ``ModelConfig``. ``optim`` is an
    ``OptimConfig`` (or None for its defaults); ``lr``/``weight_decay``/
    ``max_grad_norm``/``micro_batch_size`` override single fields. ``device``
    defaults to the GPU Ray gave this actor, if any, else CPU.
    """

    role = "value"

    def __init__(self, model, optim=None, *, dtype: str | None = None, num_layers: int | None = None,
                 trust_remote_code: bool | None = None, init_std: float | None = None, lr: float | None = None,
                 weight_decay: float | None = None, max_grad_norm: float | None = None,
                 micro_batch_size: int | None = None, seed: int = 0, rank: int = 0,
                 num_threads: int | None = None, device: str | None = None) -> None:
        super().__init__(seed=seed, rank=rank, num_threads=num_threads)
        path = getattr(model, "path", model)
        dtype = dtype or getattr(model, "dtype", None) or "float32"
        trc = trust_remote_code if trust_remote_code is not None else bool(getattr(model, "trust_remote_code", False))
        self.model = ValueModel.from_pretrained(path, dtype=dtype, num_layers=num_layers, trust_remote_code=trc,
                                                init_std=init_std).to(default_device(device))
        self.model.train()
        _disable_dropout(self.model)
        if optim is None:
            from rlcustom.config import OptimConfig

            optim = OptimConfig()
        self.optim_cfg = optim
        self.lr = float(lr if lr is not None else optim.lr)
        self.max_grad_norm = float(max_grad_norm if max_grad_norm is not None else optim.max_grad_norm)
        self.micro_batch_size = int(micro_batch_size if micro_batch_size is not None else optim.micro_batch_size)
        self.max_nonfinite = int(getattr(optim, "max_consecutive_nonfinite", 3))
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad], lr=self.lr,
            betas=tuple(optim.betas), eps=optim.eps,
            weight_decay=float(weight_decay if weight_decay is not None else optim.weight_decay))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step_count = 0
        self._nonfinite_run = 0

    # -- schedule --------------------------------------------------------------
    def _lr_factor(self, step: int) -> float:
        o = self.optim_cfg
        warm = int(getattr(o, "warmup_steps", 0))
        if warm and step < warm:
            return (step + 1) / warm
        sched, total = getattr(o, "schedule", "constant"), max(1, int(getattr(o, "total_steps", 1)))
        frac = min(1.0, max(0, step - warm) / max(1, total - warm))
        if sched == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * frac))
        if sched == "linear":
            return 1.0 - frac
        return 1.0

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _to_device(self, batch: dict) -> dict:
        return {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}

    # -- inference -------------------------------------------------------------
    @torch.no_grad()
    def values(self, batch: dict | Rollouts, pad_id: int = 0) -> torch.Tensor:
        """``V(x, y_<t)`` as [B, T] float32 on CPU, 0 on padding (see the module docstring for columns)."""
        if isinstance(batch, Rollouts):
            batch = batch.padded(pad_id)
        was_training = self.model.training
        self.model.eval()
        B, T = batch["response_mask"].shape
        out = torch.zeros((B, T), dtype=torch.float32)
        try:
            for rows, mb in micro_batches(batch, self.micro_batch_size):
                mb, t_keep = trim_batch(mb)
                if t_keep:
                    out[rows, :t_keep] = response_values(self.model, self._to_device(mb)).float().cpu()
        finally:
            self.model.train(was_training)
        return out

    def values_rollouts(self, rollouts: Rollouts, pad_id: int = 0) -> list[list[float]]:
        v = self.values(rollouts.padded(pad_id))
        return [v[i, : len(r)].tolist() for i, r in enumerate(rollouts.response_ids)]

    # -- training --------------------------------------------------------------
    def train_step(self, batch: dict, loss_name: str = "value_mse", *, loss: str | None = None, **kw) -> dict:
        """One optimizer step on ``batch`` (micro-batched gradient accumulation).

        Each micro-batch's token-mean loss is weighted by its share of the batch's
        valid tokens, so the step equals one token-mean over the whole batch. A
        non-finite loss or gradient skips the step; ``max_consecutive_nonfinite``
        skipped steps in a row raise :class:`NonFiniteError`. ``kw`` go to the
        objective (e.g. ``clip_eps``). Returns float stats prefixed ``value/``.
        """
        name = loss or loss_name
        objective = OBJECTIVES.get(name)
        mask = batch["response_mask"]
        total = float(mask.sum())
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        loss_sum, finite = 0.0, True
        for rows, mb in micro_batches(batch, self.micro_batch_size):
            mb, _ = trim_batch(mb)
            n = float(mb["response_mask"].sum())
            if n == 0:
                continue
            lval, stats = objective(self.model, self._to_device(mb), **kw)
            w = n / max(total, 1.0)
            if not torch.isfinite(lval):
                finite = False
                break
            (lval * w).backward()
            loss_sum += float(lval.detach()) * w
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + float(v) * w
        grad_norm = float("nan")
        if finite:
            params = [p for p in self.model.parameters() if p.grad is not None]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)) if params else 0.0
            finite = math.isfinite(grad_norm)
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            self._nonfinite_run += 1
            if self._nonfinite_run >= self.max_nonfinite:
                raise NonFiniteError(f"value: non-finite loss or gradient in {self._nonfinite_run} steps in a row "
                                     f"(objective {name!r}, step {self.step_count})")
            return {"value/loss": float("nan"), "value/skipped": 1.0, "value/lr": self.scheduler.get_last_lr()[0]}
        self._nonfinite_run = 0
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        return {**sums, "value/loss": loss_sum, "value/grad_norm": grad_norm, "value/lr": lr,
                "value/skipped": 0.0, "value/tokens": total}

    @torch.no_grad()
    def eval_loss(self, batch: dict, loss_name: str = "value_mse", **kw) -> float:
        """The objective on ``batch`` without a step (token mean over the whole batch)."""
        objective = OBJECTIVES.get(loss_name)
        total = float(batch["response_mask"].sum())
        self.model.eval()
        acc = 0.0
        try:
            for _, mb in micro_batches(batch, self.micro_batch_size):
                mb, _ = trim_batch(mb)
                n = float(mb["response_mask"].sum())
                if n:
                    acc += float(objective(self.model, self._to_device(mb), **kw)[0]) * n / max(total, 1.0)
        finally:
            self.model.train()
        return acc

    # -- checkpoints -----------------------------------------------------------
    def save(self, path: str, with_optimizer: bool = True) -> str:
        """The value model (``ValueModel.save`` layout) + ``optimizer.pt`` and ``value_state.json``."""
        p = Path(path)
        self.model.save(p)
        if with_optimizer:
            from rlcustom.actors.learner import plain_state  # only what weights_only=True loading accepts

            torch.save({"optimizer": plain_state(self.optimizer.state_dict()),
                        "scheduler": plain_state(self.scheduler.state_dict())}, p / "optimizer.pt")
        (p / "value_state.json").write_text(json.dumps({"step": self.step_count, "lr": self.lr}) + "\n")
        return str(p)

    def load(self, path: str, with_optimizer: bool = True) -> int:
        """Restore weights (and optimizer/scheduler state when saved); returns the step count."""
        p = Path(path)
        loaded = ValueModel.load(p, dtype=_dtype_name(self.model.dtype))
        self.model.load_state_dict(loaded.state_dict())
        opt = p / "optimizer.pt"
        if with_optimizer and opt.is_file():
            state = torch.load(opt, map_location="cpu", weights_only=True)
            # saved plain entries over the live ones (objects that were left out come from the live state)
            self.optimizer.load_state_dict({**self.optimizer.state_dict(), **state["optimizer"]})
            self.scheduler.load_state_dict({**self.scheduler.state_dict(), **state["scheduler"]})
            from rlcustom.actors.optim_hparams import apply_optim_hparams  # a forced new lr is applied

            apply_optim_hparams(self.optimizer, self.scheduler, self.optim_cfg, lr=self.lr, weight_decay=False)
        st = p / "value_state.json"
        if st.is_file():
            self.step_count = int(json.loads(st.read_text()).get("step", 0))
        return self.step_count


def _dtype_name(dtype: torch.dtype) -> str:
    from rlcustom.models.loading import DTYPES

    return next((k for k, v in DTYPES.items() if v == dtype), "float32")


def _disable_dropout(model: torch.nn.Module) -> None:
    """Value regression targets are noisy enough; dropout only adds variance (as TRL/verl do)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
