"""The one redaction (tracking.redact, also used by cluster jobs) and the atomic-write helpers."""
import os

import pytest

from rlcustom.fsutil import atomic_dir, atomic_write_text
from rlcustom.tracking import redact


def test_redact_masks_keys_env_secrets_and_given_literals(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "abc123")  # 6 chars: the shortest literal masked
    monkeypatch.setenv("MY_SECRET", "short")  # 5: left alone (would blank common words)
    out = redact({"token": "t", "cmd": ["run --key abc123 --x short", "file-tok-9f8e7d"]}, also=["file-tok-9f8e7d", None])
    assert out == {"token": "***", "cmd": ["run --key *** --x short", "***"]}
    assert redact("a file-tok-9f8e7d b") == "a file-tok-9f8e7d b"  # `also` is per call


def test_atomic_write_text_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    p = atomic_write_text(tmp_path / "d" / "x.json", "one")
    assert p.read_text() == "one"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(p, "two")
    assert p.read_text() == "one" and [q.name for q in p.parent.iterdir()] == ["x.json"]  # no temp file left


def test_atomic_dir_keeps_the_old_directory_when_writing_fails(tmp_path):
    final = atomic_dir(tmp_path / "m", lambda d: (d / "w.bin").write_text("v1"), marker=".complete")
    assert sorted(q.name for q in final.iterdir()) == [".complete", "w.bin"]

    def half(d):
        (d / "w.bin").write_text("v2")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        atomic_dir(final, half)
    assert (final / "w.bin").read_text() == "v1" and [q.name for q in tmp_path.iterdir()] == ["m"]
