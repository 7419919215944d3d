"""Atomic writes: a file or a directory appears whole or not at all (a crash mid-write leaves the old one).

Both write beside the target (same filesystem, so the final ``os.replace`` is a rename) and clean up
after a failure.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file beside it, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_dir(final: str | Path, write: Callable[[Path], None], *, marker: str | None = None) -> Path:
    """``write(tmp_dir)`` fills a temporary directory beside ``final``, which then replaces ``final``.
    ``marker``: a file written last inside it (e.g. ``.complete``), for readers that check completeness."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".", dir=final.parent))
    try:
        write(tmp)
        if marker:
            (tmp / marker).write_text("ok\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
