"""Data layer: reading record files, HH-RLHF dialogues, dataset loaders, chat formatting.

``import rlcustom.data`` is cheap: ``datasets`` is imported only when a loader runs.
"""
from rlcustom.data.chat import format_prompt, tokenizer_name, truncate_prompt_ids
from rlcustom.data.hh import (
    BUNDLED_HH,
    DATASET_NAMES,
    dialogue_to_messages,
    hh_pair,
    messages_to_dialogue,
    shared_prompt,
    split_dialogue,
)
from rlcustom.data.loaders import (
    SPLITS,
    is_validation,
    load_preference_pairs,
    load_prompts,
    load_sft,
    resolve_data_path,
)
from rlcustom.data.records import BadRecordStats, RecordError, read_records, read_records_with_lines

__all__ = [
    "BUNDLED_HH",
    "DATASET_NAMES",
    "SPLITS",
    "BadRecordStats",
    "RecordError",
    "dialogue_to_messages",
    "format_prompt",
    "hh_pair",
    "is_validation",
    "load_preference_pairs",
    "load_prompts",
    "load_sft",
    "messages_to_dialogue",
    "read_records",
    "read_records_with_lines",
    "resolve_data_path",
    "shared_prompt",
    "split_dialogue",
    "tokenizer_name",
    "truncate_prompt_ids",
]
