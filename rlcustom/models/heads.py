"""Scalar heads on a language-model backbone: per-token values and sequence rewards.

* :class:`ValueModel` -- backbone + ``nn.Linear(hidden, 1)`` read at *every*
  position: ``values[b, j]`` is the value of the state made of the tokens
  ``0..j`` (the critic of PPO, the value estimator of VAS).
* :class:`RewardModel` -- the same, read at the last non-pad token only:
  one scalar per sequence, the Bradley-Terry reward model
  (``p(y+ > y-) = sigma(r(x, y+) - r(x, y-))``).

The backbone is the transformers *base model* of a causal LM (``model.base_model``,
what ``AutoModel`` builds: embeddings + decoder layers + final norm, no LM head),
so any architecture transformers loads works. ``num_layers`` keeps only the first
N decoder layers, for a smaller critic initialised from the policy.

On disk (``save``/``load``)::

    DIR/head_config.json      {"kind": "value"|"reward", "hidden_size", "num_layers", "dtype", ...}
    DIR/head.safetensors      head.weight [1, H], head.bias [1] (float32)
    DIR/backbone/             a transformers base-model directory (config.json + safetensors)
    DIR/tokenizer*            when a tokenizer was given to save()

There is deliberately no ``DIR/config.json``, so such a directory is never
mistaken for (and silently half-loaded as) a causal LM.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from rlcustom.errors import ModelLoadError
from rlcustom.models.forward import position_ids as _position_ids
from rlcustom.models.loading import DTYPES
from rlcustom.models.packing import is_packed, packed_response_values

__all__ = ["ScalarHeadModel", "ValueModel", "RewardModel", "response_values", "last_token_index", "default_device",
           "micro_batches", "trim_batch", "truncate_layers"]

HEAD_CONFIG = "head_config.json"
HEAD_WEIGHTS = "head.safetensors"
BACKBONE_DIR = "backbone"
FORMAT_VERSION = 1


def _decoder_layers(backbone: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(owner, attribute, ModuleList) of the decoder blocks of a transformers base model."""
    owners = [backbone] + [getattr(backbone, a) for a in ("decoder", "language_model", "text_model", "transformer")
                           if isinstance(getattr(backbone, a, None), nn.Module)]
    for owner in owners:
        for attr in ("layers", "h", "blocks", "block", "layer"):
            mods = getattr(owner, attr, None)
            if isinstance(mods, nn.ModuleList) and len(mods) > 0:
                return owner, attr, mods
    raise ModelLoadError(f"{type(backbone).__name__}: cannot find its decoder layers to truncate")


