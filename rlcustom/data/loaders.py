"""Loaders that turn data files into :class:`datasets.Dataset` objects.

* :func:`load_preference_pairs` -> columns ``prompt, chosen, rejected, messages``
* :func:`load_prompts`          -> columns ``prompt, messages``
* :func:`load_sft`              -> columns ``prompt, completion, messages``

``messages`` is the prompt as chat turns (``[{"role", "content"}, ...]``), ready for
:func:`rlcustom.data.chat.format_prompt`; ``prompt`` is the prompt as text (raw HH
``"\\n\\nHuman: ...\\n\\nAssistant:"`` for HH data).

``path_or_name`` is a ``.jsonl``/``.jsonl.gz``/``.json``/``.parquet`` file or a bundled
dataset name (``"hh-rlhf"``). Records may be HH-style full dialogues
(``{"chosen", "rejected"}``) or explicit ``{"prompt", "chosen", "rejected"}`` /
``{"prompt", "completion"}`` records; a prompt may be a string or a list of chat messages.

The train/validation split is deterministic: a record is in validation when
``sha1(f"{seed}\\0{prompt}")`` read as a fraction in [0, 1) is below ``val_fraction``; callers pass
``data.split_seed`` (0 unless set), never the run's ``seed``, so a run at ``seed=1`` and an eval at ``seed=2``
hold out the same prompts.
It does not depend on file order or Python's hash seed, the same prompt always lands in
the same split, and all three loaders split the same data the same way.
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, Callable, Mapping

from rlcustom.data.hh import (
    DATASET_NAMES,
    dialogue_to_messages,
    hh_pair,
    messages_to_dialogue,
    split_dialogue,
    validate_messages,
)
from rlcustom.data.records import (
    BadRecordPolicy,
    BadRecordStats,
    RecordError,
    _suffix,
    json_type_name,
    read_records_with_lines,
)
from rlcustom.data.fields import record_fields
from rlcustom.errors import DataError

__all__ = [
    "SPLITS",
    "resolve_data_path",
    "is_validation",
    "load_preference_pairs",
    "load_prompts",
    "load_sft",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "all")


# --------------------------------------------------------------------------- helpers


def resolve_data_path(path_or_name: str | os.PathLike) -> str:
    """A bundled dataset name (``"hh-rlhf"``) -> its file; anything else is a path.
    Raises ``DataError("{path}: no such file")`` if it does not exist."""
    if isinstance(path_or_name, str) and path_or_name in DATASET_NAMES:
        return str(DATASET_NAMES[path_or_name])
    p = os.fspath(path_or_name)
    if not os.path.exists(p):
        looks_like_name = os.sep not in p and "/" not in p and _suffix(p) is None
        hint = f" (known dataset names: {', '.join(sorted(DATASET_NAMES))})" if looks_like_name else ""
        raise DataError(f"{p}: no such file{hint}")
    return p


def is_validation(prompt: str, val_fraction: float, seed: int = 0) -> bool:
    """Whether a record with this prompt belongs to the validation split."""
    if val_fraction <= 0:
        return False
    if val_fraction >= 1:
        return True
    digest = hashlib.sha1(f"{seed}\0{prompt}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction


def _check_args(split: str, val_fraction: float, on_bad_record: str, limit: int | None) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction <= 1:
        raise ValueError(f"val_fraction must be a number in [0, 1], got {val_fraction!r}")
    if on_bad_record not in ("error", "skip"):
        raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")


def _prompt_and_messages(value: Any, name: str) -> tuple[str, list[dict[str, str]]]:
    """A prompt given as text (raw HH dialogue or plain text) or as chat messages."""
    if isinstance(value, str):
        messages = dialogue_to_messages(value)
        if not value.strip() or not messages:
            raise RecordError(f"field {name!r} is empty")
        if not any(m["role"] == "user" for m in messages):
            raise RecordError(f"field {name!r} has no user turn")
        return value, messages
    if isinstance(value, (list, tuple)):
        messages = validate_messages(value, f"field {name!r}")
        if not any(m["role"] == "user" for m in messages):
            raise RecordError(f"field {name!r} has no user message")
        return messages_to_dialogue(messages), messages
    raise RecordError(f"field {name!r} must be a string or a list of messages, got {json_type_name(value)}")


def _reply(record: Mapping[str, Any], name: str) -> str:
    """A reply given as text or as a list of assistant messages."""
    if name not in record:
        raise RecordError(f"missing field {name!r}")
    value = record[name]
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        messages = validate_messages(value, f"field {name!r}")
        if not messages or any(m["role"] != "assistant" for m in messages):
            raise RecordError(f"field {name!r} must hold assistant messages only")
        return "\n\n".join(m["content"] for m in messages)
    raise RecordError(f"field {name!r} must be a string, got {json_type_name(value)}")


def _check_unicode(row: Mapping[str, Any]) -> None:
    """Arrow cannot store lone surrogates (JSON allows ``"\\ud800"``)."""
    for key, value in row.items():
        texts = [value] if isinstance(value, str) else [m["content"] for m in value] if key == "messages" else []
        for t in texts:
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:
                raise RecordError(f"field {key!r} contains invalid Unicode (a lone surrogate)") from None


# --------------------------------------------------------------------------- converters


def _preference_row(record: Mapping[str, Any]) -> dict[str, Any]:
    if "prompt" in record:
        prompt, messages = _prompt_and_messages(record["prompt"], "prompt")
        return {
            "prompt": prompt,
            "chosen": _reply(record, "chosen"),
            "rejected": _reply(record, "rejected"),
            "messages": messages,
        }
    return hh_pair(record)


def _prompt_row(field: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    def convert(record: Mapping[str, Any]) -> dict[str, Any]:
        used: tuple[str, ...] = (field,)
        if field in record:
            prompt, messages = _prompt_and_messages(record[field], field)
        elif field == "prompt" and "question" in record and "answer" in record:  # GSM8K-style record
            prompt, messages = _prompt_and_messages(record["question"], "question")
            used = ("question",)
        elif "chosen" in record and "rejected" in record:  # HH pair: its shared prompt
            pair = hh_pair(record)
            prompt, messages = pair["prompt"], pair["messages"]
            used = ("chosen", "rejected")
        elif "chosen" in record:  # a lone HH dialogue
            if not isinstance(record["chosen"], str):
                raise RecordError(f"field 'chosen' must be a string, got {json_type_name(record['chosen'])}")
            prompt = split_dialogue(record["chosen"])[0]
            _, messages = _prompt_and_messages(prompt, "chosen")
            used = ("chosen",)
        else:
            raise RecordError(f"missing field {field!r}")
        # the record's other columns reach the reward as keyword arguments (rlcustom.data.fields)
        return {"prompt": prompt, "messages": messages, "_fields": record_fields(record, used)}

    return convert


def _sft_row(record: Mapping[str, Any]) -> dict[str, Any]:
    if "prompt" in record:
        prompt, messages = _prompt_and_messages(record["prompt"], "prompt")
        for name in ("completion", "response", "chosen"):
            if name in record:
                return {"prompt": prompt, "completion": _reply(record, name), "messages": messages}
        raise RecordError("missing field 'completion'")
    if "chosen" in record and "rejected" in record:  # HH pair: the chosen reply
        pair = hh_pair(record)
        return {"prompt": pair["prompt"], "completion": pair["chosen"], "messages": pair["messages"]}
    if "chosen" in record:  # a lone HH dialogue
        if not isinstance(record["chosen"], str):
            raise RecordError(f"field 'chosen' must be a string, got {json_type_name(record['chosen'])}")
        prompt, completion = split_dialogue(record["chosen"])
        _, messages = _prompt_and_messages(prompt, "chosen")
        return {"prompt": prompt, "completion": completion, "messages": messages}
    if "messages" in record:  # a conversation whose last turn is the assistant's completion
        messages = validate_messages(record["messages"], "field 'messages'")
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise RecordError("field 'messages' must end with an assistant message after a user message")
        prompt_messages = messages[:-1]
        if not any(m["role"] == "user" for m in prompt_messages):
            raise RecordError("field 'messages' has no user message")
        return {
            "prompt": messages_to_dialogue(prompt_messages),
            "completion": messages[-1]["content"],
            "messages": prompt_messages,
        }
    raise RecordError("missing field 'prompt'")


# --------------------------------------------------------------------------- core


def _features(columns: tuple[str, ...]):
    from datasets import Features, List, Value

    feats = {name: Value("string") for name in columns if name != "messages"}
    feats["messages"] = List({"role": Value("string"), "content": Value("string")})
    return Features({name: feats[name] for name in columns})


def _load(
    path_or_name: str | os.PathLike,
    convert: Callable[[Mapping[str, Any]], dict[str, Any]],
    columns: tuple[str, ...],
    *,
    split: str,
    val_fraction: float,
    seed: int,
    on_bad_record: str,
    limit: int | None,
    return_stats: bool,
):
    from datasets import Dataset

    _check_args(split, val_fraction, on_bad_record, limit)
    if isinstance(path_or_name, str) and path_or_name.startswith("task:"):  # generated, no file
        from rlcustom.data.tasks import task_records

        path, records, stats = path_or_name, task_records(path_or_name), BadRecordStats()
    else:
        path = resolve_data_path(path_or_name)
        records, stats = read_records_with_lines(path, on_bad_record=on_bad_record)
    policy = BadRecordPolicy(path, on_bad_record, stats)

    rows: list[dict[str, Any]] = []
    for lineno, record in records:
        try:
            row = convert(record)
            _check_unicode(row)
        except RecordError as e:
            policy.bad(lineno, str(e))
            continue
        rows.append(row)
    if not rows:
        raise policy.no_records()

    total = len(rows)
    if split != "all":
        want_val = split == "validation"
        rows = [r for r in rows if is_validation(r["prompt"], val_fraction, seed) == want_val]
        if not rows:
            raise DataError(
                f"{path}: split {split!r} is empty ({total} records, val_fraction={val_fraction})"
            )
    if limit is not None:
        rows = rows[:limit]
    if stats.count:
        logger.warning("%s: %s", path, stats.summary())

    data = {name: [r[name] for r in rows] for name in columns}
    dataset = Dataset.from_dict(data, features=_features(columns))
    # how many bad records were skipped (lost by .map/.filter; use return_stats=True to keep them)
    dataset.bad_records = stats.count
    dataset.row_fields = [r.get("_fields", {}) for r in rows]  # per row: its other columns (prompt loaders)
    return (dataset, stats) if return_stats else dataset


def load_preference_pairs(
    path_or_name: str | os.PathLike = "hh-rlhf",
    split: str = "train",
    val_fraction: float = 0.1,
    seed: int = 0,
    on_bad_record: str = "error",
    limit: int | None = None,
    *,
    return_stats: bool = False,
):
    """Preference pairs as a ``datasets.Dataset`` with columns
    ``prompt, chosen, rejected, messages``.

    Records are HH-style (``{"chosen": dialogue, "rejected": dialogue}``, split at the
    shared prompt) or explicit (``{"prompt", "chosen", "rejected"}``). ``split`` is
    ``"train"``, ``"validation"`` or ``"all"``; ``limit`` keeps the first N after the
    split. With ``return_stats=True`` returns ``(dataset, BadRecordStats)``; either way
    ``dataset.bad_records`` is the number of bad records skipped.
    """
    return _load(
        path_or_name, _preference_row, ("prompt", "chosen", "rejected", "messages"),
        split=split, val_fraction=val_fraction, seed=seed, on_bad_record=on_bad_record,
        limit=limit, return_stats=return_stats,
    )


def load_prompts(
    path_or_name: str | os.PathLike = "hh-rlhf",
    split: str = "train",
    val_fraction: float = 0.1,
    seed: int = 0,
    on_bad_record: str = "error",
    limit: int | None = None,
    *,
    field: str = "prompt",
    return_stats: bool = False,
):
    """Prompts as a ``datasets.Dataset`` with columns ``prompt, messages``.

    Reads ``field`` (text or chat messages) from each record; HH preference data
    (no ``field``, but ``chosen``/``rejected``) gives the pairs' shared prompts.
    """
    return _load(
        path_or_name, _prompt_row(field), ("prompt", "messages"),
        split=split, val_fraction=val_fraction, seed=seed, on_bad_record=on_bad_record,
        limit=limit, return_stats=return_stats,
    )


def load_sft(
    path_or_name: str | os.PathLike = "hh-rlhf",
    split: str = "train",
    val_fraction: float = 0.1,
    seed: int = 0,
    on_bad_record: str = "error",
    limit: int | None = None,
    *,
    return_stats: bool = False,
):
    """Supervised pairs as a ``datasets.Dataset`` with columns ``prompt, completion, messages``.

    Records are ``{"prompt", "completion"}`` (or ``"response"``, or ``"chosen"`` of an
    explicit preference record), ``{"messages": [..., assistant]}``, or HH preference
    data, which gives each pair's chosen reply.
    """
    return _load(
        path_or_name, _sft_row, ("prompt", "completion", "messages"),
        split=split, val_fraction=val_fraction, seed=seed, on_bad_record=on_bad_record,
        limit=limit, return_stats=return_stats,
    )
