"""Guided decoders for ``rlcustom generate``: their registration, and config/CLI options -> the ``hf`` engine's
``decoder=``.

    rlcustom generate cfg.yaml --decoder vas --value runs/vas/value --beta 2 --topk 20
    rlcustom generate cfg.yaml --decoder vas --value runs/a/value --value runs/b/value --beta 1 --beta 3
    rlcustom generate cfg.yaml --decoder dera --aligned runs/ppo/model --lam 0.5
    rlcustom generate cfg.yaml --decoder dera_lora --adapter runs/ppo/adapter --lam 1.5
    rlcustom generate cfg.yaml --decoder qadapter --adapter runs/qa/adapter --alpha 1.0

A decoder is one module: its factory (``factory(**kwargs) -> factory(engine_model) -> StepModel``) registered
with its options class, ``@register_decoder("vas", options=VASOptions)``. The options class (a frozen dataclass
subclassing :class:`~rlcustom.config.DecoderConfig`) types the ``decoder:`` keys, checks the keys that go together
and the paths, and loads what the factory needs (:meth:`~rlcustom.config.DecoderConfig.load`). Nothing here names
a decoder: :func:`decoder_overrides` turns the CLI's flags into ``decoder.*`` overrides, :func:`check_decoder`
runs the checks before a model loads, :class:`GuidedDecoder` builds the engine's ``decoder=``.
"""
from __future__ import annotations

import inspect
import json
import typing
from pathlib import Path
from typing import Any, Callable

from rlcustom.config.decoder import DECODER_OPTIONS, DecoderConfig, decoder_from_dict, register_decoder_options
from rlcustom.config.plugins import load_plugins
from rlcustom.errors import ConfigError
from rlcustom.registry import DECODERS

__all__ = ["register_decoder", "decoder_fn", "decoder_overrides", "check_decoder", "GuidedDecoder", "build_decoder",
           "require", "one_per", "check_adapter_dir", "on_adapter"]


def register_decoder(name: str, *, options: type[DecoderConfig], override: bool = False) -> Callable:
    """``@register_decoder("vas", options=VASOptions)`` on the factory: the factory goes into
    :data:`rlcustom.registry.DECODERS` (what ``--decoder``/``decoder.name`` runs), ``options`` types the
    ``decoder:`` keys of ``name`` (:func:`rlcustom.config.register_decoder_options`)."""

    def deco(fn: Callable) -> Callable:
        register_decoder_options(name, options, override=override)
        return DECODERS.register(name, override=override)(fn)

    return deco


def decoder_fn(name: str) -> Callable[..., Any]:
    """The registered decoder factory ``name`` (:data:`rlcustom.registry.DECODERS`); ValueError if unknown."""
    load_plugins()  # the built-in decoders register on import
    try:
        return DECODERS.get(name)
    except KeyError as e:
        raise ValueError(str(e).strip("'\"")) from None


def decoder_overrides(args: Any) -> list[str]:
    """The CLI's decoder flags (the attributes of ``args``: ``decoder`` is ``decoder.name``, any other the
    ``decoder:`` key of its name; None: not given) as ``decoder.KEY=VALUE`` overrides, applied after the config
    file and its overrides (a flag wins). A key that holds paths gets them as JSON strings, which YAML reads back
    verbatim (a comma or a colon stays in the path); a list of weights is written as a YAML list, which reads
    ``1`` as a number (the config takes no number written as a string)."""
    out = []
    for flag, v in vars(args).items():
        if v is None:
            continue
        key = "name" if flag == "decoder" else flag
        if key != "name" and _holds_text(key):
            v = json.dumps(v)
        elif isinstance(v, list):
            v = "[" + ", ".join(map(str, v)) + "]"
        out.append(f"decoder.{key}={v}")
    return out


def _holds_text(key: str) -> bool:
    """Whether ``decoder.KEY`` takes strings (paths) in a registered decoder's options."""
    def text(tp: Any) -> bool:
        return tp is str or any(text(a) for a in typing.get_args(tp))

    load_plugins()
    return any(text(typing.get_type_hints(c).get(key)) for c in DECODER_OPTIONS.values())


def check_decoder(cfg) -> None:
    """Everything about ``cfg.decoder`` that can be checked before a model is loaded: keys that go together,
    the engine, and the paths (the decoder's :meth:`~rlcustom.config.DecoderConfig.check_files`). One-line
    ConfigError."""
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
    try:
        d.check_files()
    except ValueError as e:
        raise ConfigError(str(e)) from None


