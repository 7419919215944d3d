"""ValueActor: a value model (critic / VAS value estimator) trained by the learner's engine.

One actor per data-parallel rank, like :class:`~rlcustom.actors.learner.LearnerActor`:
DeepSpeed with ZeRO 0-3 (:class:`rlcustom.training.TrainingEngine`), the same LR
schedule, micro-batch accumulation (each micro-batch weighted by its share of the
valid tokens on all ranks: the step is one token mean over the whole batch) and
non-finite policy. The trainer gives every rank its own rows; ``value/loss`` is the
loss over all ranks' rows. The objectives are :mod:`rlcustom.training.value_objectives`.

Column convention (see :func:`rlcustom.models.heads.response_values`): for a
batch from :meth:`Rollouts.padded` (response token ``t`` at column ``P + t``),
``values(batch)[:, t]`` is ``V(x, y_<t)``, the value head read at column
``P - 1 + t``: the state *before* token ``t`` is generated. This is the ``V(s_t)``
that :func:`rlcustom.algos.gae.gae_advantages` and
:func:`rlcustom.algos.td_lambda.td_lambda_targets` take.

Checkpoints (``save``/``load``): rank 0 writes the value model (``ValueModel.save``
layout, loadable as a model path) and ``value_state.json``; with the optimizer, every
rank writes ``optim_rank{r}.pt`` and ``rng_rank{r}.pt`` (:mod:`rlcustom.training.checkpoint`).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import torch

import rlcustom.training.value_objectives  # noqa: F401 - registers value_mse / value_clip
from rlcustom.actors.base import ActorBase
from rlcustom.engines.base import Rollouts
from rlcustom.models.heads import ValueModel, response_values, trim_batch
from rlcustom.registry import OBJECTIVES
from rlcustom.training import checkpoint
from rlcustom.training.engine import TrainingEngine
from rlcustom.training.weights import gathered

_RENAME = {"train/loss": "value/loss", "train/grad_norm": "value/grad_norm", "train/lr": "value/lr",
           "train/skipped": "value/skipped", "train/tokens": "value/tokens"}


def _trimmed(objective):
    """The objective on the micro-batch without its all-padding columns (same result, less compute)."""
    return lambda model, mb, **kw: objective(model, trim_batch(mb)[0], **kw)


def _values(model, mb: dict) -> torch.Tensor:
    out = torch.zeros(mb["response_mask"].shape, dtype=torch.float32, device=mb["response_mask"].device)
    tmb, t_keep = trim_batch(mb)
    if t_keep:
        out[:, :t_keep] = response_values(model, tmb).float()
    return out


class ValueActor(ActorBase):
    """A :class:`ValueModel` on one data-parallel rank; ``values``, ``train_step``, ``eval_loss``, ``save``/``load``.

    ``model`` is a causal-LM name/directory (a fresh zero-initialised head over its
    backbone, optionally truncated to ``num_layers``), a directory written by
    :meth:`save`/``ValueModel.save``, or a ``ModelConfig``. ``optim`` is an
    ``OptimConfig`` (or None for its defaults); ``lr``/``weight_decay``/
    ``max_grad_norm``/``micro_batch_size`` override single fields. ``rank``,
    ``world_size``, ``master_addr``/``master_port``, ``zero_stage`` and the offload
    flags are the learner's (ZeRO-0, one rank by default: a plain AdamW step).
    """

    role = "value"

    def __init__(self, model, optim=None, *, dtype: str | None = None, num_layers: int | None = None,
                 trust_remote_code: bool | None = None, init_std: float | None = None, lr: float | None = None,
                 weight_decay: float | None = None, max_grad_norm: float | None = None,
                 micro_batch_size: int | None = None, seed: int = 0, rank: int = 0, world_size: int = 1,
                 master_addr: str = "127.0.0.1", master_port: int | None = None, zero_stage: int = 0,
                 offload_optimizer: bool = False, offload_params: bool = False,
                 backend: Literal["auto", "gloo", "nccl"] = "auto", num_threads: int | None = None) -> None:
        super().__init__(seed=seed, rank=rank, num_threads=num_threads)
        path = getattr(model, "path", model)
        dtype = dtype or getattr(model, "dtype", None) or "float32"
        trc = trust_remote_code if trust_remote_code is not None else bool(getattr(model, "trust_remote_code", False))
        module = ValueModel.from_pretrained(path, dtype=dtype, num_layers=num_layers, trust_remote_code=trc,
                                            init_std=init_std)
        module.train()
        _disable_dropout(module)
        for p in module.parameters():
            p.requires_grad_(True)
        if optim is None:
            from rlcustom.config import OptimConfig

            optim = OptimConfig()
        overrides = {"lr": lr, "weight_decay": weight_decay, "max_grad_norm": max_grad_norm,
                     "micro_batch_size": micro_batch_size}
        optim = dataclasses.replace(optim, **{k: v for k, v in overrides.items() if v is not None})
        self.optim_cfg, self.dtype, self.lr = optim, dtype, float(optim.lr)
        self.micro_batch_size = int(optim.micro_batch_size)
        self.world_size, self.zero_stage = world_size, zero_stage
        self.training = TrainingEngine(module, optim, dtype=dtype, rank=rank, world_size=world_size,
                                       master_addr=master_addr, master_port=master_port, zero_stage=zero_stage,
                                       offload_optimizer=offload_optimizer, offload_params=offload_params,
                                       backend=backend, what="critic")

    @property
    def model(self) -> ValueModel:
        return self.training.module

    @property
    def device(self) -> torch.device:
        return self.training.device

    @property
    def step_count(self) -> int:
        """Applied optimizer updates."""
        return self.training.updates

    # -- inference -------------------------------------------------------------
    def values(self, batch: dict | Rollouts, pad_id: int = 0) -> torch.Tensor:
        """``V(x, y_<t)`` as [B, T] float32 on CPU, 0 on padding (see the module docstring for columns).
        Collective under ZeRO-3 (call on every rank)."""
        if isinstance(batch, Rollouts):
            batch = batch.padded(pad_id)
        try:
            return torch.cat(self.training.forward(batch, _values), 0)
        finally:
            self.training.engine.train()

    # -- training --------------------------------------------------------------
    def train_step(self, batch: dict, loss_name: str = "value_mse", *, loss: str | None = None, **kw) -> dict:
        """One optimizer step on this rank's rows; ``kw`` go to the objective (e.g. ``clip_eps``).

        A non-finite loss or gradient skips the step; ``max_consecutive_nonfinite``
        skipped steps in a row raise :class:`NonFiniteError`. Returns float stats prefixed
        ``value/`` (``value/loss``: the token-mean loss over all ranks' rows).
        """
        name = loss or loss_name
        st = self.training.train_step(batch, _trimmed(OBJECTIVES.get(name)), name=name, weighting="tokens",
                                      loss_kwargs=kw, global_loss=True)
        return {k: v for k, v in st.items() if k.startswith("value/")} | \
            {_RENAME[k]: v for k, v in st.items() if k in _RENAME}

    @torch.no_grad()
    def eval_loss(self, batch: dict, loss_name: str = "value_mse", **kw) -> float:
        """The objective on this rank's ``batch`` without a step (token mean over the whole batch)."""
        objective = _trimmed(OBJECTIVES.get(loss_name))
        total = float(batch["response_mask"].sum())
        parts = self.training.forward(
            batch, lambda m, mb: objective(m, mb, **kw)[0].reshape(1) * float(mb["response_mask"].sum()))
        self.training.engine.train()
        return float(sum(float(p) for p in parts)) / max(total, 1.0)

    # -- checkpoints -----------------------------------------------------------
    def save(self, path: str, with_optimizer: bool = True) -> str:
        """The value model (rank 0) + with the optimizer, this rank's optimizer/RNG files. Collective under ZeRO-3."""
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        with gathered(self.zero_stage, list(self.model.parameters())):
            if self.rank == 0:
                self.model.save(p)
        if with_optimizer:
            checkpoint.save_state(self.training, p)
        if self.rank == 0:
            (p / "value_state.json").write_text(json.dumps({"step": self.step_count, "lr": self.lr}) + "\n")
        return str(p)

    def load(self, path: str, with_optimizer: bool = True) -> int:
        """Restore weights (and optimizer/scheduler/RNG state when saved); returns the step count."""
        p = Path(path)
        blob = checkpoint.check_layout(self.training, p) if with_optimizer and \
            (p / checkpoint.optim_file(self.rank)).is_file() else None
        sd = ValueModel.load(p, dtype=self.dtype).state_dict()
        params = dict(self.model.named_parameters())
        for n, t in self.model.state_dict(keep_vars=True).items():
            with gathered(self.zero_stage, [t] if n in params else [], modifier_rank=0), torch.no_grad():
                t.data.copy_(sd[n].to(t.device, t.dtype))
        if blob is not None:
            checkpoint.load_state(self.training, p, blob)  # ZeRO 1-3: fp32 master weights from the file
        elif hasattr(self.training.optimizer, "_restore_from_bit16_weights"):
            self.training.optimizer._restore_from_bit16_weights()  # ZeRO 1-2: master weights from the loaded ones
        if blob is None and (p / "value_state.json").is_file():
            self.training.updates = int(json.loads((p / "value_state.json").read_text()).get("step", 0))
        return self.step_count


def _disable_dropout(model: torch.nn.Module) -> None:
    """Value regression targets are noisy enough; dropout only adds variance (as TRL/verl do)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