def truncate_layers(backbone: nn.Module, num_layers: int) -> nn.Module:
    """Keep the first ``num_layers`` decoder layers of ``backbone`` (in place) and fix its config."""
    owner, attr, mods = _decoder_layers(backbone)
    if not 1 <= num_layers <= len(mods):
        raise ValueError(f"num_layers must be in [1, {len(mods)}] for this model, got {num_layers}")
    setattr(owner, attr, nn.ModuleList(list(mods)[:num_layers]))
    cfg = backbone.config
    cfg.num_hidden_layers = num_layers
    for key in ("layer_types", "layers_block_type"):
        val = getattr(cfg, key, None)
        if isinstance(val, (list, tuple)) and len(val) > num_layers:
            setattr(cfg, key, list(val)[:num_layers])
    return backbone


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else the first visible GPU (inside Ray: the one given to the actor), else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B] column of the last attended token of each row (works for left, right and mixed padding; 0 if none)."""
    L = attention_mask.shape[-1]
    cols = torch.arange(L, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(attention_mask.bool(), cols, torch.zeros_like(cols)).max(-1).values


class ScalarHeadModel(nn.Module):
    """Backbone + ``nn.Linear(hidden, 1)`` head; the head is float32 whatever the backbone's dtype."""

    kind = "scalar"
    #: head weight init: a standard deviation (0: zeros) or "inv_sqrt_hidden" (1/sqrt(H+1))
    default_init_std: float | str = 0.0

    def __init__(self, backbone: nn.Module, *, init_std: float | str | None = None, tokenizer=None) -> None:
        super().__init__()
        self.backbone = backbone
        hidden = int(backbone.config.hidden_size)
        self.head = nn.Linear(hidden, 1, dtype=torch.float32)
        std = self.default_init_std if init_std is None else init_std
        if std == "inv_sqrt_hidden":
            std = 1.0 / math.sqrt(hidden + 1)
        if isinstance(std, str) or not (std >= 0 and math.isfinite(std)):
            raise ValueError(f"init_std must be a number >= 0 or 'inv_sqrt_hidden', got {std!r}")
        with torch.no_grad():
            if std > 0:
                self.head.weight.normal_(0.0, std)
            else:
                self.head.weight.zero_()
            self.head.bias.zero_()
        self.tokenizer = tokenizer  # optional; saved with the model when present

    @property
    def config(self):
        return self.backbone.config

    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return len(_decoder_layers(self.backbone)[2])

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    # -- construction ----------------------------------------------------------
    @classmethod
    def from_backbone_of(cls, causal_lm: nn.Module, *, num_layers: int | None = None,
                         init_std: float | str | None = None, tokenizer=None):
        """Wrap the base model of an already-loaded causal LM (shares its weights: deep-copy first if needed)."""
        backbone = getattr(causal_lm, "base_model", None)
        if backbone is None or backbone is causal_lm:
            getter = getattr(causal_lm, "get_decoder", None)
            backbone = getter() if getter else None
        if backbone is None or not hasattr(backbone, "config"):
            raise ModelLoadError(f"{type(causal_lm).__name__}: cannot find its base model (backbone)")
        if num_layers is not None:
            truncate_layers(backbone, int(num_layers))
        return cls(backbone, init_std=init_std, tokenizer=tokenizer)

    @classmethod
    def from_pretrained(cls, name: str | Path, dtype: str = "float32", num_layers: int | None = None, *,
                        trust_remote_code: bool = False, init_std: float | str | None = None,
                        with_tokenizer: bool = False):
        """A fresh head over the backbone of the causal LM ``name`` (alias, directory or cached hub id).

        A directory written by :meth:`save` is loaded with :meth:`load` instead.
        """
        p = Path(str(name)).expanduser()
        if (p / HEAD_CONFIG).is_file():
            return cls.load(p, dtype=dtype, trust_remote_code=trust_remote_code)
        from rlcustom.models.loading import load_causal_lm, load_tokenizer

        lm = load_causal_lm(name, dtype=dtype, trust_remote_code=trust_remote_code)
        tok = load_tokenizer(name, trust_remote_code=trust_remote_code) if with_tokenizer else None
        model = cls.from_backbone_of(lm, num_layers=num_layers, init_std=init_std, tokenizer=tok)
        del lm  # drops the LM head
        return model.eval()

    def save(self, path: str | Path, tokenizer=None) -> Path:
        """Write the model (see the module docstring for the layout); returns ``path``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(path / BACKBONE_DIR, safe_serialization=True)
        save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.head.state_dict().items()},
                  str(path / HEAD_WEIGHTS))
        dtype = next(k for k, v in DTYPES.items() if v == self.dtype) if self.dtype in DTYPES.values() else "float32"
        meta = {"kind": self.kind, "format_version": FORMAT_VERSION, "hidden_size": self.hidden_size,
                "num_layers": self.num_layers, "dtype": dtype,
                "backbone_class": type(self.backbone).__name__}
        (path / HEAD_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
        tok = tokenizer if tokenizer is not None else self.tokenizer
        if tok is not None:
            tok.save_pretrained(path)
        return path

    @classmethod
    def load(cls, path: str | Path, *, dtype: str | None = None, trust_remote_code: bool = False):
        """Read a directory written by :meth:`save` (``dtype`` None: the dtype it was saved in)."""
        from safetensors.torch import load_file
        from transformers import AutoModel

        path = Path(path).expanduser()
        cfg_file = path / HEAD_CONFIG
        if not cfg_file.is_file():
            raise ModelLoadError(f"{path}: not a {cls.kind} model directory (no {HEAD_CONFIG})")
        try:
            meta = json.loads(cfg_file.read_text())
        except ValueError as e:
            raise ModelLoadError(f"{cfg_file}: not valid JSON: {e}") from None
        if meta.get("kind") != cls.kind:
            raise ModelLoadError(f"{path}: holds a {meta.get('kind')!r} model, not a {cls.kind!r} model")
        dtype = dtype or meta.get("dtype", "float32")
        if dtype not in DTYPES:
            raise ModelLoadError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        try:
            backbone = AutoModel.from_pretrained(path / BACKBONE_DIR, dtype=DTYPES[dtype],
                                                 trust_remote_code=trust_remote_code, use_safetensors=True)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{path / BACKBONE_DIR}: cannot load backbone: {str(e).splitlines()[0]}") from None
        tok = None
        if any(path.glob("tokenizer*")):
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
        model = cls(backbone, init_std=0.0, tokenizer=tok)
        head = load_file(str(path / HEAD_WEIGHTS))
        model.head.load_state_dict({k: v.float() for k, v in head.items()})
        return model.eval()

    # -- forward ---------------------------------------------------------------
    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      position_ids: torch.Tensor | None = None, past_key_values=None, use_cache: bool = False):
        """(last hidden states [B, L, H], cache or None).

        ``position_ids`` default to ``cumsum(attention_mask) - 1`` (so left padding is
        harmless); with a cache, ``attention_mask`` covers past + new tokens (the
        transformers convention) and the positions of the last L columns are used.
        """
        if position_ids is None and attention_mask is not None:
            position_ids = _position_ids(attention_mask)[:, -input_ids.shape[1]:]
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            past_key_values=past_key_values, use_cache=use_cache)
        return out.last_hidden_state, (out.past_key_values if use_cache else None)

    def token_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Head applied per position: [B, L, H] -> [B, L] (float32)."""
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)