class GuidedDecoder:
    """A guided decoder with its extra models loaded once; :meth:`factory` gives the ``hf`` engine's
    ``decoder=`` for one generate call, optionally with other per-call options (vas: ``beta``, per call or
    per request).

        g = GuidedDecoder("vas", {"value": ["runs/vas/value"], "beta": [2.0], "topk": 20}, model, tok)
        engine.generate(prompts, params, decoder=g.factory())                      # beta 2
        engine.generate(prompts, params, decoder=g.factory(beta=[0.5]))            # another beta, same model
        engine.generate(prompts, params, decoder=g.factory(beta=[torch.tensor([0., 4.])]))  # one per row

    ``options`` are the decoder's ``decoder:`` keys (validated as the config's). Per-request beta (VAS
    Section 4.3, personalisation): a ``[B]`` tensor per value model, one entry per engine row (``n`` samples
    of a prompt are ``n`` consecutive rows; the engine must then take all rows in one chunk: ``batch_size``
    >= B).
    """

    def __init__(self, name: str, options: dict, base_model, tokenizer=None) -> None:
        self.fn = decoder_fn(name)  # what DECODERS holds under the name; its keys from the options class
        self.name, self.base_model = name, base_model
        opts = {k: v for k, v in dict(options or {}).items() if v is not None and v != []}
        self.cfg = decoder_from_dict({**opts, "name": name}, source=f"decoder {name!r}")
        self.cfg.check()
        self._make = self.cfg.load(self.fn, base_model, tokenizer)
        self._per_call = set(inspect.signature(self._make).parameters)

    @classmethod
    def from_config(cls, decoder_cfg: DecoderConfig, base_model, tokenizer=None) -> GuidedDecoder:
        """From a config's ``decoder:`` section (``cfg.decoder``)."""
        return cls(decoder_cfg.name, decoder_cfg.options(), base_model, tokenizer)

    def factory(self, **per_call: Any) -> Callable[[Any], Any]:
        """The engine's ``decoder=`` (``factory(engine_model) -> StepModel``); ``per_call`` options (vas:
        ``beta``, one entry per value model, a number or a ``[B]`` tensor each) replace the configured ones."""
        per_call = {k: v for k, v in per_call.items() if v is not None}
        for k in per_call:
            if k not in self._per_call:
                takes = ", ".join(sorted(self._per_call)) or "none"
                raise ValueError(f"{k} is not a per-call option of decoder {self.name!r} (it has: {takes})")
        return self._make(**per_call)

    def describe(self) -> str:
        return self.cfg.describe()


def build_decoder(name: str, options: dict, base_model, tokenizer=None) -> Callable[[Any], Any]:
    """A StepModel factory ``factory(engine_model) -> StepModel`` for the ``hf`` engine: decoder ``name``
    (``"vas"``, ``"dera"``, ``"dera_lora"``, ``"qadapter"`` or a plugin's) with its ``decoder:`` keys
    ``options`` (the tables ``decoder (name: ...)`` of the configuration reference) over ``base_model`` (the
    engine's model: ``pi_0`` / the SFT model / the frozen base). To change per-call options (vas: beta)
    without reloading the extra models, keep a :class:`GuidedDecoder`."""
    return GuidedDecoder(name, options, base_model, tokenizer).factory()


# -- helpers for a decoder's options class (its check / check_files / load) --------------------------------

def require(cfg: DecoderConfig, key: str, what: str) -> None:
    """ValueError unless ``decoder.KEY`` is set: "decoder.value is required for decoder.name=vas (WHAT)"."""
    if getattr(cfg, key) in ((), None):
        raise ValueError(f"decoder.{key} is required for decoder.name={cfg.name} ({what})")


def one_per(cfg: DecoderConfig, weights_key: str, models_key: str, per: str) -> None:
    """ValueError unless ``decoder.WEIGHTS`` is empty or has one entry per ``decoder.MODELS``."""
    weights, models = getattr(cfg, weights_key), getattr(cfg, models_key)
    if weights and len(weights) != len(models):
        raise ValueError(f"decoder.{weights_key} has {len(weights)} entries but decoder.{models_key} has "
                         f"{len(models)} (one {per})")


def check_adapter_dir(cfg: DecoderConfig, key: str = "adapter") -> None:
    """ValueError unless ``decoder.KEY`` (when set) is a LoRA adapter directory."""
    path = getattr(cfg, key)
    if path is not None and not (Path(path).expanduser() / "adapter_config.json").is_file():
        what = "no such directory" if not Path(path).expanduser().exists() else \
            "not a LoRA adapter directory (no adapter_config.json)"
        raise ValueError(f"decoder.{key}: {path}: {what}")


def on_adapter(base_model, adapter: str | None, decoder: Callable[[Any], Any], name: str) -> Callable[[Any], Any]:
    """The engine's ``decoder=`` for a decoder that runs on ``base_model`` with the LoRA ``adapter`` directory
    loaded over it (unmerged): ``decoder`` gets the peft wrapper in place of the engine's own model. Without
    ``adapter``, ``base_model`` must already carry LoRA layers."""
    from rlcustom.models.lora import lora_layers

    peft_model = base_model
    if adapter is not None:
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(base_model, adapter, is_trainable=False).eval()
    if not lora_layers(peft_model):
        raise ValueError(f"decoder {name!r} needs --adapter DIR (a LoRA adapter over the --model base)")

    def factory(model):
        return decoder(peft_model if model is base_model else model)

    return factory
