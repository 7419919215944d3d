"""Forward/backward over one rank's micro-batches with the loss scaling of the module docstring of
:mod:`rlcustom.training.engine` (the gradient of the full-batch mean on every rank)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import torch

from rlcustom.training.batches import count, n_rows, to_device

if TYPE_CHECKING:
    from rlcustom.training.engine import TrainingEngine

Objective = Callable[..., tuple[Any, dict]]


def accumulate(te: "TrainingEngine", batch: dict, fn: Objective, weighting: str, loss_kwargs: dict, *,
               global_loss: bool = False) -> tuple[dict, dict, Callable]:
    """Forward/backward over this rank's micro-batches; the last backward is the accumulation boundary.

    Each micro-batch loss is multiplied by ``world_size * n_mb / N`` (``N``: the count over
    all ranks, one all-reduce), so DeepSpeed's rank average gives the gradient of the
    full-batch mean. Ranks with fewer micro-batches repeat their last one with weight 0
    (every rank runs the same number of backwards). A rank whose loss is not finite
    back-propagates ``loss * nan``: every rank then sees non-finite reduced gradients.

    Returns (stats, first micro-batch, objective with its kwargs bound). Stats: objective
    stats averaged over the real micro-batches (a per-row tensor stat, e.g. the update's own log-probs
    ``[rows, T]``, concatenated over them in row order instead), ``train/loss`` (this rank's mean loss under
    the weighting; with ``global_loss`` the mean over all ranks, one more all-reduce) and
    ``train/nonfinite_loss`` (this rank's).
    """
    batch = to_device(batch, te.device)
    mbs = te.micro_batches(batch)
    counts = [count(mb, weighting) for mb in mbs]
    total, = te.all_reduce([sum(counts)], "sum")
    n_steps, = te.all_reduce([float(len(mbs))], "max")
    total = max(total, 1.0)
    te.engine.train()
    sums: dict[str, float] = {}
    rows: dict[str, list[torch.Tensor]] = {}
    loss_num, loss_den, nonfinite, plain = 0.0, 0.0, False, []
    for i in range(int(n_steps)):
        real = i < len(mbs)
        mb = mbs[i] if real else mbs[-1]
        w = (te.world_size * counts[i] / total) if real else 0.0
        te.engine.set_gradient_accumulation_boundary(i == int(n_steps) - 1)
        loss, stats = fn(te.engine, mb, **loss_kwargs)
        lv = float(loss.detach())
        scaled = loss * w
        if real and not math.isfinite(lv):
            nonfinite = True
            scaled = loss * float("nan")  # poison the reduced gradients: every rank then skips
        te.engine.backward(scaled, scale_wrt_gas=False)
        if real:
            plain.append(lv)
            loss_num += lv * counts[i]
            loss_den += counts[i]
            for k, v in stats.items():
                if torch.is_tensor(v) and v.dim() > 0:  # one value per row: kept, not averaged
                    rows.setdefault(k, []).append(v.detach().float().cpu())
                else:
                    sums[k] = sums.get(k, 0.0) + float(v)
    out: dict[str, Any] = {k: v / len(mbs) for k, v in sums.items()}
    out |= {k: torch.cat(v) for k, v in rows.items()}
    out["train/loss"] = loss_num / loss_den if loss_den > 0 else sum(plain) / len(plain)
    if global_loss:
        num, den = te.all_reduce([loss_num, loss_den], "sum")
        out["train/loss"] = num / den if den > 0 else out["train/loss"]
    out["train/micro_batches"] = float(len(mbs))
    out["train/rows"] = float(n_rows(batch))
    out["train/tokens"] = float(batch["response_mask"].sum()) if "response_mask" in batch else 0.0
    out["train/nonfinite_loss"] = float(nonfinite)
    return out, mbs[0], lambda model, mb: fn(model, mb, **loss_kwargs)
