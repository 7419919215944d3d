"""read_records: formats, one-line ``file:line`` errors, skip mode."""
from __future__ import annotations

import gzip
import json

import pytest

from rlcustom.data import BadRecordStats, read_records, read_records_with_lines
from rlcustom.errors import DataError

GOOD = [{"prompt": "hi", "chosen": "a", "rejected": "b"}, {"prompt": "yo", "chosen": "c", "rejected": "d"}]


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def corrupt_file(tmp_path):
    # line 3 is bad JSON (missing comma)
    return write_lines(
        tmp_path / "pairs.jsonl",
        [json.dumps(GOOD[0]), json.dumps(GOOD[1]), '{"prompt": "x" "chosen": "y"}', json.dumps(GOOD[0])],
    )


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and "\r" not in msg, msg
    return msg


def test_jsonl_roundtrip_and_blank_lines(tmp_path):
    p = write_lines(tmp_path / "a.jsonl", ["", json.dumps(GOOD[0]), "   ", json.dumps(GOOD[1]), ""])
    records, stats = read_records(p, required=["prompt", "chosen"])
    assert records == GOOD
    assert stats.count == 0 and not stats


def test_line_numbers_count_blank_lines(tmp_path):
    p = write_lines(tmp_path / "a.jsonl", ["", json.dumps(GOOD[0]), "", "[1, 2]"])
    with pytest.raises(DataError) as ei:
        read_records(p)
    assert one_line_error(ei) == f"{p}:4: record is not an object"
    pairs, _ = read_records_with_lines(p, on_bad_record="skip")
    assert pairs == [(2, GOOD[0])]


def test_jsonl_gz(tmp_path):
    p = tmp_path / "a.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        for r in GOOD:
            f.write(json.dumps(r) + "\n")
    records, _ = read_records(p)
    assert records == GOOD


def test_not_gzip(tmp_path):
    p = tmp_path / "a.jsonl.gz"
    p.write_text(json.dumps(GOOD[0]))
    with pytest.raises(DataError) as ei:
        read_records(p)
    assert one_line_error(ei).startswith(f"{p}: not a valid gzip file")


def test_corrupt_line_is_one_line_error_naming_line_3(tmp_path):
    p = corrupt_file(tmp_path)
    with pytest.raises(DataError) as ei:
        read_records(p)
    msg = one_line_error(ei)
    assert msg.startswith(f"{p}:3:")
    assert msg == f"{p}:3: invalid JSON (Expecting ',' delimiter at column 16)"


def test_skip_mode_counts_bad_lines(tmp_path):
    p = corrupt_file(tmp_path)
    records, stats = read_records(p, on_bad_record="skip")
    assert records == [GOOD[0], GOOD[1], GOOD[0]]
    assert isinstance(stats, BadRecordStats)
    assert stats.count == 1
    assert stats.examples == [f"{p}:3: invalid JSON (Expecting ',' delimiter at column 16)"]
    assert stats.summary().startswith("skipped 1 bad record (first: ")


def test_skip_mode_keeps_first_few_examples(tmp_path):
    p = write_lines(tmp_path / "a.jsonl", ["nope"] * 12 + [json.dumps(GOOD[0])])
    records, stats = read_records(p, on_bad_record="skip")
    assert records == [GOOD[0]] and stats.count == 12
    assert stats.examples == [f"{p}:{i}: invalid JSON (Expecting value at column 1)" for i in range(1, 6)]


def test_missing_field_is_named(tmp_path):
    p = write_lines(tmp_path / "a.jsonl", [json.dumps(GOOD[0]), json.dumps({"prompt": "x", "rejected": "r"})])
    with pytest.raises(DataError) as ei:
        read_records(p, required=("prompt", "chosen"))
    assert one_line_error(ei) == f"{p}:2: missing field 'chosen'"


def test_wrong_field_type_is_named(tmp_path):
    p = write_lines(tmp_path / "a.jsonl", [json.dumps({"prompt": 3})])
    with pytest.raises(DataError) as ei:
        read_records(p, required=["prompt"])
    assert one_line_error(ei) == f"{p}:1: field 'prompt' must be a string, got int"


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("")
    with pytest.raises(DataError) as ei:
        read_records(p)
    assert one_line_error(ei) == f"{p}: no records"
    q = write_lines(tmp_path / "blank.jsonl", ["", "  ", ""])
    with pytest.raises(DataError, match="no records"):
        read_records(q)


