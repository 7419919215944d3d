"""Shared machinery for decoders that need several models' next-token logits per step.

Two ways to get them, both with KV caches and correct positions for left-padded
prompts (position = number of real tokens before, as the ``hf`` engine's
``CausalLMStep`` does):

* :class:`PairedLoRAStep` -- ONE peft model with LoRA adapter(s). The batch is
  replicated (``(1 + K) * B`` rows for ``K`` adapters); the first ``B`` rows run
  the plain base model and each further block of ``B`` rows one adapter, all in
  one forward, so the shared base weights are read once per step (what
  Q-Adapter's and DeRa-with-a-LoRA decoding need: base and base+adapter logits
  together). The KV cache holds the ``(1 + K) * B`` rows.
* :class:`TwoModelStep` -- ``N`` separate models (e.g. a DeRa aligned model
  that is not a LoRA of the SFT model), each with its own KV cache, one
  forward each per step.

Both are "multi-steps": ``start(input_ids, attention_mask)`` and
``advance(tokens)`` return a *tuple* of ``[B, V]`` float32 logits (one per
model / per base-and-adapter) and ``reorder(rows)`` keeps the given rows.
:class:`CombinedStep` turns a multi-step plus a combining function into a
:class:`~rlcustom.engines.base.StepModel` (one ``[B, V]``) for the engine's
sampling loop; ``DeRaStep`` and ``QAdapterStep`` are such combinations.

How the mixed batch is done (verified with peft 0.21.2 / transformers 5.19):
peft's own mixed-adapter inference (``model(..., adapter_names=["__base__"] * B
+ ["default"] * B)``) works with ``past_key_values``: the per-row adapter
choice is re-applied at every forward by pre-forward hooks on the LoRA layers
and the KV cache just holds 2B rows, so at every step the base half equals the
plain base model (``with model.disable_adapter()``) and the adapted half the
adapter-enabled model, up to float32 rounding (batched vs. un-batched matmuls;
the same size as cached vs. un-cached decoding of one model; see
``tests/integration/test_decoders.py``). It costs, per forward and per LoRA
layer, a hook registration and removal, a Python scan of the ``adapter_names``
list, a gather and a scatter of the rows (``x[idx]``, ``result[idx] += ...``).
Because our blocks are contiguous, the default ``mode="slice"`` does the same
with basic slicing: for the duration of one forward each plain ``lora.Linear``
gets an instance-level ``forward`` that computes ``base_layer(x)`` for all rows
and adds ``scaling * lora_B(lora_A(x[k*B:(k+1)*B]))`` to the rows of block ``k``
only (views, no copies, no LoRA work on the base rows, functional calls). On
SmolLM2-135M with r=8 LoRA on q,k,v,o (CPU, 1 thread) it decodes ~15% faster
than ``mode="peft"`` at batch 1 and ~8% at batch 4. ``mode="auto"`` uses the
slice path when every LoRA layer is a plain ``lora.Linear`` with ``nn.Linear``
A/B (no DoRA or other variants, no embedding/conv LoRA, no accelerate hook
already replacing ``forward``) and peft's ``adapter_names`` path otherwise;
``mode="peft"`` forces peft's. Merged adapters are refused (their delta would
leak into the base rows). Do not run either inside ``disable_adapter()``: the
peft path then returns base logits for every row (the slice path ignores the flag).
The patching is per call and not thread-safe (neither are peft's hooks): don't
decode with one model from two threads at once.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from rlcustom.models.lora import lora_layers

__all__ = ["PairedLoRAStep", "TwoModelStep", "CombinedStep", "positions_from_mask"]


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids for left-padded rows: real token ``j`` of a row gets position ``j``."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@contextlib.contextmanager
def _eval_mode(model) -> Iterator[None]:
    """Decoding is inference: no dropout. A no-op (no module walk) when already in eval mode."""
    if not model.training:
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _reorder_cache(cache, idx: torch.Tensor):
    if hasattr(cache, "reorder_cache"):
        cache.reorder_cache(idx)
        return cache
    # legacy tuple-of-tuples cache
    return tuple(tuple(t.index_select(0, idx.to(t.device)) for t in layer) for layer in cache)


class _CachedLM:
    """One causal LM with a KV cache; ``start``/``advance`` return float32 logits ``[rows, V]``."""

    def __init__(self, model) -> None:
        self.model = model
        self.cache = None

    def _device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except StopIteration:  # pragma: no cover - a model without parameters
            return torch.device("cpu")

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **fw) -> torch.Tensor:
        dev = self._device()
        input_ids, attention_mask = input_ids.to(dev), attention_mask.to(dev)
        pos = positions_from_mask(attention_mask)
        self.attn = attention_mask
        with _eval_mode(self.model):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos,
                             use_cache=True, logits_to_keep=1, **fw)
        self.cache, self.pos = out.past_key_values, pos[:, -1:]
        return out.logits[:, -1].float()

    def advance(self, tokens: torch.Tensor, **fw) -> torch.Tensor:
        if self.cache is None:
            raise RuntimeError("advance() called before start()")
        tokens = tokens.to(self.attn.device)
        self.attn = torch.cat([self.attn, self.attn.new_ones((self.attn.shape[0], 1))], dim=1)
        self.pos = self.pos + 1
        with _eval_mode(self.model):
            out = self.model(input_ids=tokens.reshape(-1, 1), attention_mask=self.attn, position_ids=self.pos,
                             past_key_values=self.cache, use_cache=True, **fw)
        self.cache = out.past_key_values
        return out.logits[:, -1].float()

    def reorder(self, rows: torch.Tensor) -> None:
        if self.cache is None:
            raise RuntimeError("reorder() called before start()")
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.attn.device)
        self.cache = _reorder_cache(self.cache, idx)
        self.attn = self.attn.index_select(0, idx)
        self.pos = self.pos.index_select(0, idx)


def _check_vocab(logits: Sequence[torch.Tensor], what: str) -> None:
    V = logits[0].shape[-1]
    for i, h in enumerate(logits[1:], 1):
        if h.shape[-1] != V:
            raise ValueError(f"{what}: model 0 has {V} logits per token but model {i} has {h.shape[-1]}; "
                             "the models must share one tokenizer/vocabulary")


class TwoModelStep:
    """``N`` (two or more) separate causal LMs decoded in lock-step, each with its own KV cache.

    ``start``/``advance`` return a tuple of ``N`` float32 logits ``[B, V]`` in
    the order of ``models``. All models must share the tokenizer (same ``V``);
    every model sees the same tokens and positions. Each model runs on its own
    device (inputs are moved there) and the logits come back on model 0's device.
    """

    def __init__(self, models: Sequence) -> None:
        models = list(models)
        if len(models) < 1:
            raise ValueError("TwoModelStep needs at least one model")
        self.models = models
        self._lms = [_CachedLM(m) for m in models]

    @property
    def num_outputs(self) -> int:
        return len(self._lms)

    @torch.inference_mode()
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = [lm.start(input_ids, attention_mask) for lm in self._lms]
        _check_vocab(outs, "TwoModelStep")
        dev = outs[0].device
        return tuple(o.to(dev) for o in outs)

    @torch.inference_mode()
    def advance(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = [lm.advance(tokens) for lm in self._lms]
        dev = outs[0].device
        return tuple(o.to(dev) for o in outs)

    def reorder(self, rows: torch.Tensor) -> None:
        for lm in self._lms:
            lm.reorder(rows)


def _lora_adapter_names(layers) -> set[str]:
    names: set[str] = set()
    for m in layers:
        names |= set(m.lora_A.keys()) | set(m.lora_embedding_A.keys())
    return names


def _sliced_lora_forward(layer, plan: Sequence[tuple[str, slice]], x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """``lora.Linear.forward`` for a batch made of contiguous blocks: base for all rows,
    then each adapter's delta added to its own block of rows only (dim 0 is the batch)."""
    result = layer.base_layer(x, *args, **kwargs)
    for name, rows in plan:
        if name not in layer.lora_A:
            continue
        lora_A, lora_B = layer.lora_A[name], layer.lora_B[name]
        xs = x[rows]
        if xs.dtype != lora_A.weight.dtype:
            xs = xs.to(lora_A.weight.dtype)
        if layer.training:  # never while decoding (eval mode is forced), kept for exactness
            xs = layer.lora_dropout[name](xs)
        # functional calls instead of module calls: ~10 us less per LoRA layer and step
        xa = F.linear(xs, lora_A.weight, lora_A.bias)
        out = result[rows]
        if lora_B.bias is None and xa.dtype == out.dtype and out.is_contiguous() and xa.is_contiguous():
            # out += scaling * xa @ B^T in one BLAS call, no temporary (one op less per LoRA layer and step)
            out.view(-1, out.shape[-1]).addmm_(xa.view(-1, xa.shape[-1]), lora_B.weight.t(),
                                              alpha=layer.scaling[name])
        else:
            out.add_(F.linear(xa, lora_B.weight, lora_B.bias).to(result.dtype), alpha=layer.scaling[name])
    return result


