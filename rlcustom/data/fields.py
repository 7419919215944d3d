"""Per-sample fields: the columns of a prompt record (``answer``, ``tests``, metadata) that travel
with its samples to the reward, as keyword arguments.

A prompt record ``{"prompt": "2+3=?", "answer": "5"}`` gives the reward of each of its samples
``fn(prompt, completion, *, response_ids, answer="5", **kwargs)``. The prompt batch carries the
records' fields (:class:`PromptBatch`); after generation :func:`attach_fields` copies them onto
each sample of the :class:`~rlcustom.engines.base.Rollouts` (``rollouts.fields[i]``), which are
what reward replicas receive, so retries and replicas see the same fields.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["PromptBatch", "attach_fields", "RESERVED", "record_fields", "common_columns"]

#: Record keys that are not passed as fields: the prompt itself (given as ``prompt``) and its chat form.
RESERVED = frozenset({"prompt", "messages"})


class PromptBatch(list):
    """Prompts (token ids) with their records' fields: ``fields[i]`` belongs to ``self[i]``."""

    def __init__(self, prompts: Sequence[Any], fields: Sequence[Mapping[str, Any]] | None = None) -> None:
        super().__init__(prompts)
        self.fields: list[dict[str, Any]] = [dict(f) for f in fields] if fields is not None else []
        if self.fields and len(self.fields) != len(self):
            raise ValueError(f"PromptBatch: {len(self)} prompts but {len(self.fields)} field records")


def attach_fields(rollouts, prompts: Sequence[Any]):
    """Give each sample of ``rollouts`` the fields of the prompt it answers (``prompt_index``)."""
    fields = getattr(prompts, "fields", None)
    if fields and len(rollouts):
        rollouts.fields = [fields[i] for i in rollouts.prompt_index]
    return rollouts


def record_fields(record: Mapping[str, Any], used: Sequence[str] = ()) -> dict[str, Any]:
    """The fields of one record: every key but the prompt, its chat form and ``used`` (keys read as the prompt)."""
    skip = RESERVED | set(used)
    return {k: v for k, v in record.items() if k not in skip}


def common_columns(fields: Sequence[Mapping[str, Any]]) -> set[str]:
    """Columns every record has (a reward may require only these)."""
    if not fields:
        return set()
    out = set(fields[0])
    for f in fields[1:]:
        out &= set(f)
    return out
