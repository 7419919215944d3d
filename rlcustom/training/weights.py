"""Weight naming and payloads: trainable/merged/adapter state dicts under plain HF names, ZeRO-3 gathers.

Names callers see are those of a plain ``AutoModelForCausalLM`` state dict; for LoRA the
adapter uses ``get_peft_model_state_dict`` names and merged weights (W + scale * B A) the
base names. Under ZeRO-3 reading full parameters is a collective: call on every rank.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import torch

if TYPE_CHECKING:
    from rlcustom.training.engine import TrainingEngine

ADAPTER = "default"  # peft's adapter name
VALUE_HEAD = "v_head"  # a shared critic's head on the transformers model (rlcustom.models.value_head): not synced


def shape(t: torch.Tensor) -> tuple[int, ...]:
    """Full shape of a parameter, also when ZeRO-3 has partitioned it away."""
    ds = getattr(t, "ds_shape", None)
    return tuple(ds) if ds is not None else tuple(t.shape)


@contextmanager
def gathered(zero_stage: int, params: list, modifier_rank: int | None = None) -> Iterator[None]:
    """Full parameters inside the block under ZeRO-3 (a collective); with ``modifier_rank``
    that rank's in-place changes are re-partitioned on exit. A no-op under ZeRO 0-2."""
    if zero_stage == 3 and params:
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank):
            yield
    else:
        yield


def public_name(name: str, lora: bool) -> str:
    """Parameter name in the engine's module -> the name callers see."""
    return name.replace(f".{ADAPTER}.", ".") if lora else name  # get_peft_model_state_dict naming


def hf_model(te: "TrainingEngine", lora: bool) -> torch.nn.Module:
    """The transformers model (inside peft's wrappers for LoRA)."""
    m = te.module
    return m.base_model.model if lora else m


def _is_head(name: str) -> bool:
    return f"{VALUE_HEAD}." in name


def _lora_params(te: "TrainingEngine") -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in te.module.named_parameters() if ".lora_" in n]


