"""Property tests for the prompt loader on random, partly corrupt JSONL: with
``on_bad_record=skip`` every non-blank line is either a prompt or counted as bad; with
``error`` the load fails exactly when some line is bad, naming ``file:line`` of a bad one (JSON syntax is
checked over the whole file before fields, so it need not be the first)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlcustom.data.loaders import load_prompts
from rlcustom.errors import DataError

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

good = st.sampled_from([{"prompt": "Say hi."}, {"prompt": "\n\nHuman: hello\n\nAssistant:"},
                        {"prompt": [{"role": "user", "content": "x"}]}, {"prompt": "a", "extra": 1}])
bad_record = st.sampled_from([{"question": "x"}, {"prompt": ""}, {"prompt": 3}, {"prompt": None},
                              {"prompt": [{"role": "assistant", "content": "x"}]}, {"prompt": [{"role": 1}]},
                              {"prompt": "\ud800"}, {"chosen": 5}])
bad_line = st.sampled_from(["{", "not json", "[1, 2]", '"a string"', "null", '{"prompt": "a"', "\x00"])
line = st.one_of(good.map(json.dumps), bad_record.map(lambda r: json.dumps(r, ensure_ascii=True)), bad_line,
                 st.just(""))


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("loader_props")


def _alone_is_good(tmp: Path, text: str) -> bool:
    p = tmp / "one.jsonl"
    p.write_text(text + "\n", encoding="utf-8")
    try:
        load_prompts(str(p), split="all")
        return True
    except DataError:
        return False


@SETTINGS
@given(lines=st.lists(line, min_size=1, max_size=8))
def test_corrupt_lines_are_skipped_and_counted_or_named(tmp, lines):
    p = tmp / "p.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    nonblank = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip()]
    verdict = {n: _alone_is_good(tmp, ln) for n, ln in nonblank}
    n_good = sum(verdict.values())
    bad_lines = {n for n, ok in verdict.items() if not ok}

    try:  # skip mode: every non-blank line is a prompt or counted
        ds, stats = load_prompts(str(p), split="all", on_bad_record="skip", return_stats=True)
        assert len(ds) == n_good and stats.count == len(nonblank) - n_good
        assert all(isinstance(r, str) and r for r in ds["prompt"])
    except DataError as e:
        assert n_good == 0 and "\n" not in str(e) and str(e).startswith(f"{p}: "), str(e)

    try:  # error mode: fails iff a line is bad, at the first bad line
        ds = load_prompts(str(p), split="all")
        assert not bad_lines and len(ds) == n_good
    except DataError as e:
        msg = str(e)
        assert "\n" not in msg, msg
        if not bad_lines:
            assert n_good == 0 and msg.startswith(f"{p}: "), msg  # an empty file
        else:
            named = msg[len(str(p)) + 1:].split(":", 1)[0]
            assert msg.startswith(f"{p}:") and named.isdigit() and int(named) in bad_lines, msg
