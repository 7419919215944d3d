"""Whole optimizer steps, one side at a time (not a benchmark itself: leading underscore).

A *side* is a training process that stays alive for the whole comparison and runs one optimizer step
each time the parent asks, then blocks. The parent (:func:`alternate`) asks the sides in turn,
A B A B ... (a *round* is one step of each side), drops the warm-up rounds and stops after ``rounds``
measured rounds, or earlier once every side's and every ratio's spread is under a target. All sides are
alive at once but only one computes at a time, so a drift in the machine's load lands on every side
alike, and each ratio is taken within a round (:func:`ratio_rounds`).

The protocol, over two pipes the parent passes to the child (``RLCUSTOM_BENCH_FDS="cmd_fd,result_fd"``;
the child's stdout and stderr go to a log file, so library output never mixes with it):

* child -> parent: one JSON object per line: ``{"ready": true, ...}`` once set up, then one object per
  step (``wall_s``, phase seconds, ...); ``{"error": "..."}`` when it fails.
* parent -> child: ``step`` (run one step) or ``stop`` (exit).

The child's half is :class:`Channel` (``wait()`` raises :class:`StopBench` on ``stop`` or a closed pipe).
"""
from __future__ import annotations

import json
import os
import re
import select
import signal
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Protocol

FDS_ENV = "RLCUSTOM_BENCH_FDS"


class StopBench(Exception):
    """The parent said ``stop`` (or went away): leave the training loop and exit."""


class SideError(RuntimeError):
    """A side failed to start or to finish a step (the message ends with its log's last line)."""


# ----------------------------------------------------------------------------- child


class Channel:
    """The child's end: ``send`` a JSON line to the parent, ``wait`` for its next command."""

    def __init__(self) -> None:
        cmd_fd, res_fd = (int(x) for x in os.environ[FDS_ENV].split(","))
        self._cmd = os.fdopen(cmd_fd, "r")
        self._out = os.fdopen(res_fd, "w")

    def send(self, msg: dict) -> None:
        self._out.write(json.dumps(msg) + "\n")
        self._out.flush()

    def wait(self) -> str:
        """Block until the parent's next command; ``step`` returns, ``stop`` (or EOF) raises :class:`StopBench`."""
        line = self._cmd.readline().strip()
        if line != "step":
            raise StopBench(line or "parent closed the pipe")
        return line


# ----------------------------------------------------------------------------- parent


class Stepper(Protocol):
    name: str
    error: str | None

    def step(self) -> dict: ...


class Side:
    """A child process run as ``argv`` (with ``env``), driven one step at a time."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, cwd: str | None = None,
                 start_timeout_s: float = 900.0, step_timeout_s: float = 900.0) -> None:
        self.name, self.argv, self.env, self.log, self.cwd = name, argv, env, log, cwd
        self.start_timeout_s, self.step_timeout_s = start_timeout_s, step_timeout_s
        self.error: str | None = None
        self.ready: dict = {}
        self.proc: subprocess.Popen | None = None
        self._buf = b""

    def start(self) -> dict:
        """Start the child and wait for its ``ready`` line (its set-up: model loading, Ray, ...)."""
        cmd_r, cmd_w = os.pipe()
        res_r, res_w = os.pipe()
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(self.argv, env=dict(self.env, **{FDS_ENV: f"{cmd_r},{res_w}"}),
                                         cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, pass_fds=(cmd_r, res_w), start_new_session=True)
        os.close(cmd_r)
        os.close(res_w)
        self._cmd, self._res = os.fdopen(cmd_w, "w"), res_r
        try:
            self.ready = self._recv(self.start_timeout_s)
        except SideError as e:
            self.error = f"start: {e}"
            self.close()
        return self.ready

    def step(self) -> dict:
        """One optimizer step of the child: its JSON line (``wall_s``, phases, ...)."""
        try:
            self._cmd.write("step\n")
            self._cmd.flush()
        except (BrokenPipeError, OSError):
            raise self._fail("the process is gone") from None
        return self._recv(self.step_timeout_s)

    def _recv(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._fail(f"no answer within {timeout_s:.0f} s")
            ready, _, _ = select.select([self._res], [], [], min(left, 5.0))
            if ready:
                chunk = os.read(self._res, 65536)
                if not chunk:
                    raise self._fail(f"exited (rc {self.proc.wait()})")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg = json.loads(line)
        if "error" in msg:
            raise self._fail(msg["error"])
        return msg

    def _fail(self, what: str) -> SideError:
        self.error = f"{what}; log: {last_error(self.log_tail())}"[:600]
        return SideError(self.error)

    def log_tail(self, n: int = 25) -> list[str]:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [ln for ln in lines if ln.strip()][-n:]

    def close(self, timeout_s: float = 60.0) -> None:
        """``stop``, then wait for the child to exit (its process group is killed after ``timeout_s``)."""
        if self.proc is None:
            return
        try:
            self._cmd.write("stop\n")
            self._cmd.close()
        except (BrokenPipeError, OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        try:
            os.close(self._res)
        except OSError:
            pass
        self.proc = None


def last_error(lines: list[str]) -> str:
    """The last ``...Error: ...`` line of a log tail, else its last line."""
    errs = [ln.strip() for ln in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", ln.strip())]
    return (errs or [ln.strip() for ln in lines] or ["(empty log)"])[-1][:500]


def alternate(sides: list[Stepper], rounds: int, warmup: int, *, stop_spread_pct: float = 0.0,
              min_rounds: int = 4, ratio_pairs: list[tuple[str, str]] = (),
              on_round: Callable[[int, dict], None] | None = None) -> dict[str, list[dict]]:
    """Step the sides in turn, ``warmup + rounds`` rounds at most; per side, its step records (``round`` added,
    warm-up rounds included with ``"warmup": True``). A side that fails drops out (its ``error`` says why).
    With ``stop_spread_pct > 0``, stop after at least ``min_rounds`` measured rounds once every side's
    :func:`spread_pct` of ``wall_s`` and every ratio's over rounds (``ratio_pairs``: (ours, theirs)) is under it."""
    out: dict[str, list[dict]] = {s.name: [] for s in sides}
    for r in range(warmup + rounds):
        for s in sides:
            if s.error is not None:
                continue
            try:
                rec = s.step()
            except SideError:
                continue  # s.error holds the reason
            out[s.name].append(dict(rec, round=r, warmup=r < warmup))
        if on_round is not None:
            on_round(r, out)
        if stop_spread_pct > 0 and r + 1 - warmup >= min_rounds and converged(out, stop_spread_pct, ratio_pairs):
            break
    return out


