"""The data stage of an RL run: which prompts each step gets, and where a resumed run continues.

A :class:`PromptSampler` owns the prompt set (tokenised once, before any actor starts, so a bad
file costs one line), its seeded order, and its position in an endless walk over that order::

    sampler = PromptSampler.from_config(cfg)     # loads tokenizer + prompts now
    ids = sampler.take(8)                        # the next 8 prompts (token ids); position += 8
    state = sampler.state_dict()                 # {"position": ...}: saved with every checkpoint

The order is ``random.Random(seed).shuffle(range(len(prompts)))`` and prompt ``j`` of the walk is
``order[j % len(order)]``, so the stream is a pure function of (seed, position): restoring the
position restores exactly the prompts an uninterrupted run would have drawn.
"""
from __future__ import annotations

from rlcustom.data.fields import PromptBatch

import random
from typing import Any


class PromptSampler:
    def __init__(self, prompt_set: Any, seed: int, tokenizer: Any = None) -> None:
        self.prompts = prompt_set  # a rlcustom.data.prompting.PromptSet
        self.tokenizer = tokenizer
        self.order = list(range(len(prompt_set.ids)))
        random.Random(seed).shuffle(self.order)
        self.position = 0

    @classmethod
    def from_config(cls, cfg: Any) -> "PromptSampler":
        """Tokenizer of ``cfg.model.path`` and the prompt set of ``cfg.data`` (chat template, truncation)."""
        from rlcustom.data.prompting import build_prompts
        from rlcustom.models.loading import load_tokenizer

        tok = load_tokenizer(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
        return cls(build_prompts(cfg.data, tok), cfg.seed, tok)

    def __len__(self) -> int:
        return len(self.order)

    def take_indices(self, n: int) -> list[int]:
        """Indices (into the prompt set) of the next ``n`` prompts; advances the position."""
        out = [self.order[(self.position + j) % len(self.order)] for j in range(n)]
        self.position += n
        return out

    def take(self, n: int) -> PromptBatch:
        """Token ids of the next ``n`` prompts with their records' fields (``answer``, ...); advances the position."""
        rows = self.take_indices(n)
        fields = getattr(self.prompts, "fields", None)
        return PromptBatch([self.prompts.ids[i] for i in rows], [fields[i] for i in rows] if fields else None)

    def skip(self, n: int) -> None:
        """Advance without drawing (a step that used no prompts but keeps the stream aligned to steps)."""
        self.position += n

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])
