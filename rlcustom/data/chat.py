"""Turning chat messages into the text a policy model sees, and fitting it into its context."""
from __future__ import annotations

from typing import Any, Mapping, Sequence, TypeVar

from rlcustom.data.hh import dialogue_to_messages, messages_to_dialogue, validate_messages
from rlcustom.data.records import RecordError, one_line
from rlcustom.errors import DataError

__all__ = ["format_prompt", "truncate_prompt_ids", "tokenizer_name", "TRUNCATION_POLICIES"]

TRUNCATION_POLICIES = ("left", "skip")

T = TypeVar("T")


def tokenizer_name(tokenizer: Any) -> str:
    """The tokenizer's model name or path, else its class name."""
    name = getattr(tokenizer, "name_or_path", None)
    return str(name) if name else type(tokenizer).__name__


def _as_messages(messages: str | Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    try:
        if isinstance(messages, str):
            return dialogue_to_messages(messages)
        return validate_messages(list(messages))
    except RecordError as e:
        raise DataError(f"bad chat messages: {one_line(e)}") from None


def format_prompt(
    tokenizer: Any,
    messages: str | Sequence[Mapping[str, str]],
    *,
    use_chat_template: bool = True,
    system: str | None = None,
) -> str:
    """The prompt text to generate from.

    ``messages`` is a list of ``{"role", "content"}`` dicts (the loaders' ``messages``
    column) or a raw HH / plain-text prompt. ``system``, if given, becomes (or replaces)
    the leading system message. With ``use_chat_template`` (default) this is
    ``tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)``
    and a tokenizer without a chat template is a one-line ``DataError``; with
    ``use_chat_template=False`` it is raw HH text ``"\\n\\nHuman: ...\\n\\nAssistant:"``.
    """
    msgs = _as_messages(messages)
    if system is not None:
        if msgs and msgs[0]["role"] == "system":
            msgs = msgs[1:]
        if system:
            msgs = [{"role": "system", "content": system}, *msgs]
    if not use_chat_template:
        try:
            return messages_to_dialogue(msgs)
        except RecordError as e:
            raise DataError(f"bad chat messages: {one_line(e)}") from None
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            f"tokenizer {tokenizer_name(tokenizer)} has no chat template; "
            "set data.chat_template: false to use raw 'Human:/Assistant:' text"
        )
    try:
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # jinja2 TemplateError (e.g. "roles must alternate"), ValueError, ...
        raise DataError(
            f"tokenizer {tokenizer_name(tokenizer)}: chat template failed: {one_line(e)}"
        ) from None
    if not isinstance(text, str):  # defensive: some versions return a list for batched input
        raise DataError(
            f"tokenizer {tokenizer_name(tokenizer)}: apply_chat_template returned "
            f"{type(text).__name__}, not text"
        )
    return text


def truncate_prompt_ids(ids: Sequence[T], max_len: int, policy: str = "left") -> Sequence[T] | None:
    """Fit prompt token ids into ``max_len``.

    ``ids`` that fit are returned unchanged. Longer ones are, with ``policy="left"``,
    cut from the left (keeping the last ``max_len`` ids: the end of the prompt and its
    generation prompt); with ``policy="skip"``, ``None`` is returned, for the caller to
    drop the prompt and count it.
    """
    if policy not in TRUNCATION_POLICIES:
        raise ValueError(f"truncation policy must be 'left' or 'skip', got {policy!r}")
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive integer, got {max_len!r}")
    if len(ids) <= max_len:
        return ids
    if policy == "skip":
        return None
    return ids[len(ids) - max_len :]