def converged(out: dict[str, list[dict]], target_pct: float, ratio_pairs: list[tuple[str, str]] = ()) -> bool:
    """Every side with measured steps has a wall-time spread under ``target_pct``, and so has every ratio."""
    walls = [[x["wall_s"] for x in measured(v)] for v in out.values()]
    if not any(walls) or any(w and spread_pct(w) >= target_pct for w in walls):
        return False
    for a, b in ratio_pairs:
        rs = ratio_rounds(measured(out.get(a, [])), measured(out.get(b, [])))
        if rs and spread_pct(rs) >= target_pct:
            return False
    return True


def measured(recs: list[dict]) -> list[dict]:
    return [x for x in recs if not x.get("warmup")]


# ----------------------------------------------------------------------------- statistics


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def spread_pct(xs: list[float]) -> float:
    """(max - min) / median, in %."""
    return 100 * (max(xs) - min(xs)) / statistics.median(xs) if xs else float("nan")


def iqr_pct(xs: list[float]) -> float:
    """Interquartile range / median, in % (quartiles by linear interpolation between the sorted values)."""
    if len(xs) < 2:
        return 0.0 if xs else float("nan")
    q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return 100 * (q3 - q1) / statistics.median(xs)


def summary(xs: list[float]) -> dict[str, float]:
    return {"median": median(xs), "min": min(xs) if xs else float("nan"), "max": max(xs) if xs else float("nan"),
            "spread_pct": spread_pct(xs), "iqr_pct": iqr_pct(xs)}


def ratio_rounds(ours: list[dict], theirs: list[dict]) -> list[float]:
    """Per round in both: our samples/s over theirs = their step wall / ours (same samples per step)."""
    t = {x["round"]: x["wall_s"] for x in theirs}
    return [t[x["round"]] / x["wall_s"] for x in ours if x["round"] in t]


def pair_ratios(case: str, out: dict[str, list[dict]], ours: list[str], theirs: list[str]) -> dict[str, float]:
    """``{case}: {ours} / {theirs} (samples/s)``: :func:`ratio_rounds`, then its median, spread, IQR, min and max."""
    ratios = {}
    for o in ours:
        for t in theirs:
            rs = ratio_rounds(measured(out.get(o, [])), measured(out.get(t, [])))
            if rs:
                st = summary(rs)
                key = f"{case}: {o} / {t} (samples/s)"
                ratios |= {key: st["median"], f"{key} spread %": st["spread_pct"], f"{key} IQR %": st["iqr_pct"],
                           f"{key} min": st["min"], f"{key} max": st["max"]}
    return ratios


def threads_label(threads: dict) -> str:
    """``learner 2, rollout 2 (OMP 2, MKL 2)`` (torch threads per process or actor) from a side's ``ready``
    record; roles served by another role's actors (``"shared"``) are left out."""
    parts, env = [], set()
    for name, info in threads.items():
        if isinstance(info, dict):
            parts.append(f"{name} {info.get('torch')}")
            env.add(f"OMP {info.get('OMP_NUM_THREADS')}, MKL {info.get('MKL_NUM_THREADS')}")
        elif info != "shared":
            parts.append(f"{name} {info}")
    return ", ".join(parts) + (f" ({'; '.join(sorted(env))})" if env else "")
