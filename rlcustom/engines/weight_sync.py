"""Weight sync learner rank 0 -> rollout engines.

A process group of its own (not DeepSpeed's world): rank 0 is the learner,
ranks 1..N the rollout actors. It is built from a TCPStore, so it coexists with
the learners' group in the same process; gloo on CPU, NCCL on GPU. Tensors go
in dtype-homogeneous buckets (one flat tensor per bucket), so a 135M model is
a handful of collective calls, not hundreds. Names/shapes travel once per
sync as small metadata through Ray; the object store is the fallback.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

DTYPES = {str(d): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64)}


@dataclass(frozen=True)
class TensorMeta:
    name: str
    shape: tuple[int, ...]
    dtype: str


def meta_of(named: Sequence[tuple[str, torch.Tensor]]) -> list[TensorMeta]:
    return [TensorMeta(n, tuple(t.shape), str(t.dtype)) for n, t in named]


def buckets(meta: Sequence[TensorMeta], bucket_bytes: int) -> list[list[int]]:
    """Group tensor indices into buckets of one dtype and at most ``bucket_bytes`` (a bigger tensor goes alone)."""
    out: list[list[int]] = []
    cur: list[int] = []
    cur_bytes, cur_dtype = 0, None
    for i, m in enumerate(meta):
        nbytes = _numel(m.shape) * DTYPES[m.dtype].itemsize
        if cur and (m.dtype != cur_dtype or cur_bytes + nbytes > bucket_bytes):
            out.append(cur)
            cur, cur_bytes = [], 0
        cur.append(i)
        cur_bytes += nbytes
        cur_dtype = m.dtype
    if cur:
        out.append(cur)
    return out


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


class SyncGroup:
    """One member of the learner->rollout group (rank 0 sends, others receive)."""

    def __init__(self, host: str, port: int, world_size: int, rank: int, backend: str = "auto",
                 timeout_s: float = 300.0) -> None:
        from datetime import timedelta

        if backend == "auto":
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        self.rank, self.world_size, self.backend = rank, world_size, backend
        store = dist.TCPStore(host, port, world_size, is_master=(rank == 0), timeout=timedelta(seconds=timeout_s))
        if backend == "gloo":
            self.pg = dist.ProcessGroupGloo(store, rank, world_size, timedelta(seconds=timeout_s))
            self.device = torch.device("cpu")
        else:
            self.device = torch.device("cuda", torch.cuda.current_device())
            opts = dist.ProcessGroupNCCL.Options()
            self.pg = dist.ProcessGroupNCCL(store, rank, world_size, opts)

    def broadcast(self, meta: Sequence[TensorMeta], tensors: Sequence[torch.Tensor] | None,
                  bucket_bytes: int = 256 << 20) -> tuple[list[torch.Tensor], dict]:
        """Rank 0 passes ``tensors``; every rank returns the received list (rank 0: its own)."""
        t0 = time.perf_counter()
        out: list[torch.Tensor | None] = [None] * len(meta)
        nbytes = 0
        for idx in buckets(meta, bucket_bytes):
            dtype = DTYPES[meta[idx[0]].dtype]
            sizes = [_numel(meta[i].shape) for i in idx]
            if self.rank == 0:
                assert tensors is not None
                flat = torch.cat([tensors[i].detach().reshape(-1).to(self.device, dtype) for i in idx])
            else:
                flat = torch.empty(sum(sizes), dtype=dtype, device=self.device)
            self.pg.broadcast(flat, 0).wait()
            nbytes += flat.numel() * flat.element_size()
            for i, part in zip(idx, torch.split(flat, sizes)):
                out[i] = part.view(meta[i].shape)
        stats = {"sync/bytes": float(nbytes), "sync/seconds": time.perf_counter() - t0,
                 "sync/buckets": float(len(buckets(meta, bucket_bytes)))}
        return [t for t in out if t is not None], stats


class WeightSyncMixin:
    """Methods a learner (sender) and a rollout actor (receiver) gain for syncing.

    The sender must provide ``named_weights(adapter_only)``, the receiver
    ``load_weights(named, adapter_only)``.
    """

    _sync_group: SyncGroup | None = None

    def init_sync_group(self, host: str, port: int, world_size: int, rank: int, backend: str = "auto") -> bool:
        self._sync_group = SyncGroup(host, port, world_size, rank, backend)
        return True

    def sync_meta(self, adapter_only: bool = False) -> list[TensorMeta]:
        named = self.named_weights(adapter_only=adapter_only)  # type: ignore[attr-defined]
        return meta_of(named)

    def sync_send(self, adapter_only: bool = False) -> dict:
        assert self._sync_group is not None, "init_sync_group first"
        named = self.named_weights(adapter_only=adapter_only)  # type: ignore[attr-defined]
        _, stats = self._sync_group.broadcast(meta_of(named), [t for _, t in named])
        return stats

    def sync_gather_only(self, adapter_only: bool = False) -> bool:
        """Learner ranks > 0 under ZeRO-3: take part in the parameter gather, send nothing."""
        self.named_weights(adapter_only=adapter_only)  # type: ignore[attr-defined]
        return True

    def sync_recv(self, meta: Sequence[TensorMeta], adapter_only: bool = False) -> dict:
        assert self._sync_group is not None, "init_sync_group first"
        tensors, stats = self._sync_group.broadcast(meta, None)
        t = time.perf_counter()
        self.load_weights(list(zip([m.name for m in meta], tensors)), adapter_only=adapter_only)  # type: ignore[attr-defined]
        stats["sync/load_seconds"] = time.perf_counter() - t
        return stats

    def get_weights(self, adapter_only: bool = False) -> dict[str, torch.Tensor]:
        """Object-store fallback: the driver passes this dict (as an ObjectRef) to ``load_weights``."""
        return {n: t.detach().cpu() for n, t in self.named_weights(adapter_only=adapter_only)}  # type: ignore[attr-defined]