def test_all_bad_in_skip_mode_is_no_records(tmp_path):
    p = write_lines(tmp_path / "a.jsonl", ["nope", "[]"])
    with pytest.raises(DataError) as ei:
        read_records(p, on_bad_record="skip")
    msg = one_line_error(ei)
    assert msg.startswith(f"{p}: no records (skipped 2 bad records")


def test_missing_file(tmp_path):
    p = tmp_path / "nope.jsonl"
    with pytest.raises(DataError) as ei:
        read_records(p)
    assert one_line_error(ei) == f"{p}: no such file"


def test_unsupported_suffix(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("a,b\n")
    with pytest.raises(DataError, match=r"unsupported file type"):
        read_records(p)


def test_invalid_utf8_line(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(json.dumps(GOOD[0]).encode() + b"\n" + b'{"prompt": "\xff"}\n')
    with pytest.raises(DataError) as ei:
        read_records(p)
    assert one_line_error(ei).startswith(f"{p}:2: invalid UTF-8")
    records, stats = read_records(p, on_bad_record="skip")
    assert records == [GOOD[0]] and stats.count == 1


def test_bom_is_ignored(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD[0]).encode() + b"\n")
    assert read_records(p)[0] == [GOOD[0]]


def test_json_array_with_line_numbers(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps(GOOD, indent=2))
    records, _ = read_records(p, required=["prompt"])
    assert records == GOOD
    p.write_text('[\n  {"prompt": "a"},\n  {"prompt": "b"},\n  {"nope": 1}\n]\n')
    with pytest.raises(DataError) as ei:
        read_records(p, required=["prompt"])
    assert one_line_error(ei) == f"{p}:4: missing field 'prompt'"
    records, stats = read_records(p, required=["prompt"], on_bad_record="skip")
    assert records == [{"prompt": "a"}, {"prompt": "b"}] and stats.count == 1


def test_json_syntax_error_names_line(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('[\n  {"prompt": "a"},\n  {"prompt": "b" "x": 1}\n]\n')
    for mode in ("error", "skip"):  # a broken document cannot be skipped past
        with pytest.raises(DataError) as ei:
            read_records(p, on_bad_record=mode)
        assert one_line_error(ei).startswith(f"{p}:3: invalid JSON (Expecting ',' delimiter")


def test_json_other_shapes(tmp_path):
    p = tmp_path / "a.json"
    p.write_text("[]")
    with pytest.raises(DataError, match=r": no records$"):
        read_records(p)
    p.write_text('"hello"')
    with pytest.raises(DataError) as ei:
        read_records(p)
    assert one_line_error(ei) == f"{p}:1: expected a JSON array of objects, got string"
    p.write_text(json.dumps(GOOD[0], indent=2))  # a single object
    assert read_records(p)[0] == [GOOD[0]]
    p.write_text("\n".join(json.dumps(r) for r in GOOD))  # JSON Lines under a .json name
    assert read_records(p)[0] == GOOD


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(GOOD), p)
    records, _ = read_records(p, required=["prompt", "chosen", "rejected"])
    assert records == GOOD
    pq.write_table(pa.Table.from_pylist([{"prompt": "a"}, {"prompt": None}]), p)
    with pytest.raises(DataError) as ei:
        read_records(p, required=["prompt"])
    assert one_line_error(ei) == f"{p}:2: field 'prompt' must be a string, got null"


def test_not_parquet(tmp_path):
    p = tmp_path / "a.parquet"
    p.write_text("not parquet")
    with pytest.raises(DataError) as ei:
        read_records(p)
    assert one_line_error(ei).startswith(f"{p}: not a valid parquet file")


def test_bad_on_bad_record_value(tmp_path):
    p = write_lines(tmp_path / "a.jsonl", [json.dumps(GOOD[0])])
    with pytest.raises(ValueError, match="on_bad_record"):
        read_records(p, on_bad_record="ignore")
