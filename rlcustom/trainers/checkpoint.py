"""Atomic checkpoints: write into ``.tmp-step_N``, then rename; a crash mid-write
leaves the previous checkpoint intact and ``latest`` pointing at it.

Layout of ``OUTPUT_DIR/checkpoints/step_000010/``::

    trainer_state.json    step, data position, trainer state (KL coef, EMAs...), RNG seeds, W&B run id,
                          identity (model fingerprint, adapter, trainer, settings that must match on resume)
    learner/              written by the learner actors (safetensors weights, optimizer per rank)
    value/ ...            one folder per stateful role

A checkpoint is *complete* when its ``trainer_state.json`` parses and names its step. ``latest`` that is
missing, dangling or corrupt falls back to the newest complete checkpoint (and says so); pruning
(``keep_checkpoints``) only ever removes complete checkpoints older than the newest ``keep``, never the one the
run resumed from (:meth:`load_state` marks it) nor the newest complete one.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

_STEP = re.compile(r"^step_(\d+)$")
_SAID: set[str] = set()  # notes already printed in this process (preflight and the trainer both look)


def _note(msg: str) -> None:
    if msg not in _SAID:
        _SAID.add(msg)
        print(f"[rlcustom] {msg}", flush=True)


def read_state(path: Path) -> dict[str, Any] | None:
    """``trainer_state.json`` of a checkpoint, or None when it is missing or not a complete state."""
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        return None
    return state


class CheckpointManager:
    def __init__(self, output_dir: str | Path, keep: int = 2, note: Callable[[str], None] = _note) -> None:
        self.root = Path(output_dir) / "checkpoints"
        self.keep = keep
        self.note = note
        self.protect: set[str] = set()  # checkpoint names pruning must leave alone (the one resumed from)

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first (by step number)."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir() if (m := _STEP.match(p.name)) and p.is_dir()]
        return [p for _, p in sorted(found) if read_state(p) is not None]

    def latest(self) -> Path | None:
        """The checkpoint ``latest`` names; if that is missing, dangling or incomplete, the newest complete one."""
        ptr = self.root / "latest"
        target = None
        if ptr.is_file():
            try:
                name = ptr.read_text().strip()
            except (OSError, UnicodeDecodeError):
                name = ""
            target = self.root / name if name and "/" not in name and name not in (".", "..") else None
            if target is not None and (target / "trainer_state.json").is_file():
                return target
        done = self.complete()
        if not done:
            return None
        why = ("is missing" if not ptr.exists() else f"points to a missing checkpoint ({target.name})"
               if target is not None and not target.exists() else
               f"points to an incomplete checkpoint ({target.name}: no trainer_state.json)" if target is not None
               else "is corrupt")
        self.note(f"resume: {ptr} {why}; using the newest complete checkpoint {done[-1]}")
        return done[-1]

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
            ptr_tmp = self.root / ".latest.tmp"
            ptr_tmp.write_text(name + "\n")
            os.replace(ptr_tmp, self.root / "latest")  # the pointer moves only after the data is whole
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._prune(keep_name=name)
        return final

    def load_state(self, path: Path) -> dict[str, Any]:
        """The checkpoint's state; ``path`` is then never pruned by this run."""
        state = json.loads((Path(path) / "trainer_state.json").read_text())
        if Path(path).parent.resolve() == self.root.resolve():
            self.protect.add(Path(path).name)
        return state

    def _prune(self, keep_name: str) -> None:
        done = self.complete()
        if not done:
            return
        keep = {p.name for p in done[-self.keep:]} | {keep_name, done[-1].name} | self.protect
        for p in done:
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)
