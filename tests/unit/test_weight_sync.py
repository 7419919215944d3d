"""Bucketed broadcast over a standalone gloo group (two members in threads of one process)."""
import threading

import torch

from rlcustom.runtime.runtime import free_port
from rlcustom.engines.weight_sync import SyncGroup, buckets, meta_of


def test_buckets_split_by_dtype_and_size():
    named = [("a", torch.zeros(10)), ("b", torch.zeros(10)), ("c", torch.zeros(10, dtype=torch.bfloat16)),
             ("d", torch.zeros(100))]
    # 80-byte buckets: a+b fit (80 B), c is another dtype, d (400 B) goes alone
    assert buckets(meta_of(named), 80) == [[0, 1], [2], [3]]


def test_broadcast_delivers_exact_tensors():
    port = free_port()
    torch.manual_seed(0)
    sent = [("w1", torch.randn(3, 4)), ("w2", torch.randn(5)), ("h", torch.randn(2, 2).to(torch.bfloat16))]
    meta = meta_of(sent)
    got = {}

    def member(rank):
        g = SyncGroup("127.0.0.1", port, 2, rank, backend="gloo", timeout_s=30)
        tensors, stats = g.broadcast(meta, [t for _, t in sent] if rank == 0 else None, bucket_bytes=64)
        got[rank] = (tensors, stats)

    threads = [threading.Thread(target=member, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    tensors, stats = got[1]
    for (name, ref), t in zip(sent, tensors):
        assert t.dtype == ref.dtype and torch.equal(t, ref), name
    assert stats["sync/buckets"] == 3 and stats["sync/bytes"] == (12 + 5) * 4 + 4 * 2
