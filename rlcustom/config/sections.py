"""The core sections of a run config (model, data, sampling, optim, roles, reward, tracking, cluster)
and the top level, :class:`RunConfig`; a trainer types its own ``algo:`` section with :func:`register_section`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from rlcustom.config.coerce import check, non_negative, positive, unit_interval
from rlcustom.config.decoder import DecoderConfig

@dataclass(frozen=True)
class LoraConfig:
    r: int = field(default=8, metadata=positive)
    alpha: float = field(default=16.0, metadata=positive)
    dropout: float = field(default=0.05, metadata=unit_interval)
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class ModelConfig:
    path: str = "smollm2-135m-instruct"  # alias, local HF-format directory, or hub id (already cached)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False  # never run a model repo's Python unless asked
    lora: LoraConfig | None = None  # LoRA adapter over a frozen base when set


@dataclass(frozen=True)
class DataConfig:
    prompts: str = "hh-rlhf"  # "hh-rlhf" (bundled) or a .jsonl/.json/.parquet file
    split: Literal["train", "validation", "all"] = "train"
    val_fraction: float = field(default=0.1, metadata=unit_interval)
    limit: int | None = field(default=None, metadata=positive)
    chat_template: bool = True
    max_prompt_tokens: int = field(default=256, metadata=positive)
    long_prompts: Literal["truncate", "skip"] = "truncate"
    on_bad_record: Literal["error", "skip"] = "error"


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = field(default=64, metadata=positive)
    temperature: float = field(default=1.0, metadata=non_negative)
    top_p: float = field(default=1.0, metadata=check(lambda v: 0 < v <= 1, "in (0, 1]"))
    top_k: int = field(default=0, metadata=non_negative)
    n: int = field(default=1, metadata=positive)

    def params(self, seed: int | None = None):
        from rlcustom.engines.base import SamplingParams

        return SamplingParams(**dataclasses.asdict(self), seed=seed)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = field(default=1e-5, metadata=positive)
    weight_decay: float = field(default=0.0, metadata=non_negative)
    betas: tuple[float, ...] = (0.9, 0.999)
    eps: float = field(default=1e-8, metadata=positive)
    max_grad_norm: float = field(default=1.0, metadata=positive)
    warmup_steps: int = field(default=0, metadata=non_negative)
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    total_steps: int = field(default=1000, metadata=positive)  # for cosine/linear decay
    micro_batch_size: int = field(default=8, metadata=positive)  # rows per forward/backward
    max_consecutive_nonfinite: int = field(default=3, metadata=positive)  # bad steps skipped before the run stops


@dataclass(frozen=True)
class RoleConfig:
    replicas: int = field(default=1, metadata=positive)
    gpus: float = field(default=0.0, metadata=non_negative)
    cpus: float = field(default=1.0, metadata=non_negative)
    num_threads: int | None = field(default=None, metadata=positive)  # torch threads per replica (default: cpus)
    engine: Literal["auto", "hf", "vllm"] = "auto"
    colocate_with: str | None = None
    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    zero_stage: int = field(default=2, metadata=check(lambda v: v in (0, 1, 2, 3), "one of 0, 1, 2, 3"))
    offload_optimizer: bool = False  # DeepSpeed ZeRO CPU offload of optimizer states (GPU runs)
    offload_params: bool = False     # ZeRO-3 parameter offload (GPU runs)
    tensor_parallel_size: int = field(default=1, metadata=positive)
    max_restarts: int = field(default=2, metadata=non_negative)
    call_timeout_s: float = field(default=600.0, metadata=positive)  # longest wait for one call to this role


@dataclass(frozen=True)
class RewardConfig:
    spec: str = "length_tokens"  # a registered Python reward, "module:function", "model", "loglik" or "http"
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to a Python reward function
    model_path: str | None = None  # reward model directory (spec: model) or LM (spec: loglik)
    url: str | None = None  # endpoint (spec: http)
    api_key_env: str | None = None  # name of the env var holding the endpoint's key (never the key itself)
    timeout_s: float = field(default=30.0, metadata=positive)
    max_retries: int = field(default=3, metadata=non_negative)


@dataclass(frozen=True)
class TrackingConfig:
    project: str = "rlcustom"
    name: str | None = None
    group: str | None = None
    tags: tuple[str, ...] = ()
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"  # auto: online iff WANDB_API_KEY is set
    samples_every: int = field(default=10, metadata=positive)
    checkpoint_artifacts: bool = False  # also log each checkpoint as a W&B artifact (type "checkpoint")


@dataclass(frozen=True)
class ClusterConfig:
    address: str | None = None  # None: start a local Ray; "auto" or "ray://host:10001" to join
    num_cpus: int | None = None  # for a local Ray only
    placement_timeout_s: float = field(default=30.0, metadata=positive)
    include_dashboard: bool = False  # local Ray only: start the dashboard (and with it the job server)
    dashboard_host: str = "127.0.0.1"  # local Ray only: where the dashboard listens; 0.0.0.0 exposes it to the network


@dataclass(frozen=True)
class RunConfig:
    """The top level of every config file."""

    trainer: str = "generate"
    seed: int = 0
    output_dir: str = "runs/default"
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    sampling: SamplingConfig = SamplingConfig()
    optim: OptimConfig = OptimConfig()
    engine: Literal["auto", "hf", "vllm"] = "auto"
    roles: dict[str, RoleConfig] = field(default_factory=dict)
    steps: int = field(default=10, metadata=positive)  # trainer steps to run
    save_every: int = field(default=0, metadata=non_negative)  # checkpoint every N steps (0: only at the end)
    keep_checkpoints: int = field(default=2, metadata=positive)
    resume: str = "auto"  # auto: continue from OUTPUT_DIR/checkpoints/latest if present | never | a checkpoint dir
    resume_force: bool = False  # resume although the checkpoint's identity differs (a new optim.lr is applied)
    sync: Literal["collective", "object_store"] = "collective"  # learner -> rollout weight transport
    reward: RewardConfig = RewardConfig()  # what scores rollouts (trainers that need a reward)
    tracking: TrackingConfig = TrackingConfig()
    cluster: ClusterConfig = ClusterConfig()
    decoder: DecoderConfig = DecoderConfig()  # guided decoding for `rlcustom generate` (hf engine)
    algo: Any = None  # the trainer's own section, typed by register_section()


SECTIONS: dict[str, type] = {}


def register_section(trainer: str) -> Callable[[type], type]:
    """Declare the dataclass that types the ``algo:`` section for ``trainer``."""

    def deco(cls: type) -> type:
        SECTIONS[trainer] = cls
        return cls

    return deco
