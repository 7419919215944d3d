"""Following a submitted job: streamed (redacted) logs, its final status, printable details and lists."""
from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING, Any, Iterable, TextIO

from rlcustom.cluster.client import TERMINAL, Jobs, redact_text, redacted

if TYPE_CHECKING:
    from rlcustom.cluster.jobs import Submission


def follow(jobs: Jobs, job_id: str, out: TextIO | None = None, timeout_s: float | None = None,
           poll_s: float = 2.0) -> str:
    """Stream the job's logs to ``out`` (redacted) until it ends; return its final status.

    Uses the log websocket (``tail_job_logs``); if that fails, polls
    ``get_job_logs``. Bounded by ``timeout_s`` (None: until the job ends);
    on timeout returns the status at that moment (not terminal).
    """
    out = out or sys.stdout
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    printed = 0  # characters of the full log already written (for the polling fallback)

    def write(chunk: str) -> None:
        nonlocal printed
        printed += len(chunk)
        out.write(redact_text(chunk))
        out.flush()

    async def tail() -> None:
        async for chunk in jobs.client.tail_job_logs(job_id):
            write(chunk)

    def time_left() -> float | None:
        return None if deadline is None else deadline - time.monotonic()

    streamed = False
    try:
        left = time_left()
        asyncio.run(asyncio.wait_for(tail(), timeout=None if left is None else max(left, 0.1)))
        streamed = True
    except asyncio.TimeoutError:
        return jobs.status(job_id)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception:  # websocket refused (proxy, auth, old head): poll get_job_logs instead
        pass
    if streamed:  # the websocket closes when the job ends; the status may lag a moment
        left = time_left()
        return wait_status(jobs, job_id, 60.0 if left is None else max(min(left, 60.0), 0.0))
    while True:
        st = jobs.status(job_id)
        full = jobs.call("get_job_logs", job_id)
        if len(full) > printed:
            write(full[printed:])
        left = time_left()
        if st in TERMINAL or (left is not None and left <= 0):
            return st
        time.sleep(poll_s if left is None else max(min(poll_s, left), 0.0))


def wait_status(jobs: Jobs, job_id: str, timeout_s: float, poll_s: float = 1.0) -> str:
    """Poll until the job is terminal or ``timeout_s`` passes; return the last status."""
    deadline = time.monotonic() + timeout_s
    while True:
        st = jobs.status(job_id)
        if st in TERMINAL or time.monotonic() >= deadline:
            return st
        time.sleep(poll_s)


def describe(details: Any) -> list[str]:
    """Printable lines of a job's details (runtime_env redacted)."""
    d = details.dict() if hasattr(details, "dict") else dict(details)

    def ts(ms):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"

    st = d.get("status")
    st = getattr(st, "value", st)
    lines = [f"job {d.get('submission_id') or d.get('job_id')}: {st}"]
    if d.get("message"):
        lines.append(f"  message: {redact_text(str(d['message']).strip().splitlines()[0])}")
    lines.append(f"  entrypoint: {redact_text(str(d.get('entrypoint', '')))}")
    start, end = d.get("start_time"), d.get("end_time")
    dur = f" ({(end - start) / 1000:.1f} s)" if start and end else ""
    lines.append(f"  started: {ts(start)}  ended: {ts(end)}{dur}")
    if d.get("runtime_env"):
        rt = redacted(d["runtime_env"])
        env = rt.get("env_vars") or {}
        lines.append(f"  working_dir: {rt.get('working_dir', '-')}")
        if env:
            lines.append("  env_vars: " + ", ".join(f"{k}={v}" for k, v in sorted(env.items())))
    return lines


def list_lines(details: Iterable[Any], limit: int = 20) -> list[str]:
    rows = []
    for j in details:
        d = j.dict() if hasattr(j, "dict") else dict(j)
        st = getattr(d.get("status"), "value", d.get("status"))
        rows.append((d.get("start_time") or 0, d.get("submission_id") or d.get("job_id") or "-", str(st),
                     redact_text(str(d.get("entrypoint", "")))))
    rows.sort(reverse=True)
    rows = rows[:limit]
    if not rows:
        return ["no jobs"]
    w = max(len(r[1]) for r in rows)
    out = [f"{'JOB':<{w}}  {'STATUS':<9}  {'STARTED':<19}  ENTRYPOINT"]
    for start, jid, st, ep in rows:
        t = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start / 1000)) if start else "-"
        out.append(f"{jid:<{w}}  {st:<9}  {t:<19}  {ep[:80]}")
    return out


def print_runtime_env(sub: "Submission", out: TextIO | None = None) -> None:
    import json

    print("runtime_env: " + json.dumps(redacted(sub.runtime_env)), file=out or sys.stdout)
