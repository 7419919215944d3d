"""W&B tracking: offline unless ``WANDB_API_KEY`` is set, ``finish()`` on every exit path.

    with Tracker(cfg.tracking, run_dir, config=to_dict(cfg)) as tr:
        tr.log({"reward/mean": 0.3}, step=1)
        tr.log_samples(step, prompts, texts, rewards)

Secrets: the API key is read by wandb from the environment only; configs and
metrics are scrubbed of keys that look like secrets before they are logged.
"""
from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

# whole name parts only: WANDB_API_KEY, HF_TOKEN, db.password -- not TOKENIZERS_PARALLELISM
SECRET_KEY = re.compile(r"(^|[_\-.])(api[_-]?key|token|secret|password|passwd|credentials?|auth)($|[_\-.])", re.I)
NAMESPACES = ("rollout/", "train/", "reward/", "constraint/", "timing/", "system/", "eval/", "value/", "kl/")


MIN_SECRET_LEN = 6  # a shorter literal "secret" would blank every occurrence of a common string


def redact(obj: Any, *, also: Sequence[str | None] = ()) -> Any:
    """The one redaction: values under secret-looking keys become '***', and so does every literal secret
    inside strings -- the values of env vars with secret-looking names (``WANDB_API_KEY``, ``RAY_AUTH_TOKEN``,
    ...) and ``also`` (e.g. a token read from a file) -- in mappings, lists and strings, at any depth.
    Literals shorter than :data:`MIN_SECRET_LEN` are left alone."""
    found = {v for k, v in os.environ.items() if SECRET_KEY.search(k)} | {s for s in also if s}
    secrets = sorted((s for s in found if len(s) >= MIN_SECRET_LEN), key=len, reverse=True)

    def walk(o: Any) -> Any:
        if isinstance(o, Mapping):
            return {k: ("***" if SECRET_KEY.search(str(k)) else walk(v)) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [walk(v) for v in o]
        if isinstance(o, str):
            for s in secrets:
                o = o.replace(s, "***")
        return o

    return walk(obj)


def resolve_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return mode


class Tracker:
    """A context manager around one W&B run (or none when mode is 'disabled')."""

    def __init__(self, tracking, run_dir: str | Path, config: Mapping[str, Any] | None = None,
                 run_id: str | None = None, handle_signals: bool = True) -> None:
        self.cfg = tracking
        self.run_dir = Path(run_dir)
        self.mode = resolve_mode(tracking.mode)
        self.run = None
        self.history: list[dict[str, Any]] = []  # kept for the console summary
        from rlcustom.metrics_record import MetricsRecord

        self.record = MetricsRecord(self.run_dir)  # run_dir/metrics.jsonl, whatever the W&B mode
        self._config = redact(dict(config or {}))
        self._run_id = run_id
        self.handle_signals = handle_signals  # off when the caller (a trainer) handles SIGTERM itself

    # -- lifecycle -------------------------------------------------------------
    def __enter__(self) -> "Tracker":
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)

    def start(self) -> None:
        if self.mode == "disabled" or self.run is not None:
            return
        import wandb

        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            project=self.cfg.project, name=redact(self.cfg.name), group=redact(self.cfg.group),
            tags=redact(list(self.cfg.tags)) or None,
            dir=str(self.run_dir), mode=self.mode, config=self._config, id=self._run_id,
            resume="allow" if self._run_id else None, settings=wandb.Settings(console="off"),
        )
        self._run_id = self.run.id
        # SIGTERM: finish the run before the process dies (Ctrl-C arrives as KeyboardInterrupt -> __exit__).
        for sig in ((signal.SIGTERM,) if self.handle_signals else ()):
            try:
                prev = signal.getsignal(sig)
                signal.signal(sig, lambda s, f, prev=prev: self._on_signal(s, f, prev))
            except ValueError:  # not the main thread
                pass

    def _on_signal(self, signum, frame, prev) -> None:
        self.finish(exit_code=128 + signum)
        if callable(prev):
            prev(signum, frame)
        raise SystemExit(128 + signum)

    @property
    def run_id(self) -> str | None:
        return self._run_id

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            run.finish(exit_code=exit_code)

    # -- logging ---------------------------------------------------------------
    def log(self, metrics: Mapping[str, float], step: int) -> None:
        row = {k: float(v) for k, v in metrics.items() if _is_number(v)}
        self.history.append({"step": step, **row})
        self.record.log(row, step)
        if self.run is not None:
            self.run.log(row, step=step)

    def log_samples(self, step: int, prompts: Sequence[str], completions: Sequence[str],
                    rewards: Sequence[float] | None = None, key: str = "samples") -> None:
        if self.run is None:
            return
        import wandb

        cols = ["step", "prompt", "completion"] + (["reward"] if rewards is not None else [])
        table = wandb.Table(columns=cols)
        for i, (p, c) in enumerate(zip(prompts, completions)):
            row = [step, redact(p), redact(c)] + ([float(rewards[i])] if rewards is not None else [])
            table.add_data(*row)
        self.run.log({key: table}, step=step)

    def log_artifact(self, path: str | Path, name: str, kind: str = "checkpoint") -> None:
        """A directory as a W&B artifact (offline runs keep it for ``wandb sync``)."""
        if self.run is None:
            return
        import wandb

        art = wandb.Artifact(name=name, type=kind)
        art.add_dir(str(path))
        self.run.log_artifact(art)

    def summary_line(self) -> str:
        if self.run is None and self.mode == "disabled":
            return "W&B: disabled"
        where = str(self.run_dir / "wandb")
        if self.mode == "offline":
            return f"W&B: offline run in {where}  (upload with: wandb sync {where}/offline-run-*)"
        return f"W&B: online run {self._run_id} (project {self.cfg.project})"


