"""VAS decoding with models (Han et al. 2024): the white-box and black-box step models for the ``hf``
engine, loading value models, and the ``vas`` decoder: its factory, registered with its ``decoder:`` keys
(:class:`VASOptions`).

The math (Eq. 5 scores, composition of several value estimators, black-box scores) is
:mod:`rlcustom.algos.vas`; the value models' KV cache is :mod:`rlcustom.decoding.value_cache`.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from rlcustom.algos.vas import compose_values, topk_children, vas_blackbox_scores, vas_scores
from rlcustom.config import DecoderConfig, positive
from rlcustom.decoding.registry_cli import one_per, register_decoder, require
from rlcustom.decoding.value_cache import ValueCache, model_device

__all__ = ["VASStep", "VASBlackBoxStep", "VASOptions", "vas_decoder", "vas_blackbox_decoder"]


def _check_betas(betas, n: int) -> list:
    if isinstance(betas, (list, tuple)):
        betas = list(betas)
    else:
        betas = [betas]
    if len(betas) != n:
        raise ValueError(f"got {n} value model(s) but {len(betas)} beta(s)")
    for i, b in enumerate(betas):
        if isinstance(b, torch.Tensor):
            if b.dim() > 1:
                raise ValueError(f"beta[{i}] must be a number, a 0-d or a [B] tensor; got shape {tuple(b.shape)}")
            if not bool(torch.isfinite(b).all()):
                raise ValueError(f"beta[{i}] must be finite")
        elif isinstance(b, bool) or not isinstance(b, numbers.Real) or not float(b) == float(b) \
                or abs(float(b)) == float("inf"):
            raise ValueError(f"beta[{i}] must be a finite real number or a tensor; got {b!r}")
    return betas


def _value_list(value_models) -> list:
    vms = list(value_models) if isinstance(value_models, (list, tuple)) else [value_models]
    if not vms:
        raise ValueError("VAS needs at least one value model")
    return vms


class _VASBase:
    """Shared by the white-box and black-box steps: value caches, betas, composed child values."""

    def _setup(self, value_models, betas, k: int, mode: str) -> None:
        self.value_models = _value_list(value_models)
        self.betas = _check_betas(betas, len(self.value_models))
        if int(k) < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        self.k = int(k)
        self.values = [ValueCache(vm, mode=mode) for vm in self.value_models]
        self.last: dict | None = None  # the last step's children, values and scores, for inspection

    def _composed(self, topk_ids: torch.Tensor) -> torch.Tensor:
        """``sum_j beta_j V_j(s ⊕ x)`` for the children ``topk_ids`` [B, k] (on ``topk_ids``' device)."""
        B = topk_ids.shape[0]
        for i, b in enumerate(self.betas):
            if isinstance(b, torch.Tensor) and b.dim() == 1 and b.shape[0] != B:
                raise ValueError(f"per-request beta[{i}] has {b.shape[0]} entries but the batch has {B} rows")
        vals = [vc.children(topk_ids).to(topk_ids.device) for vc in self.values]
        return compose_values(vals, self.betas), vals

    def _values_start(self, input_ids, attention_mask) -> None:
        for vc in self.values:
            vc.start(input_ids, attention_mask)

    def _values_advance(self, tokens) -> None:
        for vc in self.values:
            vc.advance(tokens)

    def _reorder_betas(self, rows) -> None:
        idx = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
        self.betas = [b.index_select(0, idx.to(b.device)) if isinstance(b, torch.Tensor) and b.dim() == 1 else b
                      for b in self.betas]


class VASStep(_VASBase):
    """VAS decoding (Eq. 5) as a :class:`~rlcustom.engines.base.StepModel` for the ``hf`` engine.

    Each step: ``log pi_0`` of the base model (KV-cached), its top-``k`` tokens, the value
    of each child from each value model (one batched forward per value model against its
    prefix cache, see :class:`ValueCache`), ``V = sum_j beta_j V_j`` (:func:`compose_values`)
    and ``vas_scores(log pi_0, topk_ids, V, 1)`` returned as logits: the engine samples
    from their softmax (temperature / top-k / top-p of ``SamplingParams`` apply after).
    ``advance(token)`` extends the base and every value cache by the chosen token.

    Args:
        base_model: the frozen policy ``pi_0`` (a causal LM).
        value_models: one :class:`~rlcustom.models.heads.ValueModel` or a list (composition).
        betas: one beta per value model; each a number or a ``[B]`` tensor (per request;
            rows are the engine's rows, i.e. ``n`` samples per prompt are separate rows).
        k: children evaluated per step (paper: 20). mode: ``"tree"`` | ``"expand"``.

    The log-probs the engine records for the sampled tokens are those of the VAS
    distribution (as for DeRa), not of ``pi_0``.
    """

    def __init__(self, base_model, value_models, betas=1.0, k: int = 20, mode: str = "tree") -> None:
        from rlcustom.decoding.multi import _CachedLM

        self.base = _CachedLM(base_model)
        self._setup(value_models, betas, k, mode)

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        base_lp = torch.log_softmax(logits.float(), dim=-1)
        k = min(self.k, base_lp.shape[-1])
        ids, _ = topk_children(base_lp, k)
        combined, vals = self._composed(ids)
        scores = vas_scores(base_lp, ids, combined, 1.0)
        self.last = {"topk_ids": ids, "values": vals, "combined": combined, "base_logprobs": base_lp}
        return scores

    @torch.inference_mode()
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.base.start(input_ids, attention_mask)
        self._values_start(input_ids, attention_mask)
        return self._scores(logits)

    @torch.inference_mode()
    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.base.advance(tokens)
        self._values_advance(tokens)
        return self._scores(logits)

    def reorder(self, rows: torch.Tensor) -> None:
        self.base.reorder(rows)
        for vc in self.values:
            vc.reorder(rows)
        self._reorder_betas(rows)


class VASBlackBoxStep(_VASBase):
    """VAS when ``pi_0`` is only reachable through its top-k log-probs (Section 4.4), as a StepModel.

    ``base_fn(input_ids [B, L], attention_mask [B, L]) -> (topk_ids [B, k], topk_logprobs [B, k])``
    is called once per step with the whole left-padded sequence so far (prompt + generated
    tokens; an API has no KV cache of ours): e.g. a vLLM engine with ``logprobs=k`` or an
    OpenAI-compatible endpoint (decode the ids to text there). The value models are
    white-box and KV-cached as in :class:`VASStep`. Each step returns ``[B, V]`` logits that
    are ``-inf`` outside the returned top-k and ``vas_blackbox_scores`` (renormalised over
    the k) on them. ``vocab_size`` defaults to the first value model's ``config.vocab_size``.
    """

    def __init__(self, base_fn, value_models, betas=1.0, k: int = 20, vocab_size: int | None = None,
                 mode: str = "tree") -> None:
        if not callable(base_fn):
            raise TypeError("base_fn must be a callable (input_ids, attention_mask) -> (topk_ids, topk_logprobs)")
        self.base_fn = base_fn
        self._setup(value_models, betas, k, mode)
        self.vocab_size = int(vocab_size or self.value_models[0].config.vocab_size)

    def _scores(self) -> torch.Tensor:
        ids, lps = self.base_fn(self.ids, self.attn)
        ids = torch.as_tensor(ids, dtype=torch.long)
        lps = torch.as_tensor(lps, dtype=torch.float32)
        if ids.dim() != 2 or ids.shape[0] != self.ids.shape[0]:
            raise ValueError(f"base_fn must return [B={self.ids.shape[0]}, k] ids; got {tuple(ids.shape)}")
        ids, lps = ids[:, : self.k], lps[:, : self.k]
        combined, vals = self._composed(ids)
        ids, scores = vas_blackbox_scores(ids, lps, combined, 1.0)
        out = torch.full((ids.shape[0], self.vocab_size), float("-inf"), dtype=torch.float32, device=scores.device)
        self.last = {"topk_ids": ids, "topk_logprobs": lps, "values": vals, "combined": combined}
        return out.scatter(-1, ids.to(out.device), scores.float())

    @torch.inference_mode()
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.ids, self.attn = input_ids.long(), attention_mask.long()
        self._values_start(input_ids, attention_mask)
        return self._scores()

    @torch.inference_mode()
    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.reshape(-1).long().to(self.ids.device)
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        self.attn = torch.cat([self.attn, self.attn.new_ones((self.attn.shape[0], 1))], dim=1)
        self._values_advance(tokens)
        return self._scores()

    def reorder(self, rows: torch.Tensor) -> None:
        idx = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
        self.ids, self.attn = self.ids.index_select(0, idx), self.attn.index_select(0, idx)
        for vc in self.values:
            vc.reorder(rows)
        self._reorder_betas(rows)


def _load_values(value_models, dtype: str | None) -> list:
    """Value models from paths (loaded in ``dtype``) or objects; ``dtype="int8"``: float32 weights with the
    backbone's Linear layers dynamically quantised (CPU; ~3x faster 20-child forwards, see models/quantize.py)."""
    from rlcustom.models.quantize import is_quantized, quantize_backbone_int8

    out = []
    for v in _value_list(value_models):
        if isinstance(v, (str, bytes)) or hasattr(v, "__fspath__"):
            from rlcustom.models.heads import ValueModel

            v = ValueModel.load(v, dtype="float32" if dtype == "int8" else dtype)
        if dtype == "int8" and not is_quantized(v):
            v = quantize_backbone_int8(v)
        out.append(v.eval())
    return out


def _to_device(vm, dev: torch.device):
    from rlcustom.models.quantize import is_quantized

    if is_quantized(vm) and dev.type != "cpu":
        raise ValueError(f"an int8 value model runs on CPU only, but pi_0 is on {dev} (use dtype bfloat16 on a GPU)")
    return vm.to(dev)


@dataclass(frozen=True)
class VASOptions(DecoderConfig):
    """``decoder.name: vas``: pi_0's top-k children re-ranked by ``log pi_0 + sum_j beta_j V_j`` (Eq. 5), the
    value models composed (Section 4.2)."""

    value: str | tuple[str, ...] = ()  # ValueModel director(y/ies) (the vas trainer's OUTPUT_DIR/value); several compose
    beta: float | tuple[float, ...] = ()  # one weight per value model (empty: 1.0 each)
    topk: int = field(default=20, metadata=positive)  # children of pi_0's top-k valued per step (at most the vocabulary)
    mode: Literal["tree", "expand"] | None = None  # tree: one forward of B rows x k children (default); expand: B*k rows
    dtype: Literal["float32", "bfloat16", "float16", "int8"] | None = None  # value models' dtype (null: as saved); int8: CPU

    def check(self) -> None:
        super().check()
        require(self, "value", "a ValueModel directory")
        one_per(self, "beta", "value", "beta per value model")

    def check_files(self) -> None:
        for i, v in enumerate(self.value):
            p = Path(v).expanduser()
            if not (p / "head_config.json").is_file():
                what = "no such directory" if not p.exists() else "not a ValueModel directory (no head_config.json)"
                raise ValueError(f"decoder.value[{i}]: {v}: {what} (the vas trainer writes OUTPUT_DIR/value)")

    def describe(self) -> str:
        betas = ", ".join(f"{b:g}" for b in self.beta or (1.0,) * len(self.value))
        return f"vas (beta {betas}, top-k {self.topk}, value {', '.join(self.value)})"

    def load(self, factory: Callable[..., Any], base_model: Any, tokenizer: Any = None) -> Callable[..., Any]:
        """The value models loaded once; ``make(beta=None)``: a VAS step factory with the configured betas, or
        ``beta`` (one per value model, or one for all; numbers or ``[B]`` tensors)."""
        vocab = getattr(getattr(base_model, "config", None), "vocab_size", None)
        if vocab is not None and self.topk > int(vocab):
            raise ValueError(f"decoder.topk must be in [1, {vocab}] (the vocabulary size of the model), got {self.topk}")
        value_models = _load_values(list(self.value), self.dtype)
        for path, vm in zip(self.value, value_models):
            v_val = getattr(vm.config, "vocab_size", None)
            if vocab is not None and v_val is not None and int(vocab) != int(v_val):
                raise ValueError(f"value model {path}: vocabulary {v_val} != the model's {vocab}; "
                                 "VAS needs the value model to share pi_0's tokenizer")
        configured = _per_value_model(list(self.beta) or [1.0], len(value_models))

        def make(beta: Any = None) -> Callable[[Any], VASStep]:
            betas = configured if beta is None else _per_value_model(beta, len(value_models))
            return factory(value_models, betas, k=self.topk, mode=self.mode or "tree")

        return make


def _per_value_model(betas: Any, n: int) -> list:
    """One beta per value model: a bare one or a list of one is for every model."""
    betas = list(betas) if isinstance(betas, (list, tuple)) else [betas]
    if len(betas) == 1 and n > 1:
        betas = betas * n
    if len(betas) != n:
        raise ValueError(f"decoder.beta has {len(betas)} entries but decoder.value has {n} (one beta per value model)")
    return betas


@register_decoder("vas", options=VASOptions)
def vas_decoder(value_models, betas=1.0, k: int = 20, *, mode: str = "tree", dtype: str | None = None):
    """Factory for the ``hf`` engine: ``HFEngine(pi0, tok, decoder=vas_decoder([vm], [2.0]))``.

    Kwargs (also the ``decoder=vas`` config/CLI signature):
        value_models: one value model or a list; each a loaded
            :class:`~rlcustom.models.heads.ValueModel` or a directory written by
            ``ValueModel.save`` (e.g. ``OUTPUT_DIR/value`` of the ``vas`` trainer), loaded once here
            in ``dtype`` (None: as saved; ``"int8"``: dynamic int8 backbone, CPU only) and moved to the
            engine model's device on first use.
        betas: one per value model (a bare number for one model); numbers or ``[B]`` tensors.
        k: top-k children evaluated per step (default 20, as the paper).
        mode: ``"tree"`` (one forward of B rows x k tokens with a tree mask) or ``"expand"``.

    Returns ``factory(model) -> VASStep``.
    """
    vms = _load_values(value_models, dtype)
    betas = _check_betas(betas, len(vms))
    if int(k) < 1:
        raise ValueError(f"k must be >= 1; got {k}")

    def factory(model) -> VASStep:
        dev = model_device(model)
        for i, vm in enumerate(vms):
            if model_device(vm) != dev:
                vms[i] = _to_device(vm, dev)
        return VASStep(model, vms, betas, k=k, mode=mode)

    return factory


def vas_blackbox_decoder(base_fn, value_models, betas=1.0, k: int = 20, *, vocab_size: int | None = None,
                         mode: str = "tree", dtype: str | None = None):
    """Factory for the ``hf`` engine running :class:`VASBlackBoxStep` (the engine's own model is
    ignored: ``pi_0`` is ``base_fn``). Returns ``factory(model) -> VASBlackBoxStep``."""
    vms = _load_values(value_models, dtype)
    betas = _check_betas(betas, len(vms))

    def factory(model=None) -> VASBlackBoxStep:
        return VASBlackBoxStep(base_fn, vms, betas, k=k, vocab_size=vocab_size, mode=mode)

    return factory
