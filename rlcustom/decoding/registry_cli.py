"""Decoders for ``rlcustom generate --decoder NAME``: CLI options -> a StepModel factory for the ``hf`` engine.

    rlcustom generate cfg.yaml --decoder vas --value runs/vas/value --beta 2 --topk 20
    rlcustom generate cfg.yaml --decoder vas --value runs/a/value --value runs/b/value --beta 1 --beta 3
    rlcustom generate cfg.yaml --decoder dera --aligned runs/ppo/model --lam 0.5
    rlcustom generate cfg.yaml --decoder dera_lora --adapter runs/ppo/adapter --lam 1.5
    rlcustom generate cfg.yaml --decoder qadapter --adapter runs/qa/adapter --alpha 1.0

:func:`decoder_overrides` turns the CLI's flags (rlcustom/cli/generate.py) into ``decoder.*`` overrides,
:func:`build_decoder` turns the options into the
factory that ``HFEngine(..., decoder=...)`` (or ``engine.decoder = ...``) takes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

__all__ = ["build_decoder", "decoder_overrides", "check_decoder",
           "GuidedDecoder", "DECODER_NAMES"]

from rlcustom.config.decoder import DECODER_KEYS
from rlcustom.registry import DECODERS

DECODER_NAMES = tuple(DECODER_KEYS)  # the decoder: section declares each decoder's keys once
# options of the Python API only (no config key / flag): dera_lora's list of adapters already loaded
_API_KEYS = {"dera_lora": ("adapters",)}


def decoder_fn(name: str) -> Callable[..., Any]:
    """The registered decoder factory ``name`` (:data:`rlcustom.registry.DECODERS`); ValueError if unknown."""
    from rlcustom.config import load_plugins

    load_plugins()  # the built-in decoders register on import
    try:
        return DECODERS.get(name)
    except KeyError as e:
        raise ValueError(str(e).strip("'\"")) from None


_FLAG_KEYS = ("decoder", "value", "beta", "topk", "aligned", "adapter", "lam", "alpha", "alpha0")


def decoder_overrides(args: Any) -> list[str]:
    """The flags (attributes of ``args``: decoder, value, beta, topk, aligned, adapter, lam, alpha, alpha0)
    as ``decoder.KEY=VALUE`` overrides (applied after the config file and its overrides,
    so a flag wins). Lists of paths are written as JSON strings, which YAML reads back verbatim; lists of
    weights as a YAML list, which reads ``1`` as a number (the config takes no number written as a string)."""
    out = []
    for flag in _FLAG_KEYS:
        v = getattr(args, flag, None)
        if v is None:
            continue
        key = "name" if flag == "decoder" else flag
        if isinstance(v, list):
            v = json.dumps(v) if flag in ("value", "aligned") else "[" + ", ".join(map(str, v)) + "]"
        out.append(f"decoder.{key}={v}")
    return out


def check_decoder(cfg) -> None:
    """Everything about ``cfg.decoder`` that can be checked before a model is loaded: keys that go
    together, the engine, and that the value/adapter/aligned paths exist. One-line ConfigError."""
    from rlcustom.errors import ConfigError

    d = cfg.decoder
    try:
        d.check()
    except ValueError as e:
        raise ConfigError(f"section 'decoder': {e}") from None
    if d.name is None:
        return
    if cfg.engine == "vllm":
        raise ConfigError(f"decoder.name={d.name} runs on the hf engine (it combines several models per step), "
                          "but engine is 'vllm': set engine=hf (or auto)")
    for i, v in enumerate(d.value):
        p = Path(v).expanduser()
        if not (p / "head_config.json").is_file():
            what = "no such directory" if not p.exists() else "not a ValueModel directory (no head_config.json)"
            raise ConfigError(f"decoder.value[{i}]: {v}: {what} (the vas trainer writes OUTPUT_DIR/value)")
    if d.adapter is not None:
        p = Path(d.adapter).expanduser()
        if not (p / "adapter_config.json").is_file():
            what = "no such directory" if not p.exists() else "not a LoRA adapter directory (no adapter_config.json)"
            raise ConfigError(f"decoder.adapter: {d.adapter}: {what}")
    for i, a in enumerate(d.aligned):
        from rlcustom.models.loading import resolve_model_path

        try:
            resolve_model_path(a)
        except Exception as e:  # noqa: BLE001 - ModelLoadError's one line, with the key in front
            raise ConfigError(f"decoder.aligned[{i}]: {e}") from None


def _one_or_list(x):
    if isinstance(x, (list, tuple)):
        return x[0] if len(x) == 1 else list(x)
    return x


def _check_keys(name: str, options: dict, allowed: tuple[str, ...]) -> None:
    bad = sorted(k for k, v in options.items() if v is not None and k not in allowed)
    if bad:
        raise ValueError(f"decoder {name!r} does not take {', '.join('--' + b for b in bad)} "
                         f"(it takes {', '.join('--' + a for a in allowed)})")


def _peft_wrapped(base_model, adapter: str | None):
    """The model the LoRA decoders run on: ``base_model`` with ``adapter`` loaded (unmerged) when given."""
    if adapter is None:
        return base_model
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, adapter, is_trainable=False).eval()


class GuidedDecoder:
    """A guided decoder with its extra models loaded once; :meth:`factory` gives the ``hf`` engine's
    ``decoder=`` for one generate call, optionally with other betas (per call or per request).

        g = GuidedDecoder("vas", {"value": ["runs/vas/value"], "beta": [2.0], "topk": 20}, model, tok)
        engine.generate(prompts, params, decoder=g.factory())                      # beta 2
        engine.generate(prompts, params, decoder=g.factory(beta=[0.5]))            # another beta, same model
        engine.generate(prompts, params, decoder=g.factory(beta=[torch.tensor([0., 4.])]))  # one per row

    Per-request beta (VAS Section 4.3, personalisation): a ``[B]`` tensor per value model, one entry per
    engine row (``n`` samples of a prompt are ``n`` consecutive rows; the engine must then take all rows
    in one chunk: ``batch_size`` >= B).
    """

    def __init__(self, name: str, options: dict, base_model, tokenizer=None) -> None:
        self.fn = decoder_fn(name)  # picked from DECODERS; the keys it takes from the decoder: section
        self.name, self.base_model = name, base_model
        self.opts = {k: v for k, v in dict(options or {}).items() if v is not None and v != []}
        _check_keys(name, self.opts, DECODER_KEYS.get(name, ()) + _API_KEYS.get(name, ()))
        self._fixed = None
        (self._setup_vas if name == "vas" else self._setup_dera if name == "dera" else self._setup_lora)()

    def _setup_vas(self) -> None:
        """Load the value models once; :meth:`factory` builds a VAS step per call (beta may change)."""
        from rlcustom.decoding.vas import _load_values

        opts, base_model = self.opts, self.base_model
        values = opts.get("value")
        if not values:
            raise ValueError("decoder 'vas' needs --value PATH (a ValueModel directory, e.g. OUTPUT_DIR/value)")
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        self.betas = self._betas(opts.get("beta", 1.0), len(values))
        self.k = int(opts.get("topk", 20))
        v_base = getattr(getattr(base_model, "config", None), "vocab_size", None)
        if self.k < 1 or (v_base is not None and self.k > int(v_base)):
            raise ValueError(f"decoder.topk must be in [1, {v_base}] (the vocabulary size of the model), "
                             f"got {self.k}")
        self.value_models = _load_values(values, opts.get("dtype"))
        for path, vm in zip(values, self.value_models):
            v_val = getattr(vm.config, "vocab_size", None)
            if v_base is not None and v_val is not None and int(v_base) != int(v_val):
                raise ValueError(f"value model {path}: vocabulary {v_val} != the model's {v_base}; "
                                 "VAS needs the value model to share pi_0's tokenizer")

    def _setup_dera(self) -> None:
        opts = self.opts
        if not opts.get("aligned"):
            raise ValueError("decoder 'dera' needs --aligned PATH (the aligned model)")
        self._fixed = self.fn(lam=_one_or_list(opts.get("lam", 1.0)), aligned=opts["aligned"],
                              dtype=opts.get("dtype") or "float32")

    def _setup_lora(self) -> None:
        """dera_lora / qadapter: one model with a LoRA adapter, run on its peft wrapper."""
        from rlcustom.models.lora import lora_layers

        opts, base_model, name = self.opts, self.base_model, self.name
        peft_model = _peft_wrapped(base_model, opts.get("adapter"))
        if not lora_layers(peft_model):
            raise ValueError(f"decoder {name!r} needs --adapter DIR (a LoRA adapter over the --model base)")
        if name == "dera_lora":
            inner = self.fn(lam=_one_or_list(opts.get("lam", 1.0)), adapters=opts.get("adapters"),
                            mode=opts.get("mode") or "auto")
        else:
            inner = self.fn(alpha=float(opts.get("alpha", 1.0)), alpha0=float(opts.get("alpha0", 0.01)),
                            mode=opts.get("mode") or "auto")

        def fixed(model):
            # the engine passes its own (un-wrapped) model; run on the peft wrapper of it
            return inner(peft_model if model is base_model else model)

        self._fixed = fixed

    @classmethod
    def from_config(cls, decoder_cfg, base_model, tokenizer=None) -> "GuidedDecoder":
        """From a :class:`rlcustom.config.DecoderConfig` (``cfg.decoder``)."""
        return cls(decoder_cfg.name, decoder_cfg.options(), base_model, tokenizer)

    @staticmethod
    def _betas(betas, n: int) -> list:
        betas = list(betas) if isinstance(betas, (list, tuple)) else [betas]
        if len(betas) == 1 and n > 1:  # one beta for every value model
            betas = betas * n
        if len(betas) != n:
            raise ValueError(f"decoder.beta has {len(betas)} entries but decoder.value has {n} "
                             "(one beta per value model)")
        return betas

    def factory(self, beta=None) -> Callable[[Any], Any]:
        """The engine's ``decoder=`` (``factory(engine_model) -> StepModel``). ``beta`` (vas only): one
        entry per value model (a number or a ``[B]`` tensor each; a bare one for all); None: the configured."""
        if self.name != "vas":
            if beta is not None:
                raise ValueError(f"beta is a knob of the vas decoder, not of {self.name!r}")
            return self._fixed
        betas = self.betas if beta is None else self._betas(beta, len(self.value_models))
        return self.fn(self.value_models, betas, k=self.k, mode=self.opts.get("mode") or "tree")

    def describe(self) -> str:
        if self.name == "vas":
            values = self.opts["value"] if isinstance(self.opts["value"], (list, tuple)) else [self.opts["value"]]
            betas = ", ".join(f"{b:g}" if isinstance(b, (int, float)) else "per-request" for b in self.betas)
            return f"vas (beta {betas}, top-k {self.k}, value {', '.join(map(str, values))})"
        return f"{self.name} ({', '.join(f'{k}={v}' for k, v in self.opts.items())})"


def build_decoder(name: str, options: dict, base_model, tokenizer=None) -> Callable[[Any], Any]:
    """A StepModel factory ``factory(engine_model) -> StepModel`` for the ``hf`` engine.

    Args:
        name: ``"vas"``, ``"dera"``, ``"dera_lora"`` or ``"qadapter"``.
        options: ``vas``: ``value`` (path or list; required), ``beta`` (number or list, default 1),
            ``topk`` (20), ``mode``, ``dtype``. ``dera``: ``aligned`` (path(s); required), ``lam`` (1),
            ``dtype``. ``dera_lora``: ``adapter`` (a LoRA directory; or none if ``base_model`` is
            already a peft model), ``lam``, ``adapters``, ``mode``. ``qadapter``: ``adapter``,
            ``alpha`` (1.0), ``alpha0`` (0.01), ``mode``.
        base_model: the engine's model (``pi_0`` / the SFT model / the frozen base).
        tokenizer: the engine's tokenizer.

    To change beta between calls without reloading the value models, keep a :class:`GuidedDecoder`.
    """
    return GuidedDecoder(name, options, base_model, tokenizer).factory()