class PairedLoRAStep:
    """Base and LoRA-adapted logits of ONE peft model from one batched forward per step.

    Args:
        model: a peft model (``get_peft_model`` / ``PeftModel.from_pretrained``) with
            unmerged LoRA adapter(s).
        adapters: which adapters to run besides the base; default: the model's
            active adapter. With ``K`` adapters the forward has ``(1 + K) * B`` rows.
        mode: ``"auto"`` (default), ``"slice"`` or ``"peft"``; see the module docstring.

    ``start``/``advance`` return ``(base_logits, adapted_logits_1, ..., adapted_logits_K)``,
    each float32 ``[B, V]``. The model is put in eval mode for each forward (and back).
    """

    def __init__(self, model, adapters: str | Sequence[str] | None = None, *, mode: str = "auto") -> None:
        layers = lora_layers(model)
        if not layers:
            raise ValueError("PairedLoRAStep needs a peft model with LoRA layers "
                             "(wrap it with peft.get_peft_model or PeftModel.from_pretrained)")
        available = _lora_adapter_names(layers)
        if adapters is None:
            active = getattr(model, "active_adapters", None) or getattr(model, "active_adapter", None)
            if isinstance(active, str):
                active = [active]
            active = [a for a in (active or []) if a in available]
            if len(active) != 1:
                raise ValueError(f"PairedLoRAStep: pass adapters=... (active adapters {active}, "
                                 f"available {sorted(available)})")
            adapters = active
        elif isinstance(adapters, str):
            adapters = [adapters]
        adapters = list(adapters)
        if not adapters:
            raise ValueError("PairedLoRAStep needs at least one adapter")
        missing = [a for a in adapters if a not in available]
        if missing or "__base__" in adapters:
            raise ValueError(f"unknown adapter(s) {missing or ['__base__']}; available: {sorted(available)}")
        merged = sorted({a for m in layers for a in getattr(m, "merged_adapters", [])})
        if merged:
            raise ValueError(f"PairedLoRAStep: adapter(s) {merged} are merged into the base weights, so the base "
                             "rows would not be the base model; unmerge them first (model.unmerge_adapter())")
        if mode not in ("auto", "slice", "peft"):
            raise ValueError(f"mode must be 'auto', 'slice' or 'peft'; got {mode!r}")
        sliceable = self._sliceable(layers, adapters)
        if mode == "slice" and not sliceable:
            raise ValueError("mode='slice' supports only plain lora.Linear layers without variants (e.g. DoRA) "
                             "or replaced forwards; use mode='peft'")
        self.mode = "slice" if (mode == "slice" or (mode == "auto" and sliceable)) else "peft"
        self.model, self.adapters, self._layers = model, adapters, layers
        self._lm = _CachedLM(model)
        self.B: int | None = None
        self._patch_B: int | None = None
        self._patches: list = []

    @staticmethod
    def _sliceable(layers, adapters) -> bool:
        from peft.tuners.lora import Linear as LoraLinear

        for m in layers:
            if type(m) is not LoraLinear or "forward" in m.__dict__:
                return False
            if any(a in getattr(m, "lora_variant", {}) for a in adapters):
                return False
            if any(a in m.lora_embedding_A for a in adapters):
                return False
            for a in adapters:
                if a in m.lora_A and not (type(m.lora_A[a]) is torch.nn.Linear
                                          and type(m.lora_B[a]) is torch.nn.Linear):
                    return False
        return True

    @property
    def num_outputs(self) -> int:
        return 1 + len(self.adapters)

    @contextlib.contextmanager
    def _sliced(self) -> Iterator[None]:
        B = self.B
        assert B is not None
        if self._patch_B != B:  # the forwards depend on B only; build them once per batch size
            plan = [(a, slice((k + 1) * B, (k + 2) * B)) for k, a in enumerate(self.adapters)]
            self._patches = [functools.partial(_sliced_lora_forward, m, plan) for m in self._layers]
            self._patch_B = B
        patched = []
        try:
            for m, fn in zip(self._layers, self._patches):
                m.__dict__["forward"] = fn  # instance attribute shadows the class's forward for this call
                patched.append(m)
            yield
        finally:
            for m in patched:
                m.__dict__.pop("forward", None)

    def _forward_ctx(self):
        if self.mode == "slice":
            return self._sliced(), {}
        names = ["__base__"] * self.B + [a for a in self.adapters for _ in range(self.B)]  # type: ignore[operator]
        return contextlib.nullcontext(), {"adapter_names": names}

    def _split(self, logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(logits.split(self.B, dim=0))  # type: ignore[arg-type]

    @torch.inference_mode()
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.B = int(input_ids.shape[0])
        reps = self.num_outputs
        ctx, fw = self._forward_ctx()
        with ctx:
            logits = self._lm.start(input_ids.repeat(reps, 1), attention_mask.repeat(reps, 1), **fw)
        return self._split(logits)

    @torch.inference_mode()
    def advance(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.B is None:
            raise RuntimeError("advance() called before start()")
        ctx, fw = self._forward_ctx()
        with ctx:
            logits = self._lm.advance(tokens.reshape(-1).repeat(self.num_outputs), **fw)
        return self._split(logits)

    def reorder(self, rows: torch.Tensor) -> None:
        if self.B is None:
            raise RuntimeError("reorder() called before start()")
        rows = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
        idx = torch.cat([rows + k * self.B for k in range(self.num_outputs)])
        self._lm.reorder(idx)
        self.B = int(rows.numel())


class CombinedStep:
    """A :class:`~rlcustom.engines.base.StepModel` from a multi-step and ``combine(logits_tuple) -> [B, V]``."""

    def __init__(self, inner, combine: Callable[[tuple[torch.Tensor, ...]], torch.Tensor]) -> None:
        self.inner, self.combine = inner, combine
        self.last: tuple[torch.Tensor, ...] | None = None  # the parts of the last step, for inspection

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.last = self.inner.start(input_ids, attention_mask)
        return self.combine(self.last)

    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        self.last = self.inner.advance(tokens)
        return self.combine(self.last)

    def reorder(self, rows: torch.Tensor) -> None:
        self.inner.reorder(rows)
