"""A model's "original task": its greedy answers to neutral prompts (Q-Adapter's forgetting measure and the
Replay baseline's replay data), generated once with the ``hf`` engine and cached as JSONL."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from rlcustom.fsutil import atomic_write_text

# General-purpose instructions unrelated to any preference dataset: pi_1's answers to them
# stand for its "original task" (what customisation should not forget).
NEUTRAL_PROMPTS = (
    "Explain how photosynthesis works.",
    "Give three tips for staying focused while studying.",
    "What is the difference between weather and climate?",
    "Write a short poem about the sea.",
    "How does a bicycle stay upright?",
    "Summarize the plot of Romeo and Juliet in two sentences.",
    "What are prime numbers? Give examples.",
    "Describe how to make a cup of tea.",
    "Why do we have seasons on Earth?",
    "List some healthy breakfast ideas.",
    "What does a computer's CPU do?",
    "Translate 'good morning' into French and Spanish.",
    "How do vaccines help the immune system?",
    "Give a simple recipe for pancakes.",
    "What is the water cycle?",
    "Explain what a budget is and why it helps.",
)


def original_task_examples(base, tokenizer, prompts: Sequence[str] = NEUTRAL_PROMPTS, *, max_new_tokens: int = 64,
                           chat_template: bool = True, cache: str | Path | None = None,
                           dtype: str = "float32") -> list[dict[str, str]]:
    """``pi_1``'s greedy answers ``[{"prompt": formatted prompt, "completion": text}]`` to ``prompts``.

    ``base``: a model directory/alias or a loaded causal LM. ``prompts`` are plain user
    questions (chat-formatted with ``tokenizer`` when ``chat_template``). With ``cache``
    a JSONL file is reused when it holds exactly these prompts (and ``max_new_tokens``),
    otherwise (re)written.
    """
    from rlcustom.data.chat import format_prompt
    from rlcustom.engines.base import SamplingParams
    from rlcustom.engines.hf import HFEngine

    texts = [format_prompt(tokenizer, [{"role": "user", "content": p}] if isinstance(p, str) else p,
                           use_chat_template=chat_template) for p in prompts]
    if cache is not None and Path(cache).is_file():
        rows = [json.loads(line) for line in Path(cache).read_text().splitlines() if line.strip()]
        if [r["prompt"] for r in rows] == texts and all(r.get("max_new_tokens") == max_new_tokens for r in rows):
            return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
    if isinstance(base, (str, Path)):
        from rlcustom.models.loading import load_causal_lm

        base = load_causal_lm(base, dtype=dtype)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, seed=0)
    ro = HFEngine(base, tokenizer).generate(texts, params)
    out = [{"prompt": texts[i], "completion": ro.texts[j]} for j, i in enumerate(ro.prompt_index)]
    if cache is not None:
        atomic_write_text(cache, "".join(json.dumps(r | {"max_new_tokens": max_new_tokens}) + "\n" for r in out))
    return out
