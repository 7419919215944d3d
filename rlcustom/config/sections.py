"""The core sections of a run config (model, data, sampling, optim, roles, reward, tracking, cluster)
and the top level, :class:`RunConfig`; a trainer types its own ``algo:`` section with :func:`register_section`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from rlcustom.config.validation import bounds, non_negative, positive, unit_interval
from rlcustom.config.decoder import DecoderConfig
from rlcustom.config.rollout import RolloutConfig

@dataclass(frozen=True)
class LoraConfig:
    r: int = field(default=8, metadata=positive)  # rank of the LoRA update matrices
    alpha: float = field(default=16.0, metadata=positive)  # LoRA scale numerator: updates are scaled by alpha / r
    dropout: float = field(default=0.05, metadata=unit_interval)  # dropout on the adapters' input, in [0, 1]
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")  # linear modules that get adapters


@dataclass(frozen=True)
class ModelConfig:
    path: str = "smollm2-135m-instruct"  # alias, local HF-format directory, or hub id (already cached)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # weight dtype of the learner and the rollout engines
    trust_remote_code: bool = False  # never run a model repo's Python unless asked
    lora: LoraConfig | None = None  # LoRA adapter over a frozen base when set


@dataclass(frozen=True)
class DataConfig:
    prompts: str = "hh-rlhf"  # "hh-rlhf" (bundled) or a .jsonl/.json/.parquet file
    split: Literal["train", "validation", "all"] = "train"  # which part of the seeded train/validation split to use
    val_fraction: float = field(default=0.1, metadata=unit_interval)  # share of prompts in the validation split
    split_seed: int = 0  # salts the split's hash; not the run's seed, so runs and evals at any seed share one held-out set
    limit: int | None = field(default=None, metadata=positive)  # keep the first N records after the split (null: all)
    chat_template: bool = True  # format prompts with the tokenizer's chat template (false: raw text)
    max_prompt_tokens: int = field(default=256, metadata=positive)  # prompt length cap in tokens (after templating)
    long_prompts: Literal["truncate", "skip"] = "truncate"  # over max_prompt_tokens: keep the last tokens, or drop
    on_bad_record: Literal["error", "skip"] = "error"  # a malformed record stops the run, or is skipped and counted


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = field(default=64, metadata=positive)  # most tokens generated per completion
    temperature: float = field(default=1.0, metadata=non_negative)  # sampling temperature; 0 = greedy
    top_p: float = field(default=1.0, metadata=bounds(gt=0, le=1))  # nucleus sampling; 1 = off
    top_k: int = field(default=0, metadata=non_negative)  # sample from the k likeliest tokens; 0 = off
    n: int = field(default=1, metadata=positive)  # completions sampled per prompt

    def params(self, seed: int | None = None):
        from rlcustom.engines.base import SamplingParams

        return SamplingParams(**dataclasses.asdict(self), seed=seed)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = field(default=1e-5, metadata=positive)  # peak AdamW learning rate
    weight_decay: float = field(default=0.0, metadata=non_negative)  # AdamW decoupled weight decay (matrices only)
    betas: tuple[float, ...] = (0.9, 0.999)  # AdamW (beta1, beta2); only the first two are used
    eps: float = field(default=1e-8, metadata=positive)  # AdamW epsilon
    max_grad_norm: float = field(default=1.0, metadata=positive)  # clip the global gradient norm to this
    warmup_steps: int = field(default=0, metadata=non_negative)  # optimizer updates of linear LR warmup from 0
    schedule: Literal["constant", "cosine", "linear"] = "constant"  # after warmup: constant, or decay over total_steps
    total_steps: int = field(default=1000, metadata=positive)  # for cosine/linear decay
    micro_batch_size: int = field(default=8, metadata=positive)  # rows per forward/backward
    pack: bool = False  # pack rows without pad tokens into token-budget micro-batches (instead of micro_batch_size)
    max_tokens_per_micro_batch: int = field(default=512, metadata=positive)  # token budget of a packed micro-batch
    max_consecutive_nonfinite: int = field(default=3, metadata=positive)  # bad steps skipped before the run stops


@dataclass(frozen=True)
class RoleConfig:
    replicas: int = field(default=1, metadata=positive)  # actors of this role (learner: data-parallel ranks)
    gpus: float = field(default=0.0, metadata=non_negative)  # GPUs per replica (fractions share a GPU)
    cpus: float = field(default=1.0, metadata=non_negative)  # CPUs reserved per replica
    num_threads: int | None = field(default=None, metadata=positive)  # torch threads per replica (default: cpus)
    engine: Literal["auto", "hf", "vllm"] = "auto"  # this role's engine (auto: the top-level engine)
    colocate_with: str | None = None  # another role whose placement bundles this one shares (e.g. learner)
    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"  # Ray placement group strategy
    zero_stage: int = field(default=2,  # DeepSpeed ZeRO stage (learners): 1 shards optimizer states, 2 also
                            metadata=bounds(ge=0, le=3))  # grads, 3 also params
    offload_optimizer: bool = False  # DeepSpeed ZeRO CPU offload of optimizer states (GPU runs)
    offload_params: bool = False     # ZeRO-3 parameter offload (GPU runs)
    tensor_parallel_size: int = field(default=1, metadata=positive)  # vLLM tensor parallelism per rollout replica
    max_restarts: int = field(default=2, metadata=non_negative)  # times Ray restarts a crashed replica
    call_timeout_s: float = field(default=600.0, metadata=positive)  # longest wait for one call to this role
    # reference only: learner = the LoRA learner with its adapter disabled (no model copy); auto: learner with
    # model.lora set, else separate; separate = a reference model of its own
    share: Literal["auto", "learner", "separate"] = "auto"  # reference: served by the LoRA learner, or its own model


@dataclass(frozen=True)
class RewardConfig:
    spec: str = "length_tokens"  # a registered Python reward, "module:function", "model", "loglik" or "http"
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to a Python reward function
    model_path: str | None = None  # reward model directory (spec: model) or LM (spec: loglik)
    url: str | None = None  # endpoint (spec: http)
    api_key_env: str | None = None  # name of the env var holding the endpoint's key (never the key itself)
    timeout_s: float = field(default=30.0, metadata=positive)  # connect and read timeout of an HTTP reward request
    max_retries: int = field(default=3, metadata=non_negative)  # retries of a failed HTTP reward request


@dataclass(frozen=True)
class TrackingConfig:
    project: str = "rlcustom"  # W&B project
    name: str | None = None  # W&B run name (null: W&B picks one)
    group: str | None = None  # W&B run group
    tags: tuple[str, ...] = ()  # W&B run tags
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"  # auto: online iff WANDB_API_KEY is set
    samples_every: int = field(default=10, metadata=positive)  # log a table of rollout samples every N steps
    checkpoint_artifacts: bool = False  # also log each checkpoint as a W&B artifact (type "checkpoint")


@dataclass(frozen=True)
class ClusterConfig:
    backend: Literal["ray", "inprocess"] = "ray"  # ray: roles are Ray actors | inprocess: objects in this process (debugging)
    address: str | None = None  # None: start a local Ray; "auto" or "ray://host:10001" to join
    num_cpus: int | None = None  # for a local Ray only
    placement_timeout_s: float = field(default=30.0, metadata=positive)  # longest wait for the roles' resources
    include_dashboard: bool = False  # local Ray only: start the dashboard (and with it the job server)
    dashboard_host: str = "127.0.0.1"  # local Ray only: where the dashboard listens; 0.0.0.0 exposes it to the network


@dataclass(frozen=True)
class RunConfig:
    """The top level of every config file."""

    trainer: str = "generate"  # a registered trainer (ppo, pg, sft, dpo, ...) or generate
    seed: int = 0  # seeds prompt order, sampling and model init (the train/validation split: data.split_seed)
    output_dir: str = "runs/default"  # run directory: metrics, checkpoints/, the final model
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    sampling: SamplingConfig = SamplingConfig()
    optim: OptimConfig = OptimConfig()
    engine: Literal["auto", "hf", "vllm"] = "auto"  # generation engine; auto: vllm on CUDA with vLLM installed, else hf
    roles: dict[str, RoleConfig] = field(default_factory=dict)
    steps: int = field(default=10, metadata=positive)  # trainer steps to run
    save_every: int = field(default=0, metadata=non_negative)  # checkpoint every N steps (0: only at the end)
    keep_checkpoints: int = field(default=2, metadata=positive)  # newest checkpoints kept; older ones are deleted
    resume: str = "auto"  # auto: continue from OUTPUT_DIR/checkpoints/latest if present | never | a checkpoint dir
    resume_force: bool = False  # resume although the checkpoint's identity differs (a new optim.lr is applied)
    sync: Literal["collective", "object_store"] = "collective"  # learner -> rollout weight transport
    reward: RewardConfig = RewardConfig()  # what scores rollouts (trainers that need a reward)
    rollout: RolloutConfig = RolloutConfig()  # multi-turn episodes with an environment (rollout.env)
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
