"""Reading records (one JSON object each) from .jsonl, .jsonl.gz, .json and .parquet files.

Every problem is a :class:`~rlcustom.errors.DataError` whose message is one line naming
``{path}:{lineno}`` (for parquet files the 1-based row), e.g.::

    data/train.jsonl:3: invalid JSON (Expecting ',' delimiter at column 17)

With ``on_bad_record="skip"`` a bad record is skipped and counted in
:class:`BadRecordStats` instead; problems with the file as a whole (missing, not
gzip, unparseable ``.json`` document, no records at all) are always errors.
"""
from __future__ import annotations

import gzip
import json
import os
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from rlcustom.errors import DataError

__all__ = [
    "BadRecordStats",
    "RecordError",
    "read_records",
    "read_records_with_lines",
    "json_type_name",
    "one_line",
]

#: File name endings :func:`read_records` understands (matched case-insensitively).
SUPPORTED_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".json", ".json.gz", ".parquet")

ON_BAD_RECORD = ("error", "skip")


class RecordError(ValueError):
    """Why one record is unusable, without its location.

    Raised by per-record converters (e.g. :func:`rlcustom.data.hh.hh_pair`); the
    caller that knows ``file:line`` turns it into a :class:`DataError` or skips it.
    """


def one_line(text: Any) -> str:
    """``str(text)`` squeezed onto one line (newlines shown as ``\\n``)."""
    s = str(text)
    return s.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def json_type_name(value: Any) -> str:
    """The JSON-ish name of ``value``'s type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


@dataclass
class BadRecordStats:
    """Bad records skipped while reading (``on_bad_record="skip"``).

    ``count`` is how many; ``examples`` the first ``max_examples`` as
    ``"file:line: reason"`` strings.
    """

    count: int = 0
    examples: list[str] = field(default_factory=list)
    max_examples: int = 5

    def add(self, where: str, reason: str) -> None:
        self.count += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{where}: {one_line(reason)}")

    def merge(self, other: "BadRecordStats") -> None:
        self.count += other.count
        room = self.max_examples - len(self.examples)
        if room > 0:
            self.examples.extend(other.examples[:room])

    def __bool__(self) -> bool:
        return self.count > 0

    def summary(self) -> str:
        """One line: ``skipped N bad record(s) (first: file:line: reason)``."""
        if not self.count:
            return "no bad records"
        noun = "record" if self.count == 1 else "records"
        first = f" (first: {self.examples[0]})" if self.examples else ""
        return f"skipped {self.count} bad {noun}{first}"


class BadRecordPolicy:
    """Applies ``on_bad_record``: raise a one-line ``DataError`` or skip and count."""

    def __init__(self, path: Any, on_bad_record: str, stats: BadRecordStats | None = None):
        if on_bad_record not in ON_BAD_RECORD:
            raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
        self.path = str(path)
        self.skip = on_bad_record == "skip"
        self.stats = stats if stats is not None else BadRecordStats()

    def bad(self, lineno: int, reason: str) -> None:
        """Record a bad record at ``lineno``; raises unless skipping."""
        where = f"{self.path}:{lineno}"
        if not self.skip:
            raise DataError(f"{where}: {one_line(reason)}")
        self.stats.add(where, reason)

    def no_records(self) -> DataError:
        msg = f"{self.path}: no records"
        if self.stats.count:
            msg += f" ({self.stats.summary()})"
        return DataError(msg)


def _suffix(path: str) -> str | None:
    low = path.lower()
    # longest first, so ".jsonl.gz" wins over ".gz"-less ".jsonl" etc.
    for suf in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if low.endswith(suf):
            return suf
    return None


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, not a data file")


def _read_bytes(path: str, gz: bool) -> bytes:
    try:
        if gz:
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a valid gzip file ({one_line(e)})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({one_line(e.strerror or e)})") from None


def _decode_line(raw: bytes, first: bool) -> str:
    if first and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    return raw.decode("utf-8")


def _json_error_reason(e: Exception) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"invalid JSON ({e.msg} at column {e.colno})"
    if isinstance(e, RecursionError):
        return "invalid JSON (nested too deeply)"
    return f"invalid JSON ({one_line(e)})"


def _check_record(obj: Any, required: Sequence[str]) -> str | None:
    """The reason ``obj`` is not a usable record, or None."""
    if not isinstance(obj, dict):
        return "record is not an object"
    for name in required:
        if name not in obj:
            return f"missing field {name!r}"
        value = obj[name]
        if not isinstance(value, str):
            return f"field {name!r} must be a string, got {json_type_name(value)}"
    return None


def _iter_jsonl(path: str, data: bytes) -> Iterator[tuple[int, Any, str | None]]:
    """Yield ``(lineno, obj, reason)``: reason is set (and obj None) for unparseable lines."""
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = _decode_line(raw, lineno == 1)
        except UnicodeDecodeError as e:
            yield lineno, None, f"invalid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1})"
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:
            yield lineno, None, _json_error_reason(e)
            continue
        yield lineno, obj, None


_WS = " \t\r\n"


def _iter_json_array(path: str, text: str) -> Iterator[tuple[int, Any, str | None]]:
    """Yield ``(lineno, obj, None)`` per element of a top-level JSON array, with the line
    each element starts on. Syntax errors are fatal (the rest cannot be re-synchronised)."""
    decoder = json.JSONDecoder()
    n = len(text)

    def skip_ws(i: int) -> int:
        while i < n and text[i] in _WS:
            i += 1
        return i

    def fatal(i: int, msg: str) -> DataError:
        lineno = text.count("\n", 0, i) + 1
        col = i - (text.rfind("\n", 0, i) + 1) + 1
        return DataError(f"{path}:{lineno}: invalid JSON ({msg} at column {col})")

    i = skip_ws(0)  # caller checked text[i] == "["
    i = skip_ws(i + 1)
    if i < n and text[i] == "]":
        i = skip_ws(i + 1)
        if i != n:
            raise fatal(i, "Extra data")
        return
    while True:
        if i >= n:
            raise fatal(i, "Expecting value")
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: {_json_error_reason(e)}") from None
        except (ValueError, RecursionError) as e:
            raise DataError(f"{path}:{text.count(chr(10), 0, i) + 1}: {_json_error_reason(e)}") from None
        yield text.count("\n", 0, i) + 1, obj, None
        i = skip_ws(end)
        if i < n and text[i] == ",":
            i = skip_ws(i + 1)
            continue
        if i < n and text[i] == "]":
            i = skip_ws(i + 1)
            if i != n:
                raise fatal(i, "Extra data")
            return
        raise fatal(i, "Expecting ',' delimiter")


def _iter_json(path: str, data: bytes) -> Iterator[tuple[int, Any, str | None]]:
    """A ``.json`` file: an array of objects, a single object, or (as Hugging Face
    datasets allows) JSON Lines under a ``.json`` name."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        lineno = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{lineno}: invalid UTF-8 (byte 0x{data[e.start]:02x})") from None
    stripped = text.lstrip(_WS)
    if not stripped:
        return
    if stripped[0] == "[":
        yield from _iter_json_array(path, text)
        return
    if stripped[0] == "{":
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            # not one document: JSON Lines under a .json name
            yield from _iter_jsonl(path, data)
            return
        yield text.count("\n", 0, len(text) - len(stripped)) + 1, obj, None
        return
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: {_json_error_reason(e)}") from None
    except (ValueError, RecursionError) as e:
        raise DataError(f"{path}:1: {_json_error_reason(e)}") from None
    raise DataError(f"{path}:1: expected a JSON array of objects, got {json_type_name(obj)}")


