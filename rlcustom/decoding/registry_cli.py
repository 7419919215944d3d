"""Decoders for ``rlcustom generate --decoder NAME``: CLI options -> a StepModel factory for the ``hf`` engine.

    rlcustom generate cfg.yaml --decoder vas --value runs/vas/value --beta 2 --topk 20
    rlcustom generate cfg.yaml --decoder vas --value runs/a/value --value runs/b/value --beta 1 --beta 3
    rlcustom generate cfg.yaml --decoder dera --aligned runs/ppo/model --lam 0.5
    rlcustom generate cfg.yaml --decoder dera_lora --adapter runs/ppo/adapter --lam 1.5
    rlcustom generate cfg.yaml --decoder qadapter --adapter runs/qa/adapter --alpha 1.0

:func:`add_decoder_args` adds the flags to an argparse parser, :func:`decoder_options`
reads them back as ``(name, options)``, :func:`build_decoder` turns them into the
factory that ``HFEngine(..., decoder=...)`` (or ``engine.decoder = ...``) takes.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

__all__ = ["build_decoder", "add_decoder_args", "decoder_options", "DECODER_NAMES"]

DECODER_NAMES = ("vas", "dera", "dera_lora", "qadapter")


def add_decoder_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("guided decoding (hf engine)")
    g.add_argument("--decoder", choices=DECODER_NAMES, help="decode with several models per step")
    g.add_argument("--value", action="append", help="vas: a ValueModel directory (repeat to compose)")
    g.add_argument("--beta", action="append", type=float, help="vas: weight of each --value (default 1)")
    g.add_argument("--topk", type=int, help="vas: children evaluated per step (default 20)")
    g.add_argument("--aligned", action="append", help="dera: aligned model path (repeat for several)")
    g.add_argument("--adapter", help="dera_lora/qadapter: LoRA adapter directory over the --model base")
    g.add_argument("--lam", action="append", type=float, help="dera/dera_lora: lambda per aligned model/adapter")
    g.add_argument("--alpha", type=float, help="qadapter: alpha (default 1.0)")
    g.add_argument("--alpha0", type=float, help="qadapter: alpha0 (default 0.01)")


def decoder_options(args: argparse.Namespace) -> tuple[str | None, dict]:
    """``(name, options)`` from parsed :func:`add_decoder_args` flags (None when no ``--decoder``)."""
    keys = ("value", "beta", "topk", "aligned", "adapter", "lam", "alpha", "alpha0")
    return getattr(args, "decoder", None), {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


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
        tokenizer: the engine's tokenizer (checked against the value models' vocabulary).
    """
    opts = {k: v for k, v in dict(options or {}).items() if v is not None}
    if name == "vas":
        from rlcustom.decoding.vas import vas_decoder

        _check_keys(name, opts, ("value", "beta", "topk", "mode", "dtype"))
        values = opts.get("value")
        if not values:
            raise ValueError("decoder 'vas' needs --value PATH (a ValueModel directory, e.g. OUTPUT_DIR/value)")
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        betas = opts.get("beta", 1.0)
        betas = list(betas) if isinstance(betas, (list, tuple)) else [betas]
        if len(betas) == 1 and len(values) > 1:
            betas = betas * len(values)
        from rlcustom.decoding.vas import _load_values

        vms = _load_values(values, opts.get("dtype"))
        v_base = getattr(getattr(base_model, "config", None), "vocab_size", None)
        for path, vm in zip(values, vms):
            v_val = getattr(vm.config, "vocab_size", None)
            if v_base is not None and v_val is not None and int(v_base) != int(v_val):
                raise ValueError(f"value model {path}: vocabulary {v_val} != the model's {v_base}; "
                                 "VAS needs the value model to share pi_0's tokenizer")
        factory = vas_decoder(vms, betas, k=int(opts.get("topk", 20)), mode=opts.get("mode", "tree"))
        return factory
    if name == "dera":
        from rlcustom.decoding.dera import dera_decoder

        _check_keys(name, opts, ("aligned", "lam", "dtype"))
        if not opts.get("aligned"):
            raise ValueError("decoder 'dera' needs --aligned PATH (the aligned model)")
        return dera_decoder(lam=_one_or_list(opts.get("lam", 1.0)), aligned=opts["aligned"],
                            dtype=opts.get("dtype", "float32"))
    if name in ("dera_lora", "qadapter"):
        from rlcustom.decoding.multi import lora_layers

        adapter = opts.get("adapter")
        peft_model = _peft_wrapped(base_model, adapter)
        if not lora_layers(peft_model):
            raise ValueError(f"decoder {name!r} needs --adapter DIR (a LoRA adapter over the --model base)")
        if name == "dera_lora":
            from rlcustom.decoding.dera import dera_lora_decoder

            _check_keys(name, opts, ("adapter", "lam", "adapters", "mode"))
            inner = dera_lora_decoder(lam=_one_or_list(opts.get("lam", 1.0)), adapters=opts.get("adapters"),
                                      mode=opts.get("mode", "auto"))
        else:
            from rlcustom.decoding.qadapter import qadapter_decoder

            _check_keys(name, opts, ("adapter", "alpha", "alpha0", "mode"))
            inner = qadapter_decoder(alpha=float(opts.get("alpha", 1.0)), alpha0=float(opts.get("alpha0", 0.01)),
                                     mode=opts.get("mode", "auto"))

        def factory(model):
            # the engine passes its own (un-wrapped) model; run on the peft wrapper of it
            return inner(peft_model if model is base_model else model)

        return factory
    raise ValueError(f"unknown decoder {name!r} (known: {', '.join(DECODER_NAMES)})")