def weight_entries(te: "TrainingEngine", lora: bool) -> list[tuple[str, str, torch.Tensor, Any]]:
    """(public name, state-dict key, tensor, lora layer or None) of the merged HF state dict."""
    model = hf_model(te, lora)
    sd = model.state_dict(keep_vars=True)
    layers = {}
    if lora:
        from peft.tuners.lora import LoraLayer

        layers = {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    entries = []
    for key, t in sd.items():
        if ".lora_" in key or key.startswith(VALUE_HEAD + "."):
            continue
        if ".base_layer." in key:
            mod, leaf = key.split(".base_layer.", 1)
            entries.append((f"{mod}.{leaf}", key, t, layers.get(mod) if leaf == "weight" else None))
        else:
            entries.append((key, key, t, None))
    return entries


def adapter_state(te: "TrainingEngine", *, cpu: bool = False) -> dict[str, torch.Tensor]:
    """The LoRA parameters under the engine module's own names (gathered, copied)."""
    params = _lora_params(te)
    with gathered(te.zero_stage, [p for _, p in params]):
        return {n: (p.detach().cpu().clone() if cpu else p.detach().clone()) for n, p in params}


def named_weights(te: "TrainingEngine", lora: bool, adapter_only: bool | None = None) -> list[tuple[str, torch.Tensor]]:
    """Weights under plain ``AutoModelForCausalLM`` state-dict names.

    ``adapter_only=None`` means "the adapter if this is a LoRA model". For LoRA,
    ``adapter_only=False`` gives merged weights under the base names; ``True`` the peft
    adapter state dict. Tensors stay on the engine's device; under ZeRO 0-2 unmerged ones
    are detached views of the live parameters (copy them before the next step if needed).
    """
    if adapter_only is None:
        adapter_only = lora
    if adapter_only:
        if not lora:
            raise ValueError("adapter_only=True needs a LoRA learner (model.lora is not set)")
        from peft import get_peft_model_state_dict

        return list(get_peft_model_state_dict(te.module, state_dict=adapter_state(te),
                                              adapter_name=ADAPTER).items())
    out = []
    for name, _key, t, layer in weight_entries(te, lora):
        if layer is not None:
            ps = [t, layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight]
            with gathered(te.zero_stage, ps), torch.no_grad():
                w = t.detach().clone()
                w += layer.get_delta_weight(ADAPTER).to(w.dtype)
            out.append((name, w))
        elif te.zero_stage == 3 and hasattr(t, "ds_id"):
            with gathered(te.zero_stage, [t]):
                out.append((name, t.detach().clone()))
        else:
            out.append((name, t.detach()))
    return out


def weight_meta(te: "TrainingEngine", lora: bool,
                adapter_only: bool | None = None) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype str) of :func:`named_weights`, without gathering (except the small adapter)."""
    if adapter_only is None:
        adapter_only = lora
    if adapter_only:
        if not lora:
            raise ValueError("adapter_only=True needs a LoRA learner (model.lora is not set)")
        from peft import get_peft_model_state_dict

        # names via peft on shape-only stand-ins (no ZeRO-3 gather)
        fake = {n: torch.empty(shape(p), dtype=p.dtype, device="meta") for n, p in _lora_params(te)}
        named = get_peft_model_state_dict(te.module, state_dict=fake, adapter_name=ADAPTER).items()
        return [(n, tuple(t.shape), str(t.dtype)) for n, t in named]
    return [(name, shape(t), str(t.dtype)) for name, _k, t, _l in weight_entries(te, lora)]


def trainable_state(te: "TrainingEngine", lora: bool) -> dict[str, torch.Tensor]:
    """What a checkpoint stores: the adapter (peft names) for LoRA, else every trainable tensor; a shared
    critic's ``v_head`` under its module names either way."""
    if lora:
        out = {n: t.detach().cpu().contiguous() for n, t in named_weights(te, lora, adapter_only=True)}
        for n, p in te.trainable:
            if _is_head(n):
                with gathered(te.zero_stage, [p]):
                    out[n] = p.detach().cpu().clone().contiguous()
        return out
    out = {}
    for n, p in te.trainable:
        with gathered(te.zero_stage, [p]):
            out[n] = p.detach().cpu().clone().contiguous()
    return out


def load_trainable_state(te: "TrainingEngine", lora: bool, sd: dict[str, torch.Tensor]) -> None:
    """Copy :func:`trainable_state` output back into the live parameters (rank 0's copy under ZeRO-3)."""
    if lora:
        from peft import set_peft_model_state_dict

        heads = {n: p for n, p in te.trainable if _is_head(n)}
        if set(heads) != {n for n in sd if _is_head(n)}:
            raise KeyError(f"checkpoint value head {sorted(n for n in sd if _is_head(n))} does not match the "
                           f"learner's {sorted(heads)} (algo.critic changed?)")
        for n, p in heads.items():
            with gathered(te.zero_stage, [p], modifier_rank=0), torch.no_grad():
                p.data.copy_(sd[n].to(p.device, p.dtype))
        sd = {n: t for n, t in sd.items() if not _is_head(n)}
        params = [p for _, p in _lora_params(te)]
        with gathered(te.zero_stage, params, modifier_rank=0), torch.no_grad():
            res = set_peft_model_state_dict(te.module, sd, adapter_name=ADAPTER)
        bad = [k for k in getattr(res, "unexpected_keys", []) if ".lora_" in k]
        if bad:
            raise KeyError(f"checkpoint adapter has unexpected keys: {bad[:3]}")
        return
    params = dict(te.trainable)
    missing = sorted(set(params) - set(sd))
    if missing:
        raise KeyError(f"checkpoint lacks {len(missing)} trainable tensors, e.g. {missing[:3]}")
    for n, p in params.items():
        with gathered(te.zero_stage, [p], modifier_rank=0), torch.no_grad():
            p.data.copy_(sd[n].to(p.device, p.dtype))