def _iter_parquet(path: str) -> Iterator[tuple[int, Any, str | None]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with datasets
        raise DataError(f"{path}: reading .parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(path)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({one_line(e)})") from None
    except Exception as e:  # pyarrow.ArrowInvalid and friends
        raise DataError(f"{path}: not a valid parquet file ({one_line(e)})") from None
    for row, obj in enumerate(table.to_pylist(), start=1):
        yield row, obj, None


def read_records_with_lines(
    path: str | os.PathLike,
    *,
    on_bad_record: str = "error",
    required: Sequence[str] = (),
    stats: BadRecordStats | None = None,
) -> tuple[list[tuple[int, dict]], BadRecordStats]:
    """Like :func:`read_records`, but each record comes with its line number
    (1-based; the row for parquet): ``([(lineno, record), ...], stats)``."""
    p = os.fspath(path)
    policy = BadRecordPolicy(p, on_bad_record, stats)
    if isinstance(required, str):
        required = (required,)
    suffix = _suffix(p)
    _check_file(p)
    if suffix is None:
        raise DataError(
            f"{p}: unsupported file type; expected one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if suffix == ".parquet":
        items = _iter_parquet(p)
    elif suffix in (".json", ".json.gz"):
        items = _iter_json(p, _read_bytes(p, suffix.endswith(".gz")))
    else:
        items = _iter_jsonl(p, _read_bytes(p, suffix.endswith(".gz")))

    out: list[tuple[int, dict]] = []
    for lineno, obj, reason in items:
        if reason is None:
            reason = _check_record(obj, required)
        if reason is not None:
            policy.bad(lineno, reason)
            continue
        out.append((lineno, obj))
    if not out:
        raise policy.no_records()
    return out, policy.stats


def read_records(
    path: str | os.PathLike,
    *,
    on_bad_record: str = "error",
    required: Sequence[str] = (),
) -> tuple[list[dict], BadRecordStats]:
    """Read the records (JSON objects) of a ``.jsonl``, ``.jsonl.gz``, ``.json``
    (an array of objects) or ``.parquet`` file.

    ``required`` names fields every record must have, each a string. Blank lines are
    ignored. A bad record raises ``DataError("{path}:{lineno}: {reason}")``, or with
    ``on_bad_record="skip"`` is skipped and counted in the returned
    :class:`BadRecordStats`. A missing file raises ``DataError("{path}: no such file")``;
    a file without (valid) records ``DataError("{path}: no records")``.
    """
    pairs, stats = read_records_with_lines(path, on_bad_record=on_bad_record, required=required)
    return [rec for _, rec in pairs], stats
