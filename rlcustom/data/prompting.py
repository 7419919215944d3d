"""From a data config to the prompt texts an engine gets (chat template, length policy)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PromptSet:
    ids: list[list[int]]        # what the engine is given: token ids of the chat-templated prompt
    texts: list[str]            # the same, as text
    raw: list[str]              # the user-facing prompt, for tables and JSONL
    skipped_long: int = 0       # prompts longer than data.max_prompt_tokens, skipped by policy
    truncated_long: int = 0     # ... or truncated (left) by policy
    bad_records: int = 0        # records skipped with data.on_bad_record=skip
    notes: list[str] = field(default_factory=list)
    fields: list[dict] = field(default_factory=list)  # per prompt: its record's other columns (answer, tests, ...)


def build_prompts(data_cfg, tokenizer) -> PromptSet:
    """The prompts of ``data_cfg``'s split (salted by ``data_cfg.split_seed``, not the run's seed), templated."""
    from rlcustom.data.chat import format_prompt, truncate_prompt_ids
    from rlcustom.data.loaders import load_prompts

    ds = load_prompts(data_cfg.prompts, split=data_cfg.split, val_fraction=data_cfg.val_fraction,
                      seed=data_cfg.split_seed,
                      on_bad_record=data_cfg.on_bad_record, limit=data_cfg.limit)
    out = PromptSet([], [], [], bad_records=int(getattr(ds, "bad_records", 0) or 0))
    row_fields = getattr(ds, "row_fields", None) or [{}] * len(ds)
    for row, fields in zip(ds, row_fields):
        messages = row.get("messages") or [{"role": "user", "content": row["prompt"]}]
        text = format_prompt(tokenizer, messages, use_chat_template=data_cfg.chat_template)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        kept = truncate_prompt_ids(ids, data_cfg.max_prompt_tokens, "skip" if data_cfg.long_prompts == "skip" else "left")
        if kept is None:
            out.skipped_long += 1
            continue
        if len(kept) < len(ids):
            out.truncated_long += 1
        out.ids.append(list(kept))
        out.texts.append(text)
        out.raw.append(row["prompt"])
        out.fields.append(fields)
    if not out.texts:
        from rlcustom.errors import DataError

        raise DataError(f"{data_cfg.prompts}: no prompts left (skipped {out.skipped_long} longer than "
                        f"data.max_prompt_tokens={data_cfg.max_prompt_tokens})")
    return out
