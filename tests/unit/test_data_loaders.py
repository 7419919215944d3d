"""HH parsing, the dataset loaders (bundled HH-RLHF and files), chat formatting."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rlcustom.data import (
    BUNDLED_HH,
    dialogue_to_messages,
    format_prompt,
    hh_pair,
    is_validation,
    load_preference_pairs,
    load_prompts,
    load_sft,
    messages_to_dialogue,
    split_dialogue,
    truncate_prompt_ids,
)
from rlcustom.data.records import RecordError
from rlcustom.errors import DataError

HH_TOTAL = 2312


def dialogue(*turns: str) -> str:
    """dialogue("q", "a", "q2", "a2") -> HH text with alternating Human/Assistant turns."""
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def hh_records(n: int) -> list[dict]:
    return [
        {"chosen": dialogue(f"question {i}?", f"good answer {i}"), "rejected": dialogue(f"question {i}?", f"bad {i}")}
        for i in range(n)
    ]


# --------------------------------------------------------------------------- hh.py


def test_split_dialogue_hand_example():
    text = "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke\n\nAssistant: Why did the chicken cross the road?"
    prompt, reply = split_dialogue(text)
    assert prompt == "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke\n\nAssistant:"
    assert reply == "Why did the chicken cross the road?"
    assert prompt + " " + reply == text
    with pytest.raises(RecordError, match="no '.*Assistant:' turn"):
        split_dialogue("\n\nHuman: nobody answers")


def test_dialogue_to_messages():
    prompt = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant:"
    assert dialogue_to_messages(prompt) == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell me a joke"},
    ]
    assert messages_to_dialogue(dialogue_to_messages(prompt)) == prompt
    # inline "Human:" (no blank line before it) is text, not a turn
    assert dialogue_to_messages("\n\nHuman: say Human: hi\n\nAssistant:") == [{"role": "user", "content": "say Human: hi"}]
    # two assistant turns in a row are merged (chat templates want alternation)
    assert dialogue_to_messages(dialogue("q", "a1") + "\n\nAssistant: a2" + "\n\nHuman: q2\n\nAssistant:") == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a1\n\na2"},
        {"role": "user", "content": "q2"},
    ]
    # plain text is one user message; text before the first turn is a system message
    assert dialogue_to_messages("What is 2+2?") == [{"role": "user", "content": "What is 2+2?"}]
    assert dialogue_to_messages("Be brief.\n\nHuman: hi\n\nAssistant:") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]


def test_hh_pair():
    pair = hh_pair({"chosen": dialogue("q", "a", "q2", "good"), "rejected": dialogue("q", "a", "q2", "bad")})
    assert pair == {
        "prompt": dialogue("q", "a", "q2") + "\n\nAssistant:",
        "chosen": "good",
        "rejected": "bad",
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "q2"},
        ],
    }


def test_hh_pair_extra_turn_inside_one_reply():
    # as in a few HH records: one reply holds an extra "Assistant:" turn
    chosen = dialogue("q", "first part") + "\n\nAssistant: second part"
    rejected = dialogue("q", "other")
    pair = hh_pair({"chosen": chosen, "rejected": rejected})
    assert pair["prompt"] == "\n\nHuman: q\n\nAssistant:"
    assert pair["chosen"] == "first part\n\nAssistant: second part"
    assert pair["rejected"] == "other"


def test_hh_pair_different_prompts_is_a_reason():
    with pytest.raises(RecordError, match="do not share a prompt"):
        hh_pair({"chosen": dialogue("q", "a", "x", "good"), "rejected": dialogue("q", "a", "y", "bad")})
    with pytest.raises(RecordError, match="missing field 'rejected'"):
        hh_pair({"chosen": dialogue("q", "a")})
    with pytest.raises(RecordError, match="field 'chosen' must be a string, got int"):
        hh_pair({"chosen": 1, "rejected": dialogue("q", "a")})


# --------------------------------------------------------------------------- bundled data


@pytest.fixture(scope="module")
def bundled():
    return {
        "all": load_preference_pairs("hh-rlhf", split="all"),
        "train": load_preference_pairs("hh-rlhf", split="train"),
        "validation": load_preference_pairs("hh-rlhf", split="validation"),
    }


def test_bundled_file_ships():
    assert BUNDLED_HH.is_file() and BUNDLED_HH.name.endswith(".jsonl.gz")
    assert (BUNDLED_HH.parent / "LICENSE").is_file()
    assert (BUNDLED_HH.parent / "README.md").is_file()


def test_bundled_pairs_load(bundled):
    full = bundled["all"]
    assert full.column_names == ["prompt", "chosen", "rejected", "messages"]
    assert len(full) == HH_TOTAL
    row = full[0]
    assert row["prompt"].startswith("\n\nHuman: ") and row["prompt"].endswith("\n\nAssistant:")
    assert row["messages"][0]["role"] == "user" and row["messages"][-1]["role"] == "user"
    assert all(p.endswith("\n\nAssistant:") for p in full["prompt"])
    assert all(m[-1]["role"] == "user" for m in full["messages"])


def test_bundled_split_partitions_deterministically(bundled):
    train, val, full = bundled["train"], bundled["validation"], bundled["all"]
    assert len(train) + len(val) == HH_TOTAL
    assert 0.05 * HH_TOTAL < len(val) < 0.15 * HH_TOTAL
    assert not set(train["prompt"]) & set(val["prompt"])
    assert sorted(list(train["prompt"]) + list(val["prompt"])) == sorted(full["prompt"])
    again = load_preference_pairs("hh-rlhf", split="train")
    assert again["prompt"] == train["prompt"] and again["chosen"] == train["chosen"]
    # other loaders split the same data the same way
    assert load_prompts("hh-rlhf", split="validation")["prompt"] == val["prompt"]


def test_bundled_prompts_and_sft(bundled):
    prompts = load_prompts("hh-rlhf", split="all", limit=5)
    assert prompts.column_names == ["prompt", "messages"]
    assert prompts["prompt"] == bundled["all"]["prompt"][:5]
    sft = load_sft("hh-rlhf", split="all", limit=5)
    assert sft.column_names == ["prompt", "completion", "messages"]
    assert sft["completion"] == bundled["all"]["chosen"][:5]


def test_is_validation_ignores_python_hash_seed():
    prompts = [f"prompt number {i}" for i in range(200)]
    here = [is_validation(p, 0.3) for p in prompts]
    code = (
        "import json; from rlcustom.data.loaders import is_validation; "
        f"print(json.dumps([is_validation(p, 0.3) for p in {prompts!r}]))"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert json.loads(out.stdout) == here
    assert 30 < sum(here) < 90
    assert [is_validation(p, 0.3, seed=1) for p in prompts] != here


# --------------------------------------------------------------------------- files


def test_split_does_not_depend_on_file_order(tmp_path):
    records = hh_records(60)
    a = write_jsonl(tmp_path / "a.jsonl", records)
    b = write_jsonl(tmp_path / "b.jsonl", records[::-1])
    for split in ("train", "validation"):
        pa = load_preference_pairs(a, split=split, val_fraction=0.3)["prompt"]
        pb = load_preference_pairs(b, split=split, val_fraction=0.3)["prompt"]
        assert sorted(pa) == sorted(pb) and pa == pb[::-1]
    # duplicated prompts never straddle the split
    dup = write_jsonl(tmp_path / "dup.jsonl", records + records)
    train = load_preference_pairs(dup, split="train", val_fraction=0.3)["prompt"]
    val = load_preference_pairs(dup, split="validation", val_fraction=0.3)["prompt"]
    assert len(train) + len(val) == 120 and not set(train) & set(val)


def test_limit_takes_first_n_after_split(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", hh_records(40))
    train = load_preference_pairs(p, split="train", val_fraction=0.5)
    assert load_preference_pairs(p, split="train", val_fraction=0.5, limit=3)["prompt"] == train["prompt"][:3]
    with pytest.raises(ValueError, match="limit"):
        load_preference_pairs(p, limit=0)


def test_explicit_prompt_records(tmp_path):
    p = write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
            {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}], "rejected": "go away"},
            {"chosen": dialogue("q", "yes"), "rejected": dialogue("q", "no")},  # HH style, mixed in
        ],
    )
    ds = load_preference_pairs(p, split="all")
    assert ds["prompt"] == ["What is 2+2?", "\n\nHuman: hi\n\nAssistant:", "\n\nHuman: q\n\nAssistant:"]
    assert ds["chosen"] == ["4", "hello", "yes"]
    assert ds["rejected"] == ["5", "go away", "no"]
    assert ds["messages"][0] == [{"role": "user", "content": "What is 2+2?"}]


def test_pair_with_different_prompts_is_file_line_error(tmp_path):
    records = hh_records(3)
    records[1] = {"chosen": dialogue("q", "a", "x", "good"), "rejected": dialogue("q", "a", "y", "bad")}
    p = write_jsonl(tmp_path / "a.jsonl", records)
    with pytest.raises(DataError) as ei:
        load_preference_pairs(p, split="all")
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(f"{p}:2: chosen and rejected do not share a prompt")
    ds, stats = load_preference_pairs(p, split="all", on_bad_record="skip", return_stats=True)
    assert len(ds) == 2 and stats.count == 1 and stats.examples[0].startswith(f"{p}:2: ")
    assert ds.bad_records == 1
    assert load_prompts(p, split="all", on_bad_record="skip").bad_records == 1


def test_missing_field_in_loader(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "x", "chosen": "a", "rejected": "b"}, {"prompt": "y", "chosen": "a"}])
    with pytest.raises(DataError) as ei:
        load_preference_pairs(p, split="all")
    assert str(ei.value) == f"{p}:2: missing field 'rejected'"


def test_load_prompts_from_files(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"question": "Why is the sky blue?"}, {"question": "Name a prime."}])
    ds = load_prompts(p, split="all", field="question")
    assert ds["prompt"] == ["Why is the sky blue?", "Name a prime."]
    assert ds["messages"][1] == [{"role": "user", "content": "Name a prime."}]
    with pytest.raises(DataError) as ei:
        load_prompts(p, split="all")
    assert str(ei.value) == f"{p}:1: missing field 'prompt'"


def test_load_sft_from_files(tmp_path):
    p = write_jsonl(
        tmp_path / "a.jsonl",
        [{"prompt": "a", "completion": "b"}, {"prompt": "c", "response": "d"}, {"prompt": "e"}],
    )
    with pytest.raises(DataError) as ei:
        load_sft(p, split="all")
    assert str(ei.value) == f"{p}:3: missing field 'completion'"
    ds = load_sft(p, split="all", on_bad_record="skip")
    assert ds["prompt"] == ["a", "c"] and ds["completion"] == ["b", "d"]


def test_json_and_parquet_inputs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"prompt": f"p{i}", "chosen": "c", "rejected": "r"} for i in range(5)]
    j = tmp_path / "a.json"
    j.write_text(json.dumps(records, indent=1))
    q = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(records), q)
    for path in (j, q):
        ds = load_preference_pairs(path, split="all")
        assert ds["prompt"] == [r["prompt"] for r in records]
        assert len(load_prompts(path, split="all")) == 5


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(DataError) as ei:
        load_preference_pairs(tmp_path / "nope.jsonl")
    assert str(ei.value) == f"{tmp_path / 'nope.jsonl'}: no such file"
    with pytest.raises(DataError, match=r"^no-such-dataset: no such file \(known dataset names: hh-rlhf\)$"):
        load_prompts("no-such-dataset")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError) as ei:
        load_sft(empty)
    assert str(ei.value) == f"{empty}: no records"
    p = write_jsonl(tmp_path / "one.jsonl", hh_records(1))
    with pytest.raises(DataError, match=r"split 'validation' is empty"):
        load_preference_pairs(p, split="validation", val_fraction=0.0)
    with pytest.raises(ValueError, match="split"):
        load_preference_pairs(p, split="test")


# --------------------------------------------------------------------------- chat.py


def _tokenizer(template: str | None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    hf.name_or_path = "tiny-test-tokenizer"
    if template is not None:
        hf.chat_template = template
    return hf


TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
MESSAGES = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "joke?"}]


def test_format_prompt_with_chat_template():
    tok = _tokenizer(TEMPLATE)
    assert format_prompt(tok, MESSAGES) == "<|user|>hi\n<|assistant|>hello\n<|user|>joke?\n<|assistant|>"
    assert format_prompt(tok, MESSAGES, system="Be kind.").startswith("<|system|>Be kind.\n<|user|>hi\n")
    # a raw HH prompt is parsed into turns first
    assert format_prompt(tok, "\n\nHuman: hi\n\nAssistant:") == "<|user|>hi\n<|assistant|>"


def test_format_prompt_without_chat_template():
    tok = _tokenizer(None)
    with pytest.raises(DataError) as ei:
        format_prompt(tok, MESSAGES)
    assert str(ei.value) == (
        "tokenizer tiny-test-tokenizer has no chat template; "
        "set data.chat_template: false to use raw 'Human:/Assistant:' text"
    )
    raw = format_prompt(tok, MESSAGES, use_chat_template=False)
    assert raw == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: joke?\n\nAssistant:"
    assert format_prompt(tok, MESSAGES, use_chat_template=False, system="Be kind.").startswith("Be kind.\n\nHuman: hi")


def test_format_prompt_template_failure_is_one_line_data_error():
    tok = _tokenizer("{{ raise_exception('Conversation roles must alternate\nuser/assistant') }}")
    with pytest.raises(DataError) as ei:
        format_prompt(tok, MESSAGES)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("tokenizer tiny-test-tokenizer: chat template failed: Conversation roles")


def test_format_prompt_on_bundled_messages(bundled):
    tok = _tokenizer(TEMPLATE)
    row = bundled["all"][0]
    assert format_prompt(tok, row["messages"]).endswith("<|assistant|>")
    assert format_prompt(tok, row["messages"], use_chat_template=False) == row["prompt"]


def test_truncate_prompt_ids():
    ids = list(range(10))
    assert truncate_prompt_ids(ids, 10) == ids
    assert truncate_prompt_ids(ids, 4) == [6, 7, 8, 9]
    assert truncate_prompt_ids(ids, 4, policy="skip") is None
    assert truncate_prompt_ids(ids, 12, policy="skip") == ids
    with pytest.raises(ValueError):
        truncate_prompt_ids(ids, 4, policy="right")
    with pytest.raises(ValueError):
        truncate_prompt_ids(ids, 0)


def test_held_out_prompts_follow_split_seed_not_the_run_seed(tiny):
    """A run at seed=1 and an eval at seed=2 hold out the same prompts; only data.split_seed moves the split."""
    import dataclasses

    from rlcustom.config import load_config
    from rlcustom.data.prompting import build_prompts

    _, tok = tiny
    cfgs = [load_config("configs/ppo.yaml", [f"seed={s}", "data.split=validation", "data.chat_template=false"])
            for s in (0, 1, 2)]
    held = [build_prompts(c.data, tok).raw for c in cfgs]
    assert held[0] == held[1] == held[2] and len(held[0]) > 100
    other = build_prompts(dataclasses.replace(cfgs[0].data, split_seed=1), tok).raw
    assert set(other) != set(held[0]) and abs(len(other) - len(held[0])) < 80  # ~10% of 2,312 either way
    train = build_prompts(dataclasses.replace(cfgs[1].data, split="train"), tok).raw
    assert not set(train) & set(held[0])