def _is_number(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def progress(iterable=None, **kw):
    """tqdm progress bar to stderr; quiet when not attached to a terminal and CI is set."""
    from tqdm.auto import tqdm

    kw.setdefault("file", sys.stderr)
    kw.setdefault("dynamic_ncols", True)
    kw.setdefault("mininterval", 1.0)
    return tqdm(iterable, **kw)


def read_offline_run(run_dir: str | Path, wait_s: float = 10.0) -> dict[str, Any]:
    """Read back an offline W&B run directory: history rows, config, table files, and the exit code
    recorded by ``finish()`` (None if the run was never finished).

    wandb-core writes the log from its own process: right after ``finish()`` returns, the tail
    of the file (history rows and the exit record) can still be in its buffers (seen on a loaded
    machine). The exit record is written last, so the reader waits up to ``wait_s`` seconds for it;
    a run that never finished (killed) is read as it is after that."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        out = _read_offline_run_once(Path(run_dir))
        if out["exit_code"] is not None or time.monotonic() >= deadline:
            return out
        time.sleep(0.1)


def _read_offline_run_once(run_dir: Path) -> dict[str, Any]:
    import json

    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("run-*.wandb")
    history, config, exit_code = [], {}, None
    for data in _leveldb_log_records(path.read_bytes()):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "exit":
            exit_code = rec.exit.exit_code
        elif kind in ("config", "run"):
            updates = rec.config.update if kind == "config" else rec.run.config.update
            for i in updates:
                config[i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
    tables = sorted(str(p) for p in run_dir.glob("files/media/table/*.table.json"))
    return {"history": history, "config": config, "tables": tables, "exit_code": exit_code}


def _leveldb_log_records(buf: bytes):
    """Records of a W&B transaction log: a 7-byte ':W&B' header, then LevelDB log format
    (32 KiB blocks; each chunk: crc32c u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last)."""
    import struct

    if buf[:4] != b":W&B":
        raise ValueError("not a W&B transaction log")
    block, pos, parts = 32768, 7, []
    while pos + 7 <= len(buf):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack_from("<IHB", buf, pos)
        if kind == 0 and length == 0:  # zero padding
            pos += block - pos % block
            continue
        data = buf[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield data
        elif kind == 2:
            parts = [data]
        elif kind == 3:
            parts.append(data)
        elif kind == 4:
            parts.append(data)
            yield b"".join(parts)
            parts = []
