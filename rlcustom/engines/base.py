"""The one generation interface: ``engine.generate(prompts, params) -> Rollouts``.

Back-ends (``hf``, ``vllm``) differ in speed and features, never in what they
return. Decoders that combine several models per step (DeRa, VAS, Q-Adapter)
implement :class:`StepModel` and run on the ``hf`` engine's sampling loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Protocol, Sequence, runtime_checkable

import torch


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings shared by every engine.

    ``temperature == 0`` means greedy. ``top_k == 0`` and ``top_p == 1`` disable
    those filters. ``n`` samples are drawn per prompt. ``seed`` makes a call
    reproducible on the same engine.
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    seed: int | None = None
    stop_on_eos: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def with_(self, **kw) -> "SamplingParams":
        return replace(self, **kw)


@dataclass
class Rollouts:
    """Ragged per-sample results, cheap to ship between actors.

    ``logprobs[i][t]`` is log pi(response_ids[i][t] | prefix) under the model's
    *raw* distribution (temperature 1, no top-k/top-p), i.e. what a learner
    recomputes with a forward pass; this is what PPO ratios and KL need.
    ``prompt_index[i]`` says which input prompt sample ``i`` answers (``n``
    samples per prompt are consecutive).

    Multi-turn episodes (:mod:`rlcustom.engines.multiturn`) interleave sampled tokens with environment
    observation tokens in ``response_ids``: ``loss_mask[i][t]`` is 1 on a sampled token and 0 on an
    observation token (empty: every token was sampled), and ``episodes[i]`` holds the episode's
    record (turn rewards, return, turns, counters, how it ended).
    """

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    logprobs: list[list[float]]
    finish_reasons: list[str]  # "stop" (EOS) or "length"
    prompt_index: list[int]
    texts: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)  # the prompt text per sample, when given as text
    fields: list[dict] = field(default_factory=list)  # per sample: its prompt record's other columns (answer, ...)
    loss_mask: list[list[int]] = field(default_factory=list)  # per token: 1 sampled, 0 observation (empty: all 1)
    episodes: list[dict] = field(default_factory=list)  # per sample: its episode record (multi-turn rollouts)

    def __len__(self) -> int:
        return len(self.response_ids)

    def padded(self, pad_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Tensors for a learner: prompts left-padded, responses right-padded.

        Returns ``input_ids`` [B, P+T], ``attention_mask`` [B, P+T],
        ``response_mask`` [B, T], ``logprobs`` [B, T] and ``prompt_len`` P,
        so that response token ``t`` sits at column ``P + t``. ``response_mask`` is
        ``loss_mask`` where one is given (observation tokens are attended to, not trained on).
        """
        B = len(self)
        P = max((len(p) for p in self.prompt_ids), default=0)
        T = max((len(r) for r in self.response_ids), default=0)
        ids = torch.full((B, P + T), pad_id, dtype=torch.long)
        attn = torch.zeros((B, P + T), dtype=torch.long)
        rmask = torch.zeros((B, T), dtype=torch.float32)
        lps = torch.zeros((B, T), dtype=torch.float32)
        for i, (p, r, lp) in enumerate(zip(self.prompt_ids, self.response_ids, self.logprobs)):
            ids[i, P - len(p) : P] = torch.tensor(p, dtype=torch.long)
            attn[i, P - len(p) : P] = 1
            if r:
                ids[i, P : P + len(r)] = torch.tensor(r, dtype=torch.long)
                attn[i, P : P + len(r)] = 1
                rmask[i, : len(r)] = torch.tensor(self.loss_mask[i], dtype=torch.float32) if self.loss_mask else 1
                lps[i, : len(lp)] = torch.tensor(lp, dtype=torch.float32)
        out = {"input_ids": ids, "attention_mask": attn, "response_mask": rmask, "logprobs": lps}
        out = {k: v.to(device) for k, v in out.items()}
        out["prompt_len"] = P  # type: ignore[assignment]
        return out

    def response_lengths(self) -> list[int]:
        return [len(r) for r in self.response_ids]

    def select(self, idx: Sequence[int]) -> "Rollouts":
        pick = lambda xs: [xs[i] for i in idx] if xs else []  # noqa: E731
        return Rollouts(pick(self.prompt_ids), pick(self.response_ids), pick(self.logprobs),
                        pick(self.finish_reasons), pick(self.prompt_index), pick(self.texts), pick(self.prompts),
                        pick(self.fields), pick(self.loss_mask), pick(self.episodes))

    @staticmethod
    def concat(parts: Sequence["Rollouts"]) -> "Rollouts":
        out = Rollouts([], [], [], [], [], [], [], [])
        offset = 0
        if any(p.loss_mask for p in parts):  # a part without a mask trained on every token
            out.loss_mask = [m for p in parts for m in (p.loss_mask or [[1] * len(r) for r in p.response_ids])]
        if any(p.episodes for p in parts):
            out.episodes = [e for p in parts for e in (p.episodes or [{} for _ in p.response_ids])]
        for p in parts:
            out.prompt_ids += p.prompt_ids
            out.response_ids += p.response_ids
            out.logprobs += p.logprobs
            out.finish_reasons += p.finish_reasons
            out.prompt_index += [i + offset for i in p.prompt_index]
            out.texts += p.texts
            out.prompts += p.prompts
            out.fields += p.fields
            offset = max(out.prompt_index, default=-1) + 1
        return out


@runtime_checkable
class StepModel(Protocol):
    """What the ``hf`` sampling loop drives: one or several models with KV caches.

    ``start`` takes the left-padded prompt batch and returns next-token logits
    [B, V]; ``advance`` appends one token per row and returns the next logits.
    A plain causal LM is one implementation; DeRa/VAS/Q-Adapter wrap several.
    ``reorder`` keeps only the given rows (finished rows are dropped early).
    """

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...

    def advance(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def reorder(self, rows: torch.Tensor) -> None: ...
