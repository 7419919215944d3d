"""Config is data: frozen dataclasses loaded from YAML plus ``a.b=value`` overrides.

Every error is one line that names the file (or the override), the dotted key
and what was expected, with a close-match suggestion for typos::

    configs/ppo.yaml: unknown key 'ppo.lrr' (did you mean 'ppo.lr'?)
    override 'ppo.lr=-1': key 'ppo.lr' must be > 0, got -1.0

Sections are dataclasses; a field's ``metadata`` may carry ``check=(predicate,
"description")`` for range checks and ``doc`` for the help text. ``Literal``
types give the allowed choices. Trainers register the dataclass of their own
section with :func:`register_section`.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Union

import yaml

from rlcustom.errors import ConfigError
from rlcustom.yaml_strict import safe_load_strict

# --------------------------------------------------------------------------- helpers


def check(pred: Callable[[Any], bool], desc: str, doc: str = "") -> dict:
    """Field metadata: ``field(default=1e-5, metadata=check(lambda v: v > 0, "> 0"))``."""
    return {"check": (pred, desc), "doc": doc}


positive = check(lambda v: v > 0, "> 0")
non_negative = check(lambda v: v >= 0, ">= 0")
unit_interval = check(lambda v: 0 <= v <= 1, "in [0, 1]")


class _Fail(Exception):
    def __init__(self, key: str, msg: str) -> None:
        super().__init__(msg)
        self.key, self.msg = key, msg


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = " or ".join(_type_name(a) for a in args)
        return inner + " or null" if len(args) < len(typing.get_args(tp)) else inner
    if origin in (list, tuple):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(typing.get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Convert a YAML value to ``tp`` or raise _Fail naming ``key``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, key)
            except _Fail as e:
                errors.append(e)
        raise _Fail(key, f"must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            close = difflib.get_close_matches(str(value), [str(a) for a in typing.get_args(tp)], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _Fail(key, f"must be {_type_name(tp)}, got {value!r}{hint}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Fail(key, f"must be {_type_name(tp)}, got {value!r}")
        (inner,) = typing.get_args(tp)[:1]
        return tuple(_convert(inner, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Fail(key, f"must be {_type_name(tp)}, got {value!r}")
        vt = typing.get_args(tp)[1]
        return types.MappingProxyType({str(k): _convert(vt, v, f"{key}.{k}") for k, v in value.items()})
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise _Fail(key, f"must be a mapping, got {value!r}")
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise _Fail(key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Fail(key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Fail(key, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise _Fail(key, f"must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _Fail(key, f"must be a string, got {value!r}")
        return value
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)" if close else ""
            raise _Fail(key, f"unknown key '{key}'{hint}")
        f = fields[k]
        val = _convert(hints[k], v, key)
        chk = f.metadata.get("check")
        if chk and val is not None and not chk[0](val):
            raise _Fail(key, f"key '{key}' must be {chk[1]}, got {val!r}")
        kwargs[k] = val
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # cross-field checks in __post_init__
        raise _Fail(prefix or cls.__name__, f"section '{prefix or '<top>'}': {e}") from None


def _fmt(fail: _Fail) -> str:
    return fail.msg if fail.msg.startswith(("key ", "unknown key", "section ")) else f"key '{fail.key}' {fail.msg}"


# --------------------------------------------------------------------------- sections


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


# which DecoderConfig keys each guided decoder takes (besides ``name``)
DECODER_KEYS: dict[str, tuple[str, ...]] = {
    "vas": ("value", "beta", "topk", "mode", "dtype"),
    "dera": ("aligned", "lam", "dtype"),
    "dera_lora": ("adapter", "lam", "mode"),
    "qadapter": ("adapter", "alpha", "alpha0", "mode"),
}
_DECODER_MODES = {"vas": ("tree", "expand"), "dera_lora": ("auto", "slice", "peft"), "qadapter": ("auto", "slice", "peft")}


@dataclass(frozen=True)
class DecoderConfig:
    """Guided decoding for ``rlcustom generate`` (``hf`` engine): VAS, DeRa, Q-Adapter.

    A bare number or path is accepted where a list is (``decoder.beta=2`` is ``[2.0]``).
    Per-key checks run when the config loads; :meth:`check` (keys that go together) and the
    checks that need the model (``topk`` <= vocabulary, directories exist, engine) run in
    :func:`rlcustom.decoding.registry_cli.check_decoder` before anything is loaded.
    """

    name: Literal["vas", "dera", "dera_lora", "qadapter"] | None = None  # None: plain sampling from model.path
    value: str | tuple[str, ...] = ()  # vas: ValueModel director(y/ies); several compose (VAS Sec. 4.2)
    beta: float | tuple[float, ...] = ()  # vas: one weight per value model (empty: 1.0 each)
    topk: int = field(default=20, metadata=positive)  # vas: children of pi_0's top-k evaluated per step
    mode: Literal["tree", "expand", "auto", "slice", "peft"] | None = None  # vas: tree|expand; LoRA decoders: auto|slice|peft
    dtype: Literal["float32", "bfloat16", "float16", "int8"] | None = None  # vas value / dera aligned model dtype; int8: vas on CPU
    aligned: str | tuple[str, ...] = ()  # dera: aligned model path(s)
    lam: float | tuple[float, ...] = ()  # dera/dera_lora: lambda per aligned model or adapter (empty: 1.0)
    adapter: str | None = None  # dera_lora/qadapter: LoRA adapter directory over model.path
    alpha: float | None = None  # qadapter: alpha (default 1.0)
    alpha0: float | None = field(default=None, metadata=positive)  # qadapter: alpha0 (default 0.01)

    def __post_init__(self) -> None:
        for k in ("value", "beta", "aligned", "lam"):  # a bare item is a list of one
            v = getattr(self, k)
            object.__setattr__(self, k, tuple(v) if isinstance(v, (list, tuple)) else (v,))

    def check(self) -> None:
        """Cross-key checks (ValueError naming the key). Not in ``__post_init__``: overrides are validated
        one at a time, and ``decoder.name=vas decoder.value=DIR`` must not fail after its first half."""
        if self.name is None:
            set_ = [k for k in ("value", "beta", "aligned", "lam", "adapter", "alpha", "alpha0", "mode", "dtype")
                    if getattr(self, k) not in ((), None)]
            if set_:
                raise ValueError(f"decoder.{set_[0]} is set but decoder.name is not (vas, dera, dera_lora or qadapter)")
            return
        allowed = DECODER_KEYS[self.name]
        for k in ("value", "beta", "aligned", "lam", "adapter", "alpha", "alpha0", "mode", "dtype"):
            if k not in allowed and getattr(self, k) not in ((), None):
                raise ValueError(f"decoder.{k} is not used by decoder.name={self.name} "
                                 f"(it takes {', '.join('decoder.' + a for a in allowed)})")
        if self.mode is not None and self.mode not in _DECODER_MODES.get(self.name, ()):
            raise ValueError(f"decoder.mode={self.mode} is not a mode of {self.name} "
                             f"(one of {', '.join(_DECODER_MODES.get(self.name, ()))})")
        # decoder -> (models key, what it is, weights key, one weight per ...)
        paired = {"vas": ("value", "a ValueModel directory", "beta", "value model"),
                  "dera": ("aligned", "the aligned model", "lam", "aligned model")}
        if self.name in paired:
            models_key, what, weights_key, per = paired[self.name]
            models, weights = getattr(self, models_key), getattr(self, weights_key)
            if not models:
                raise ValueError(f"decoder.{models_key} is required for decoder.name={self.name} ({what})")
            if weights and len(weights) != len(models):
                raise ValueError(f"decoder.{weights_key} has {len(weights)} entries but decoder.{models_key} has "
                                 f"{len(models)} (one {'lambda' if weights_key == 'lam' else weights_key} per {per})")
        if self.dtype == "int8" and self.name != "vas":
            raise ValueError(f"decoder.dtype=int8 is for vas value models (dynamic int8 on CPU), not {self.name}")
        if self.name in ("dera_lora", "qadapter") and not self.adapter:
            raise ValueError(f"decoder.adapter is required for decoder.name={self.name} (a LoRA adapter directory)")

    def options(self) -> dict:
        """The keyword options of :func:`rlcustom.decoding.registry_cli.build_decoder` (unset ones left out)."""
        out = {k: getattr(self, k) for k in DECODER_KEYS.get(self.name or "", ()) if getattr(self, k) not in ((), None)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


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


# --------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}': bad key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _set_path(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for p in path[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    if isinstance(value, dict) and isinstance(node.get(path[-1]), dict):  # `data={prompts: P}` merges into data
        value = _merged(node[path[-1]], value)
    node[path[-1]] = value


def _merged(old: dict, new: dict) -> dict:
    return {**old, **{k: _merged(old[k], v) if isinstance(v, dict) and isinstance(old.get(k), dict) else v
                      for k, v in new.items()}}


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        data = safe_load_strict(p.read_text(), str(p))  # a key given twice is an error naming both lines
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def from_dict(data: Mapping[str, Any], *, source: str = "<config>", cls: type = RunConfig) -> Any:
    """Build ``cls`` from a plain mapping; errors name ``source`` and the key."""
    data = dict(data)
    algo_raw = data.pop("algo", None)
    try:
        cfg = _build(cls, data, "")
    except _Fail as f:
        raise ConfigError(f"{source}: {_fmt(f)}") from None
    if cls is RunConfig:
        section = SECTIONS.get(cfg.trainer)
        if section is None:
            _ensure_trainers_imported()
            section = SECTIONS.get(cfg.trainer)
        if section is None and cfg.trainer != "generate":  # an unknown trainer, not its algo: key, is the error
            from rlcustom.registry import TRAINERS

            if TRAINERS.names() and cfg.trainer not in TRAINERS:
                close = difflib.get_close_matches(cfg.trainer, TRAINERS.names() + ["generate"], n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(TRAINERS.names())})"
                raise ConfigError(f"{source}: unknown trainer '{cfg.trainer}'{hint}")
        if algo_raw is not None and section is None:
            raise ConfigError(f"{source}: key 'algo' is not used by trainer '{cfg.trainer}'")
        if section is not None:
            try:
                algo = _convert(section, algo_raw or {}, "algo")
            except _Fail as f:
                raise ConfigError(f"{source}: {_fmt(f)}") from None
            cfg = dataclasses.replace(cfg, algo=algo)
    return cfg


def _ensure_trainers_imported() -> None:
    try:  # trainers register their sections on import
        import rlcustom.trainers  # noqa: F401
    except ImportError:
        pass


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), cls: type = RunConfig) -> Any:
    """Load YAML (optional) then apply dotted overrides; validate everything.

    Errors from an override name the override, so a user sees which of the
    two sources was wrong.
    """
    tree = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    # validate the file alone first, so its errors name the file
    from_dict(tree, source=source, cls=cls)
    for ov in overrides:
        keys, value = parse_override(ov)
        _set_path(tree, keys, value)
        from_dict(tree, source=f"override '{ov}'", cls=cls)
    return from_dict(tree, source=source, cls=cls)


def to_dict(cfg: Any) -> Any:
    """Plain, YAML-safe dict of a config (for W&B and checkpoints)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg
