"""The DeepSpeed config dict and the process group every training rank joins."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

import torch

if TYPE_CHECKING:  # the config dataclasses, for annotations only (training does not import config)
    from rlcustom.config import OptimConfig



def ds_config(optim: OptimConfig, *, dtype: str, world_size: int, zero_stage: int, offload_optimizer: bool,
              offload_params: bool, grad_accum: int, pin_memory: bool = False) -> dict:
    """The DeepSpeed config dict a training engine runs with."""
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


def resolve_backend(backend: Literal["auto", "gloo", "nccl"]) -> str:
    """``auto`` is NCCL with a GPU, gloo without; NCCL without a GPU is an error."""
    cuda = torch.cuda.is_available()
    if backend == "auto":
        return "nccl" if cuda else "gloo"
    if backend == "nccl" and not cuda:
        raise ValueError("backend='nccl' needs a CUDA GPU; use 'gloo' (or 'auto') on CPU")
    return backend


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_process_group(*, rank: int, world_size: int, master_addr: str, master_port: int | None,
                       backend: str) -> None:
    """Join (or create) the torch.distributed group of this engine's ranks.

    DeepSpeed reads the env (without it, it tries MPI discovery). A process that
    already belongs to a group of this size/rank/backend reuses it (several engines
    in one test process); any other group is an error. ``master_port=None`` picks a
    free port (only meaningful for world size 1).
    """
    import deepspeed
    import torch.distributed as tdist

    if tdist.is_initialized():
        if tdist.get_world_size() != world_size or tdist.get_rank() != rank or tdist.get_backend() != backend:
            raise RuntimeError(f"this process already belongs to a {tdist.get_backend()} process group of world "
                               f"size {tdist.get_world_size()} (rank {tdist.get_rank()}); cannot be rank {rank} "
                               f"of {world_size} with {backend}")
    else:
        if master_port is None:
            if world_size > 1:
                raise ValueError("master_port is required for world_size > 1")
            master_port = free_port()
        os.environ.update(MASTER_ADDR=str(master_addr), MASTER_PORT=str(master_port), RANK=str(rank),
                          WORLD_SIZE=str(world_size), LOCAL_RANK="0")
    if torch.cuda.is_available():  # each Ray actor sees its own GPU(s) as device 0..
        torch.cuda.set_device(0)
    _skip_inference_shm_op()
    deepspeed.init_distributed(backend, auto_mpi_discovery=False)


def _skip_inference_shm_op() -> None:
    """Keep DeepSpeed's communication backend from JIT-compiling its CPU shared-memory all-reduce.

    ``TorchBackend.__init__`` builds ``deepspeed_shm_comm`` (C++, ~20 s on two cores, again for every
    environment path, since torch's extension cache is per user) on every CPU process group, but the op
    serves only ``inference_all_reduce`` (DeepSpeed-Inference tensor parallelism); training's all-reduce,
    reduce-scatter and all-gather go through ``torch.distributed``. Marking it incompatible is the switch
    ``deepspeed.comm.torch.build_shm_op`` reads.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