class ValueModel(ScalarHeadModel):
    """Per-token values ``[B, L]``: ``values[:, j]`` is V of the prefix ``tokens[:j+1]``.

    The head starts at zero (weights and bias), so a fresh value model predicts 0
    everywhere: VAS guided decoding then equals the base policy, and PPO starts
    with ``A = returns``. Pass ``init_std > 0`` for a small random head instead.
    """

    kind = "value"
    default_init_std = 0.0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values=None, use_cache: bool = False):
        """``values`` [B, L] (float32), or ``(values, cache)`` when ``use_cache``."""
        hidden, cache = self.hidden_states(input_ids, attention_mask, position_ids, past_key_values, use_cache)
        values = self.token_scores(hidden)
        return (values, cache) if use_cache else values


class RewardModel(ScalarHeadModel):
    """Sequence reward ``[B]``: the head read at the last non-pad token (Bradley-Terry reward model).

    The head starts as ``N(0, 1/(H+1))`` (as TRL's reward models), so rewards of an
    untrained model differ per sequence from the start.
    """

    kind = "reward"
    default_init_std = "inv_sqrt_hidden"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """[B] rewards (float32), read at the last column with ``attention_mask == 1`` (the last column if no mask)."""
        hidden, _ = self.hidden_states(input_ids, attention_mask, position_ids)
        B, L = input_ids.shape
        if attention_mask is None:
            idx = torch.full((B,), L - 1, dtype=torch.long, device=input_ids.device)
        else:
            idx = last_token_index(attention_mask)
        last = hidden[torch.arange(B, device=hidden.device), idx]
        return self.token_scores(last)

    @torch.no_grad()
    def score_texts(self, prompts: Sequence[str], completions: Sequence[str] | None = None, tokenizer=None, *,
                    batch_size: int = 16, max_length: int | None = None, append_eos: bool = True) -> list[float]:
        """Rewards of ``prompt + completion`` texts (completions None: score the prompts as whole texts).

        Prompt and completion are tokenized separately without added special tokens
        and concatenated (as engines do: prompt ids + generated ids). ``append_eos``: a
        completion is a finished reply and ends with EOS, as the reward trainer's rows and
        finished rollouts do; the reward is read at that token, so leaving it out scores a
        different position than the one trained. ``max_length`` keeps the *last* tokens.
        """
        tok = tokenizer if tokenizer is not None else self.tokenizer
        if tok is None:
            raise ValueError("score_texts needs a tokenizer (pass one, or save the model with its tokenizer)")
        if completions is not None and len(completions) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts and {len(completions)} completions")
        rows = []
        for i, p in enumerate(prompts):
            ids = tok(p, add_special_tokens=False)["input_ids"]
            if completions is not None:
                ids = ids + tok(completions[i], add_special_tokens=False)["input_ids"]
                if append_eos and tok.eos_token_id is not None:
                    ids = ids + [tok.eos_token_id]
            if max_length:
                ids = ids[-max_length:]
            rows.append(ids or [tok.eos_token_id])
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        out: list[float] = []
        self.eval()
        for s in range(0, len(rows), batch_size):
            chunk = rows[s : s + batch_size]
            L = max(len(r) for r in chunk)
            ids = torch.full((len(chunk), L), pad, dtype=torch.long)
            attn = torch.zeros((len(chunk), L), dtype=torch.long)
            for j, r in enumerate(chunk):
                ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
                attn[j, : len(r)] = 1
            out += self(ids.to(self.device), attn.to(self.device)).float().cpu().tolist()
        return out


