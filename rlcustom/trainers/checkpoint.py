"""Atomic checkpoints: write into ``.tmp-step_N``, then rename; a crash mid-write
leaves the previous checkpoint intact and ``latest`` pointing at it.

Layout of ``OUTPUT_DIR/checkpoints/step_000010/``::

    trainer_state.json    step, data position, trainer state (KL coef, EMAs...), RNG seeds, W&B run id
    learner/              written by the learner actors (safetensors weights, optimizer per rank)
    value/ ...            one folder per stateful role
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from rlcustom.fsutil import atomic_write_text


class CheckpointManager:
    def __init__(self, output_dir: str | Path, keep: int = 2) -> None:
        self.root = Path(output_dir) / "checkpoints"
        self.keep = keep

    def latest(self) -> Path | None:
        ptr = self.root / "latest"
        if not ptr.is_file():
            return None
        path = self.root / ptr.read_text().strip()
        return path if (path / "trainer_state.json").is_file() else None

    def save(self, step: int, state: dict[str, Any], write_roles: Callable[[Path], None]) -> Path:
        """``write_roles(tmp_dir)`` lets each stateful role write its files; then commit."""
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"step_{step:06d}"
        tmp = self.root / f".tmp-{name}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            write_roles(tmp)
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2, default=float))
            final = self.root / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            atomic_write_text(self.root / "latest", name + "\n")  # the pointer moves only after the data is whole
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._prune(keep_name=name)
        return final

    def load_state(self, path: Path) -> dict[str, Any]:
        return json.loads((path / "trainer_state.json").read_text())

    def _prune(self, keep_name: str) -> None:
        done = sorted(p for p in self.root.glob("step_*") if p.is_dir())
        for p in done[: max(0, len(done) - self.keep)]:
            if p.name != keep_name:
                shutil.rmtree(p, ignore_errors=True)
