"""Rows, micro-batches and weighting units of a training batch (a dict of tensors/lists by row)."""
from __future__ import annotations

import torch

from rlcustom.models.packing import PACKED, row_tokens, split_by_tokens

WEIGHTINGS = ("tokens", "rows", "equal")


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def n_rows(batch: dict) -> int:
    return int(batch["input_ids"].shape[0])


def slice_rows(batch: dict, start: int, stop: int) -> dict:
    """Rows ``start:stop`` of every entry that has one value per row; other entries as they are."""
    B = n_rows(batch)
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == B:
            out[k] = v[start:stop]
        elif isinstance(v, (list, tuple)) and len(v) == B:
            out[k] = v[start:stop]
        else:
            out[k] = v
    return out


def split_micro_batches(batch: dict, size: int, rank: int = 0) -> list[dict]:
    """Consecutive micro-batches of at most ``size`` rows (every rank needs at least one row)."""
    B = n_rows(batch)
    if B == 0:
        raise ValueError(f"rank {rank}: empty batch (every rank needs at least one row)")
    return [slice_rows(batch, i, min(B, i + size)) for i in range(0, B, size)]


def split_packed(batch: dict, max_tokens: int, rank: int = 0) -> list[dict]:
    """Consecutive micro-batches of at most ``max_tokens`` attended tokens (a longer row goes alone), each
    marked for packed forwards (:mod:`rlcustom.models.packing`: no pad tokens, per-sequence positions)."""
    B = n_rows(batch)
    if B == 0:
        raise ValueError(f"rank {rank}: empty batch (every rank needs at least one row)")
    ranges = split_by_tokens(row_tokens(batch).tolist(), max_tokens)
    return [slice_rows(batch, a, b) | {PACKED: True} for a, b in ranges]


def count(mb: dict, weighting: str) -> float:
    """``n_mb``: the micro-batch's count of the weighting unit (valid tokens, rows, or 1)."""
    if weighting == "tokens":
        return float(mb["response_mask"].sum())
    if weighting == "rows":
        return float(mb["input_ids"].shape[0])
    return 1.0


def check_weighting(weighting: str) -> str:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    return weighting


def all_reduce(values: list[float], op: str, *, world_size: int, device: torch.device) -> list[float]:
    """Sum (or max) of small float lists over the engine's ranks; a no-op for world size 1."""
    if world_size == 1:
        return values
    import deepspeed.comm as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()