# --------------------------------------------------------------------------- batches


def response_values(model: ValueModel, batch: dict) -> torch.Tensor:
    """Values [B, T] of the states *before* each response token (0 on padding).

    ``batch`` follows :meth:`Rollouts.padded`: response token ``t`` sits at column
    ``P + t``. ``out[:, t] = V(x, y_<t)`` is the value head read at column
    ``P - 1 + t`` (the last token of that state), i.e. at columns ``P-1 .. P+T-2``,
    the same columns whose logits predict ``y_t``. So ``out[:, 0]`` is the value of
    the prompt alone, and the value after the last token (the terminal state) is
    not returned (it is 0 for an episode that ends there).
    """
    P = int(batch["prompt_len"])
    T = batch["response_mask"].shape[1]
    if P < 1:
        raise ValueError("response_values needs prompt_len >= 1 (the state before the first token)")
    if is_packed(batch):
        return packed_response_values(model, batch) * batch["response_mask"]
    values = model(batch["input_ids"], batch["attention_mask"])
    return values[:, P - 1 : P - 1 + T] * batch["response_mask"].to(values.dtype)


def micro_batches(batch: dict, size: int) -> Iterator[tuple[slice, dict]]:
    """(row slice, sub-batch) pairs of at most ``size`` rows; tensors with the batch dimension are sliced."""
    B = batch["input_ids"].shape[0]
    for s in range(0, B, max(1, int(size))):
        rows = slice(s, min(B, s + size))
        yield rows, {k: (v[rows] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == B else v)
                     for k, v in batch.items()}


def trim_batch(batch: dict) -> tuple[dict, int]:
    """Drop columns that are padding in every row: leading (prompt left padding) and trailing
    (response right padding). Returns ``(trimmed batch, T_kept)``; per-token outputs of the
    trimmed batch fill columns ``[:T_kept]`` of the original ``[B, T]`` (the rest is padding).
    Causal attention makes the result identical to the untrimmed forward.
    """
    P = int(batch["prompt_len"])
    attn = batch["attention_mask"]
    rmask = batch["response_mask"]
    T = rmask.shape[1]
    prompt_cols = attn[:, :P].bool().any(0)
    lead = int(prompt_cols.float().argmax()) if bool(prompt_cols.any()) else P
    lead = min(lead, P - 1) if P >= 1 else 0  # keep column P-1 (it predicts the first response token)
    resp_cols = rmask.bool().any(0)
    t_keep = int(torch.nonzero(resp_cols).max()) + 1 if bool(resp_cols.any()) else 0
    t_keep = max(t_keep, 1) if T > 0 else 0
    if lead == 0 and t_keep == T:
        return batch, T
    out = {}
    for k, v in batch.items():
        if k in ("input_ids", "attention_mask") or (isinstance(v, torch.Tensor) and v.dim() == 2
                                                    and v.shape[1] == P + T and k not in ("response_mask",)):
            out[k] = v[:, lead : P + t_keep]
        elif isinstance(v, torch.Tensor) and v.dim() >= 2 and v.shape[1] == T:
            out[k] = v[:, :t_keep]
        else:
            out[k] = v
    out["prompt_len"] = P - lead
    return out, t_keep
