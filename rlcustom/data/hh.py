"""Anthropic HH-RLHF dialogues: ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` text.

A preference record is ``{"chosen": dialogue, "rejected": dialogue}``; the two share
everything up to the final assistant turn, which is the reply being compared.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from rlcustom.data.records import RecordError, json_type_name

__all__ = [
    "BUNDLED_HH",
    "DATASET_NAMES",
    "HUMAN",
    "ASSISTANT",
    "split_dialogue",
    "dialogue_to_messages",
    "messages_to_dialogue",
    "shared_prompt",
    "hh_pair",
    "validate_messages",
]

#: The bundled ``harmless-base/test`` split of HH-RLHF (2,312 pairs, MIT; see hh_rlhf/README.md).
BUNDLED_HH: Path = Path(__file__).resolve().parent / "hh_rlhf" / "harmless-base-test.jsonl.gz"

#: Names the loaders accept in place of a path.
DATASET_NAMES: dict[str, Path] = {"hh-rlhf": BUNDLED_HH}

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"

# A turn marker: at the very start of the text, or after a blank line.
_TURN = re.compile(r"(?:\A|\n\n)(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}
_LABEL = {"user": "Human", "assistant": "Assistant"}
ROLES = ("system", "user", "assistant")


def split_dialogue(text: str) -> tuple[str, str]:
    """Split an HH dialogue at its final ``"\\n\\nAssistant:"`` turn.

    Returns ``(prompt, reply)``: ``prompt`` is everything up to and including that
    marker (so it ends with ``"\\n\\nAssistant:"``); ``reply`` is the rest with its
    leading whitespace removed. ``prompt + " " + reply == text`` for the usual
    one-space HH layout. Raises :class:`RecordError` if there is no assistant turn.
    """
    if not isinstance(text, str):
        raise RecordError(f"dialogue must be a string, got {json_type_name(text)}")
    i = text.rfind(ASSISTANT)
    if i < 0:
        raise RecordError("dialogue has no '\\n\\nAssistant:' turn")
    end = i + len(ASSISTANT)
    return text[:end], text[end:].lstrip()


def dialogue_to_messages(prompt_text: str, *, merge_consecutive: bool = True) -> list[dict[str, str]]:
    """Parse ``Human:``/``Assistant:`` turns into chat messages.

    Each turn becomes ``{"role": "user"|"assistant", "content": stripped text}``. A
    trailing empty ``Assistant:`` turn (the generation prompt) is dropped. Text before
    the first turn, if any, becomes a ``"system"`` message; text with no turn markers at
    all is a single user message. With ``merge_consecutive`` (default) consecutive
    turns of the same role are joined with a blank line, since many chat templates
    require alternating roles (a few HH dialogues have two ``Assistant:`` turns in a row).
    """
    if not isinstance(prompt_text, str):
        raise RecordError(f"prompt must be a string, got {json_type_name(prompt_text)}")
    marks = list(_TURN.finditer(prompt_text))
    if not marks:
        content = prompt_text.strip()
        return [{"role": "user", "content": content}] if content else []
    messages: list[dict[str, str]] = []
    lead = prompt_text[: marks[0].start()].strip()
    if lead:
        messages.append({"role": "system", "content": lead})
    for j, m in enumerate(marks):
        stop = marks[j + 1].start() if j + 1 < len(marks) else len(prompt_text)
        messages.append({"role": _ROLE[m.group(1)], "content": prompt_text[m.end() : stop].strip()})
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    if merge_consecutive:
        merged: list[dict[str, str]] = []
        for msg in messages:
            if merged and merged[-1]["role"] == msg["role"]:
                prev = merged[-1]["content"]
                merged[-1] = {
                    "role": msg["role"],
                    "content": f"{prev}\n\n{msg['content']}" if prev and msg["content"] else prev or msg["content"],
                }
            else:
                merged.append(msg)
        messages = merged
    return messages


def validate_messages(messages: Any, what: str = "messages") -> list[dict[str, str]]:
    """Check a list of ``{"role", "content"}`` chat messages; returns plain-dict copies.
    Raises :class:`RecordError` naming the first bad message."""
    if not isinstance(messages, (list, tuple)):
        raise RecordError(f"{what} must be a list of messages, got {json_type_name(messages)}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise RecordError(f"{what}[{i}] must be an object, got {json_type_name(m)}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise RecordError(f"{what}[{i}]: role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise RecordError(f"{what}[{i}]: content must be a string, got {json_type_name(content)}")
        out.append({"role": role, "content": content})
    return out


def messages_to_dialogue(
    messages: Sequence[Mapping[str, str]],
    *,
    system: str | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """Render chat messages as raw HH text: ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``.

    A system message (or ``system``) goes first as plain text before the first turn.
    With ``add_generation_prompt`` the text ends with ``"\\n\\nAssistant:"``.
    Inverse of :func:`dialogue_to_messages` for alternating, stripped messages.
    """
    msgs = validate_messages(list(messages))
    if system is not None:  # replaces a leading system message
        if msgs and msgs[0]["role"] == "system":
            msgs = msgs[1:]
        if system:
            msgs = [{"role": "system", "content": system}, *msgs]
    parts: list[str] = []
    for i, m in enumerate(msgs):
        if m["role"] == "system":
            if i != 0:
                raise RecordError(f"messages[{i}]: a system message is only supported first")
            if m["content"]:
                parts.append(m["content"])
            continue
        label = _LABEL[m["role"]]
        parts.append(f"\n\n{label}: {m['content']}" if m["content"] else f"\n\n{label}:")
    if add_generation_prompt:
        parts.append(ASSISTANT)
    return "".join(parts)


def shared_prompt(chosen: str, rejected: str) -> tuple[str, str, str]:
    """``(prompt, chosen_reply, rejected_reply)`` for two dialogues that share a prompt.

    Normally both dialogues split at their final assistant turn into the same prompt.
    A few HH records have an extra turn inside one reply (e.g. ``"...\\n\\nAssistant: x
    \\n\\nAssistant: y"``); then the prompt is the longest common prefix ending with
    ``"\\n\\nAssistant:"``, provided the two diverge inside that assistant turn (no
    ``"\\n\\nHuman:"`` turn between it and the point where they differ). Otherwise the
    prompts really differ and :class:`RecordError` is raised.
    """
    try:
        pc, rc = split_dialogue(chosen)
    except RecordError as e:
        raise RecordError(f"chosen: {e}") from None
    try:
        pr, rr = split_dialogue(rejected)
    except RecordError as e:
        raise RecordError(f"rejected: {e}") from None
    if pc == pr:
        return pc, rc, rr
    k = len(os.path.commonprefix([chosen, rejected]))
    common = chosen[:k]
    cut = common.rfind(ASSISTANT)
    if cut < 0:
        raise RecordError(
            f"chosen and rejected do not share a prompt (they differ at character {k + 1}, "
            "before any common 'Assistant:' turn)"
        )
    end = cut + len(ASSISTANT)
    if HUMAN in common[end:]:
        raise RecordError(
            f"chosen and rejected do not share a prompt (they differ at character {k + 1}, "
            "after their last common 'Human:' turn)"
        )
    return chosen[:end], chosen[end:].lstrip(), rejected[end:].lstrip()


def _string_field(record: Mapping[str, Any], name: str) -> str:
    if name not in record:
        raise RecordError(f"missing field {name!r}")
    value = record[name]
    if not isinstance(value, str):
        raise RecordError(f"field {name!r} must be a string, got {json_type_name(value)}")
    return value


def hh_pair(record: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``{"chosen": dialogue, "rejected": dialogue}`` into
    ``{"prompt", "chosen", "rejected", "messages"}``: the shared prompt text (ending with
    ``"\\n\\nAssistant:"``), the two replies, and the prompt's chat messages.

    Raises :class:`RecordError` (a reason without location) if the record is unusable,
    e.g. when chosen and rejected do not share a prompt.
    """
    if not isinstance(record, Mapping):
        raise RecordError("record is not an object")
    chosen = _string_field(record, "chosen")
    rejected = _string_field(record, "rejected")
    prompt, chosen_reply, rejected_reply = shared_prompt(chosen, rejected)
    messages = dialogue_to_messages(prompt)
    if not any(m["role"] == "user" for m in messages):
        raise RecordError("prompt has no 'Human:' turn")
    return {"prompt": prompt, "chosen": chosen_reply, "rejected": rejected_reply, "messages": messages}
