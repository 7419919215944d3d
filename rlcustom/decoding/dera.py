"""Decoding-time realignment (DeRa, Liu et al., ICML 2024) with models, for the ``hf`` engine.

:class:`DeRaStep` (a ``StepModel`` over separate SFT/aligned models, or
:meth:`DeRaStep.from_lora` over one peft model whose LoRA adapter is the aligned model,
one batched forward per step), the decoders ``"dera"`` (:func:`dera_decoder`, its ``decoder:`` keys
:class:`DeRaOptions`) and ``"dera_lora"`` (:func:`dera_lora_decoder`, :class:`DeRaLoRAOptions`), and weight
combining with models:
:func:`weight_interpolated_model` and :func:`lora_interpolated` (Appendix D.5).
The math (Eq. 9 logits, state-dict interpolation) is :mod:`rlcustom.algos.dera`.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch

from rlcustom.algos.dera import dera_logits, interpolate_state_dicts, lam_scalar
from rlcustom.config import DecoderConfig
from rlcustom.decoding.multi import CombinedStep, PairedLoRAStep, TwoModelStep
from rlcustom.decoding.registry_cli import check_adapter_dir, on_adapter, one_per, register_decoder, require
from rlcustom.models.lora import lora_layers

__all__ = ["DeRaStep", "DeRaOptions", "DeRaLoRAOptions", "dera_decoder", "dera_lora_decoder",
           "weight_interpolated_model", "lora_interpolated"]


def _normalise_lams(lam: Any, n: int) -> list:
    """One lam per aligned model: a number / 1-element tensor / ``[B]`` tensor for one
    aligned model, a list/tuple of ``n`` such values for ``n`` aligned models."""
    if isinstance(lam, (list, tuple)):
        lams = list(lam)
        if n == 1 and len(lams) != 1:
            raise ValueError(f"one aligned model takes one lam; got a sequence of {len(lams)}")
    else:
        if n != 1:
            raise ValueError(f"with {n} aligned models, lam must be a list/tuple of {n} values; got {lam!r}")
        lams = [lam]
    if len(lams) != n:
        raise ValueError(f"got {n} aligned models but {len(lams)} lam values")
    out = []
    for i, l in enumerate(lams):
        what = f"lam[{i}]" if n > 1 else "lam"
        if isinstance(l, torch.Tensor) and l.numel() != 1:
            if l.dim() != 1:
                raise ValueError(f"{what} must be a number or a [B] tensor; got shape {tuple(l.shape)}")
            if not bool(torch.isfinite(l).all()):
                raise ValueError(f"{what} must be finite; got {l.tolist()}")
            out.append(l.detach().float())
        else:
            out.append(lam_scalar(l, what))
    return out


class DeRaStep(CombinedStep):
    """DeRa decoding (Algorithm 1, Eq. 9; Appendix B for several aligned models) as a
    :class:`~rlcustom.engines.base.StepModel`: each step returns
    ``dera_logits(h_sft, [h_1, ..., h_n], lam)``.

    ``DeRaStep(sft_model, aligned_models, lam)`` decodes the SFT model and each aligned
    model side by side, each with its own KV cache (:class:`TwoModelStep`);
    :meth:`DeRaStep.from_lora` takes a peft model whose LoRA adapter(s) are the aligned
    model(s) and gets every model's logits from one batched forward
    (:class:`PairedLoRAStep`).

    ``lam``: for one aligned model a number (``0`` = SFT, ``1`` = aligned, ``> 1``
    extrapolates) or a ``[B]`` tensor (one lambda per row of the batch the engine
    passes to :meth:`start`, i.e. per request; with ``n > 1`` samples per prompt or a
    batch split by the engine's ``batch_size``, the rows are the engine's rows);
    for ``n`` aligned models a list of ``n`` such values.
    """

    def __init__(self, sft_model, aligned_models, lam: Any = 1.0) -> None:
        aligned = list(aligned_models) if isinstance(aligned_models, (list, tuple)) else [aligned_models]
        if not aligned:
            raise ValueError("DeRaStep needs at least one aligned model")
        self._setup(TwoModelStep([sft_model, *aligned]), lam)

    @classmethod
    def from_lora(cls, peft_model, lam: Any = 1.0, adapters: str | Sequence[str] | None = None,
                  mode: str = "auto") -> "DeRaStep":
        """The SFT model is ``peft_model``'s base and the aligned model(s) its LoRA adapter(s)
        (``adapters``, default: the active one); one ``(1 + n) * B``-row forward per step."""
        obj = cls.__new__(cls)
        obj._setup(PairedLoRAStep(peft_model, adapters, mode=mode), lam)
        return obj

    def _setup(self, inner, lam: Any) -> None:
        self.lams = _normalise_lams(lam, inner.num_outputs - 1)
        super().__init__(inner, self._combine)

    def _combine(self, parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        h_sft, aligned = parts[0], list(parts[1:])
        B = h_sft.shape[0]
        for i, l in enumerate(self.lams):
            if isinstance(l, torch.Tensor) and l.shape[0] != B:
                raise ValueError(f"per-request lam{'[%d]' % i if len(self.lams) > 1 else ''} has {l.shape[0]} "
                                 f"entries but the batch has {B} rows")
        if len(aligned) == 1:
            return dera_logits(h_sft, aligned[0], self.lams[0])
        return dera_logits(h_sft, aligned, self.lams)

    def reorder(self, rows: torch.Tensor) -> None:
        super().reorder(rows)
        idx = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
        self.lams = [l.index_select(0, idx.to(l.device)) if isinstance(l, torch.Tensor) else l for l in self.lams]


def _device_of(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


def _lam(lam: tuple[float, ...]) -> float | list[float]:
    """``decoder.lam`` as the factories take it: empty -> 1.0, one -> a number, several -> a list."""
    return 1.0 if not lam else lam[0] if len(lam) == 1 else list(lam)


@dataclass(frozen=True)
class DeRaOptions(DecoderConfig):
    """``decoder.name: dera``: the engine's model is the SFT model; each step decodes
    ``softmax(lam * h_aligned + (1 - lam) * h_sft)`` (Eq. 9; several aligned models: Appendix B)."""

    aligned: str | tuple[str, ...] = ()  # aligned model(s): alias, directory or cached hub id, one per lambda
    lam: float | tuple[float, ...] = ()  # lambda per aligned model (empty: 1.0); 0: SFT, 1: aligned, > 1 extrapolates
    dtype: Literal["float32", "bfloat16", "float16"] | None = None  # dtype the aligned models load in (null: float32)

    def check(self) -> None:
        super().check()
        require(self, "aligned", "the aligned model")
        one_per(self, "lam", "aligned", "lambda per aligned model")

    def check_files(self) -> None:
        from rlcustom.models.loading import resolve_model_path

        for i, a in enumerate(self.aligned):
            try:
                resolve_model_path(a)
            except Exception as e:  # noqa: BLE001 - ModelLoadError's one line, with the key in front
                raise ValueError(f"decoder.aligned[{i}]: {e}") from None

    def load(self, factory: Callable[..., Any], base_model: Any, tokenizer: Any = None) -> Callable[[], Any]:
        fixed = factory(lam=_lam(self.lam), aligned=list(self.aligned), dtype=self.dtype or "float32")
        return lambda: fixed


@dataclass(frozen=True)
class DeRaLoRAOptions(DecoderConfig):
    """``decoder.name: dera_lora``: DeRa whose aligned model is a LoRA adapter over the engine's (SFT) model;
    the SFT and aligned logits come from one batched forward per step."""

    adapter: str | None = None  # LoRA adapter directory over model.path (the aligned model)
    lam: float | tuple[float, ...] = ()  # lambda (empty: 1.0); 0: SFT, 1: aligned, > 1 extrapolates
    mode: Literal["auto", "slice", "peft"] | None = None  # how base and adapter rows share one forward (null: auto)

    def check(self) -> None:
        super().check()
        require(self, "adapter", "a LoRA adapter directory")

    def check_files(self) -> None:
        check_adapter_dir(self)

    def load(self, factory: Callable[..., Any], base_model: Any, tokenizer: Any = None) -> Callable[[], Any]:
        fixed = on_adapter(base_model, self.adapter, factory(lam=_lam(self.lam), mode=self.mode or "auto"),
                           "dera_lora")
        return lambda: fixed


@register_decoder("dera", options=DeRaOptions)
def dera_decoder(lam: Any = 1.0, aligned: Any = (), *, dtype: str = "float32"):
    """Factory for the ``hf`` engine: ``HFEngine(sft_model, tok, decoder=dera_decoder(lam, aligned=[m]))``.

    Kwargs (also the ``decoder=dera`` config/CLI signature):
        lam: float, list of floats (one per aligned model) or a ``[B]`` tensor; see :class:`DeRaStep`.
        aligned: one aligned model or a list of them; each a loaded model or a name/path
            (loaded once here with :func:`rlcustom.models.loading.load_causal_lm` in ``dtype``
            and moved to the engine model's device on first use).
        dtype: dtype for aligned models given by name.

    The engine's own model is the SFT model. Returns ``factory(model) -> DeRaStep``.
    """
    items = list(aligned) if isinstance(aligned, (list, tuple)) else [aligned]
    if not items:
        raise ValueError("dera decoder: pass aligned=[model or path, ...] (the aligned model(s))")
    models = []
    for a in items:
        if isinstance(a, (str, bytes)) or hasattr(a, "__fspath__"):
            from rlcustom.models.loading import load_causal_lm

            a = load_causal_lm(a, dtype=dtype).eval()
        models.append(a)
    _normalise_lams(lam, len(models))  # fail now, not at the first generate

    def factory(model) -> DeRaStep:
        dev = _device_of(model)
        for i, m in enumerate(models):
            if _device_of(m) != dev and items[i] is not m:  # only move models we loaded ourselves
                models[i] = m.to(dev)
        return DeRaStep(model, models, lam)

    return factory


@register_decoder("dera_lora", options=DeRaLoRAOptions)
def dera_lora_decoder(lam: Any = 1.0, adapters: str | Sequence[str] | None = None, *, mode: str = "auto"):
    """Factory for the ``hf`` engine whose model is a peft model: base = SFT model,
    LoRA adapter(s) = aligned model(s); one batched forward per step.

    Kwargs (also the ``decoder=dera_lora`` config/CLI signature):
        lam: float, list (one per adapter) or ``[B]`` tensor; see :class:`DeRaStep`.
        adapters: adapter name(s); default the model's active adapter.
        mode: ``"auto"`` | ``"slice"`` | ``"peft"``, how the mixed batch is run (see
            :mod:`rlcustom.decoding.multi`).

    To decode with a saved adapter, build the engine on ``PeftModel.from_pretrained(base, path)``.
    """
    n = 1 if adapters is None or isinstance(adapters, str) else len(adapters)
    _normalise_lams(lam, n)

    def factory(model) -> DeRaStep:
        return DeRaStep.from_lora(model, lam, adapters, mode=mode)

    return factory


def weight_interpolated_model(sft_model, aligned_model, lam: float | Sequence[float]):
    """Weight-combining DeRa (Appendix D.5): a NEW model (deep copy of ``sft_model``) with
    parameters ``(1 - lam) * theta_sft + lam * theta_aligned`` via :func:`interpolate_state_dicts`
    (``aligned_model`` may be a list with ``lam`` a list, one per model). ``lam = 0`` / ``1``
    give the SFT / aligned weights exactly. The architectures must match (same state-dict keys);
    for a LoRA aligned model use :func:`lora_interpolated`."""
    aligned = list(aligned_model) if isinstance(aligned_model, (list, tuple)) else aligned_model
    sds = [m.state_dict() for m in aligned] if isinstance(aligned, list) else aligned.state_dict()
    new_sd = interpolate_state_dicts(sft_model.state_dict(), sds, lam)
    out = copy.deepcopy(sft_model)
    out.load_state_dict(new_sd, strict=True)
    return out


def lora_interpolated(peft_model, lam: float | Sequence[float], adapters: str | Sequence[str] | None = None):
    """Weight-combining DeRa for a LoRA aligned model: ``(1 - lam) W + lam (W + Delta) = W + lam * Delta``,
    i.e. the adapter's scaling multiplied by ``lam``, merged into a copy of the base weights.

    Returns a NEW plain (un-peft'ed) model; ``peft_model`` is unchanged. ``adapters`` (default:
    the active adapter) with ``lam`` a list gives ``W + sum_i lam_i Delta_i``. ``lam = 0`` returns
    the base weights exactly. Non-linear variants (DoRA) and ``modules_to_save`` are refused,
    because for them scaling the delta is not the weight interpolation.
    """
    if adapters is None:
        active = getattr(peft_model, "active_adapters", None) or [getattr(peft_model, "active_adapter", "default")]
        adapters = [active] if isinstance(active, str) else list(active)
    elif isinstance(adapters, str):
        adapters = [adapters]
    adapters = list(adapters)
    lams = lam if isinstance(lam, (list, tuple)) else [lam]
    if len(lams) != len(adapters):
        raise ValueError(f"got {len(adapters)} adapters but {len(lams)} lam values")
    lams = [lam_scalar(l, "lam") for l in lams]
    cfgs = getattr(peft_model, "peft_config", {})
    for a in adapters:
        cfg = cfgs.get(a)
        if cfg is not None and (getattr(cfg, "modules_to_save", None) or getattr(cfg, "use_dora", False)):
            raise ValueError(f"adapter {a!r} has modules_to_save or DoRA: its delta is not linear in a scale")
    layers_src = lora_layers(peft_model)
    if not layers_src:
        raise ValueError("lora_interpolated needs a peft model with LoRA layers")
    if any(a in getattr(m, "lora_variant", {}) for m in layers_src for a in adapters):
        raise ValueError("lora_interpolated supports plain LoRA only (not DoRA or other variants)")
    model = copy.deepcopy(peft_model)
    for m in lora_layers(model):
        for a, l in zip(adapters, lams):
            if a in m.scaling:
                m.scaling[a] = m.scaling[a] * l
    keep = [a for a, l in zip(adapters, lams) if l != 0.0]
    if not keep:
        return model.unload()
    return model.merge_and_unload(adapter_names=keep)
