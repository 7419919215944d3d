"""Property tests: record files round-trip, garbage never escapes as a non-DataError,
HH dialogues split and parse consistently."""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlcustom.data import dialogue_to_messages, hh_pair, messages_to_dialogue, read_records, split_dialogue
from rlcustom.errors import DataError

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ASSISTANT = "\n\nAssistant:"
HUMAN = "\n\nHuman:"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)
records_st = st.lists(st.dictionaries(st.text(max_size=10), json_values, max_size=5), min_size=1, max_size=8)

# text that often looks like (bits of) HH dialogue
dialogue_text = st.one_of(
    st.text(max_size=30),
    st.lists(
        st.sampled_from(["Human", "Assistant", ":", " ", "\n", "\n\n", "a", "é", "x y", "\n\nHuman:", "\n\nAssistant:"]),
        max_size=12,
    ).map("".join),
)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    """One folder for the module (hypothesis dislikes function-scoped fixtures);
    each example overwrites its file."""
    return tmp_path_factory.mktemp("props")


def _one_line_located(msg: str, path: Path, nlines: int) -> None:
    assert "\n" not in msg and "\r" not in msg, msg
    if msg.startswith(f"{path}: "):  # a file-level problem: no records, not gzip, ...
        return
    m = re.match(re.escape(str(path)) + r":(\d+): \S", msg)
    assert m, msg
    assert 1 <= int(m.group(1)) <= max(nlines, 1), msg


# --------------------------------------------------------------------------- records


@SETTINGS
@given(records=records_st, blanks=st.lists(st.integers(0, 10), max_size=3), ensure_ascii=st.booleans(), gz=st.booleans())
def test_jsonl_round_trip(tmp, records, blanks, ensure_ascii, gz):
    lines = [json.dumps(r, ensure_ascii=ensure_ascii) for r in records]
    for at in blanks:  # blank lines are ignored
        lines.insert(min(at, len(lines)), "  ")
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path = tmp / ("r.jsonl.gz" if gz else "r.jsonl")
    path.write_bytes(gzip.compress(data) if gz else data)
    got, stats = read_records(path)
    assert got == records and stats.count == 0


@SETTINGS
@given(records=records_st, indent=st.sampled_from([None, 0, 2]))
def test_json_array_round_trip(tmp, records, indent):
    path = tmp / "r.json"
    path.write_text(json.dumps(records, indent=indent), encoding="utf-8")
    got, _ = read_records(path)
    assert got == records


garbage_line = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=40),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    json_values.map(json.dumps),
    st.dictionaries(st.text(max_size=5), json_values, max_size=3).map(json.dumps),
    st.sampled_from(["{", "[" * 3000, '{"a": 1', '{"a": NaN}', "1" * 5000, '"\\ud800"', "\ufeff{}", "\x00"]),
)


@SETTINGS
@given(lines=st.lists(garbage_line, min_size=0, max_size=8), skip=st.booleans())
def test_garbage_lines_parse_or_raise_located_data_error(tmp, lines, skip):
    raw = [ln.encode("utf-8", "surrogatepass") if isinstance(ln, str) else ln for ln in lines]
    path = tmp / "g.jsonl"
    path.write_bytes(b"\n".join(raw))
    try:
        records, stats = read_records(path, on_bad_record="skip" if skip else "error", required=())
    except DataError as e:
        _one_line_located(str(e), path, len(raw))
        if skip:
            assert str(e).startswith(f"{path}: no records")
        return
    assert records and all(isinstance(r, dict) for r in records)
    nonblank = sum(1 for b in raw if b.strip())
    assert len(records) + stats.count <= nonblank
    if not skip:
        assert stats.count == 0


@SETTINGS
@given(text=st.one_of(st.text(max_size=60), st.lists(garbage_line, max_size=4).map(lambda x: "\n".join(map(str, x)))),
       suffix=st.sampled_from([".json", ".jsonl", ".json.gz", ".parquet"]))
def test_garbage_files_raise_only_data_error(tmp, text, suffix):
    path = tmp / f"g{suffix}"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        records, _ = read_records(path, required=["prompt"])
    except DataError as e:
        _one_line_located(str(e), path, text.count("\n") + 1)
        return
    assert all(isinstance(r, dict) and isinstance(r["prompt"], str) for r in records)


# --------------------------------------------------------------------------- dialogues


def _dialogue(turns: list[str], reply: str) -> str:
    text = "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))
    if len(turns) % 2 == 0:  # make the reply an assistant turn
        return text + "\n\nAssistant: " + reply
    return text + "\n\nHuman: more\n\nAssistant: " + reply


@SETTINGS
@given(turns=st.lists(dialogue_text, max_size=6), reply=dialogue_text)
def test_split_dialogue_reconstructs(turns, reply):
    text = _dialogue(turns, reply)
    prompt, got = split_dialogue(text)
    assert prompt.endswith(ASSISTANT)
    rest = text[len(prompt) :]
    assert prompt + rest == text and rest.lstrip() == got
    assert ASSISTANT not in rest
    if ASSISTANT not in reply:
        assert got == reply.lstrip()
        if not reply[:1].isspace():
            assert prompt + " " + got == text


clean_content = (
    dialogue_text.map(str.strip)
    .filter(lambda s: s and HUMAN not in s and ASSISTANT not in s and not re.match(r"(Human|Assistant):", s))
)


@SETTINGS
@given(contents=st.lists(clean_content, min_size=1, max_size=6))
def test_messages_dialogue_round_trip(contents):
    if len(contents) % 2 == 0:
        contents = contents[:-1] or contents
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": c} for i, c in enumerate(contents)]
    text = messages_to_dialogue(messages)
    assert text.endswith(ASSISTANT)
    assert dialogue_to_messages(text) == messages


@SETTINGS
@given(contents=st.lists(clean_content, min_size=1, max_size=5), a=clean_content, b=clean_content)
def test_hh_pair_recovers_prompt_and_replies(contents, a, b):
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": c} for i, c in enumerate(contents)]
    if messages[-1]["role"] == "assistant":
        messages.append({"role": "user", "content": "and?"})
    prompt = messages_to_dialogue(messages)
    pair = hh_pair({"chosen": f"{prompt} {a}", "rejected": f"{prompt} {b}"})
    assert pair == {"prompt": prompt, "chosen": a, "rejected": b, "messages": messages}
