"""Run untrusted code (model output) in a separate, limited process: never in the caller's process.

:func:`run_sandboxed` starts ``python -I`` in a new session with

* a wall-clock timeout (the whole process group is SIGKILLed when it runs out) and ``RLIMIT_CPU``;
* ``RLIMIT_AS`` (address space: a 10 GB allocation fails with ``MemoryError``), ``RLIMIT_FSIZE``
  (no large files) and ``RLIMIT_CORE = 0``;
* ``RLIMIT_NPROC`` = the user's current task count + ``max_procs`` (a fork bomb gets ``EAGAIN``);
  the kernel exempts root from it, so under root the child runs as ``nobody``;
* no network: a private network namespace (``unshare -rn``, no interfaces but loopback-down) where
  the kernel allows it, and in any case a guard installed before the code runs that makes socket
  connects, DNS look-ups and ``socket.socket`` raise;
* a fresh temporary working directory, an empty environment (``PATH`` only), stdin closed.

The result says whether the code exited cleanly and, if not, why (``reason``): ``timeout``,
``memory``, ``processes``, ``network``, ``error`` (an exception, e.g. a failed assert) or ``killed``.
This is a guard against accidents and runaway programs, not a security boundary against a
determined attacker (use a container or gVisor for that).
"""
from __future__ import annotations

import contextlib
import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

__all__ = ["SandboxResult", "run_sandboxed", "network_namespace_available"]

# Installed before the user's code: no sockets to anywhere (also when no network namespace is available).
_GUARD = r'''
import socket as _s
class _NetworkBlocked(OSError):
    """What user code sees for any socket use: an OSError, as a real network failure would be."""
def _deny(*a, **k):
    raise _NetworkBlocked("network access is blocked in the rlcustom sandbox")
class _Socket(_s.socket):
    def __init__(self, *a, **k):
        _deny()
_s.socket = _Socket
_s.create_connection = _s.getaddrinfo = _s.gethostbyname = _s.socketpair = _deny
del _s
import sys as _sys
_src = open(_sys.argv[1]).read()
del _sys
exec(compile(_src, "<sandboxed>", "exec"), {"__name__": "__main__"})
'''


@dataclass
class SandboxResult:
    ok: bool  # exited with status 0 in time
    reason: str | None  # None when ok; else timeout | memory | processes | network | error | killed
    returncode: int | None
    stdout: str
    stderr: str


@functools.lru_cache(maxsize=1)
def network_namespace_available() -> bool:
    """Whether ``unshare -rn`` works here (unprivileged user + network namespaces)."""
    exe = shutil.which("unshare")
    if not exe:
        return False
    try:
        return subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _user_tasks(uid: int) -> int:
    """Tasks (threads) of ``uid`` now: RLIMIT_NPROC counts them all, so the limit is relative."""
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                st = f.read()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in st.splitlines() if ":" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            n += int(fields.get("Threads", "1").strip() or 1)
    return n


NOBODY = 65534  # root's sandboxes run as nobody: the kernel exempts root from RLIMIT_NPROC


def _run_as() -> int:
    return NOBODY if os.getuid() == 0 else os.getuid()


def _interpreter() -> str:
    """This Python, or (running as root, when it sits where nobody may not read, e.g. /root/.pyenv)
    the system's python3: the sandboxed code needs only the standard library."""
    if os.getuid() != 0:
        return sys.executable
    exe = os.path.realpath(sys.executable)
    parts = exe.split(os.sep)
    readable = all(os.stat(os.sep.join(parts[:i]) or os.sep).st_mode & 0o005 == 0o005
                   for i in range(2, len(parts)))
    if readable and os.stat(exe).st_mode & 0o001:
        return sys.executable
    return shutil.which("python3", path="/usr/bin:/bin:/usr/local/bin") or sys.executable


def _limits(timeout_s: float, memory_mb: int, nproc: int, file_mb: int):
    def apply() -> None:  # runs in the child between fork and exec
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        cpu = int(timeout_s) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb * 1024 * 1024,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        if os.getuid() == 0:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)

    return apply


def _classify(rc: int | None, stderr: str) -> str:
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return "memory"
    if "NetworkBlocked" in stderr or "Network is unreachable" in stderr or "network access is blocked" in stderr \
            or "Temporary failure in name resolution" in stderr:
        return "network"
    if "Resource temporarily unavailable" in stderr or "BlockingIOError" in stderr:
        return "processes"
    if rc is not None and rc < 0:
        return "timeout" if rc in (-signal.SIGXCPU, -signal.SIGKILL) else "killed"
    return "error"


def run_sandboxed(code: str, *, timeout_s: float = 5.0, memory_mb: int = 512, max_procs: int = 16,
                  file_mb: int = 16, network: bool = False, max_output: int = 20000) -> SandboxResult:
    """Run Python ``code`` in a limited child process (see the module docstring); never raises for
    anything the code does."""
    work = tempfile.mkdtemp(prefix="rlcustom-sandbox-")
    try:
        src = os.path.join(work, "main.py")
        with open(src, "w") as f:
            f.write(code)
        os.chmod(work, 0o777)  # the child may run as nobody
        os.chmod(src, 0o644)
        cmd = [_interpreter(), "-I", "-c", _GUARD, src]
        if not network and network_namespace_available():
            cmd = [shutil.which("unshare"), "-rn"] + cmd
        proc = subprocess.Popen(cmd, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
                                start_new_session=True,
                                preexec_fn=_limits(timeout_s, memory_mb, _user_tasks(_run_as()) + max_procs, file_mb))
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            out, err = proc.communicate()
        finally:
            _kill_group(proc.pid)  # children it left behind (a fork bomb's survivors)
        out_s = out.decode("utf-8", "replace")[-max_output:]
        err_s = err.decode("utf-8", "replace")[-max_output:]
        if timed_out:
            why = "processes" if _classify(None, err_s) == "processes" else "timeout"
            return SandboxResult(False, why, proc.returncode, out_s, err_s)
        if proc.returncode == 0:
            return SandboxResult(True, None, 0, out_s, err_s)
        return SandboxResult(False, _classify(proc.returncode, err_s), proc.returncode, out_s, err_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _kill_group(pgid: int) -> None:
    """SIGKILL the sandbox's process group; a group that already exited (or was reaped) is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
