"""vLLM's spawned processes on CPU start with one OpenMP/MKL thread; the caller's environment comes back."""
from __future__ import annotations

import os

from rlcustom.engines.vllm import _spawn_threads


def test_one_thread_for_spawned_processes_on_cpu_only(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with _spawn_threads(on_cpu=True):
        assert (os.environ["OMP_NUM_THREADS"], os.environ["MKL_NUM_THREADS"]) == ("1", "1")
    assert os.environ["OMP_NUM_THREADS"] == "2" and "MKL_NUM_THREADS" not in os.environ
    with _spawn_threads(on_cpu=False):
        assert os.environ["OMP_NUM_THREADS"] == "2" and "MKL_NUM_THREADS" not in os.environ
