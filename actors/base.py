"""What every role actor shares. Actors are plain classes: the scheduler wraps
them with ``ray.remote`` and places them; tests may also use them in-process."""
from __future__ import annotations

import os
import random

import torch


class ActorBase:
    role: str = "actor"

    def __init__(self, seed: int = 0, rank: int = 0, num_threads: int | None = None) -> None:
        self.rank = rank
        self.seed = seed
        try:  # one progress bar per actor start-up is noise in the driver's log
            from transformers.utils import logging as tlog

            tlog.disable_progress_bar()
            tlog.set_verbosity_error()
        except ImportError:
            pass
        if num_threads:
            torch.set_num_threads(num_threads)
        random.seed(seed + rank)
        torch.manual_seed(seed + rank)

    def ready(self) -> dict:
        """Where this actor runs; the driver waits on it (with a timeout) after placement."""
        node_id, ip = None, "127.0.0.1"
        try:
            import ray

            if ray.is_initialized():
                node_id = ray.get_runtime_context().get_node_id()
                ip = ray.util.get_node_ip_address()
        except Exception:  # noqa: BLE001 - outside Ray
            pass
        gpu = torch.cuda.current_device() if torch.cuda.is_available() else None
        return {"role": self.role, "rank": self.rank, "pid": os.getpid(), "node_id": node_id, "ip": ip, "gpu": gpu}

    def ping(self) -> bool:
        return True
