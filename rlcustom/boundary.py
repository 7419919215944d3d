"""The one error boundary every CLI command runs inside: a failure is one line on stderr, never a traceback.

    rlcustom train: error: key 'roles.rollot': trainer 'pg' has no role 'rollot' (did you mean 'roles.rollout'? ...)

* expected failures -- our own :class:`~rlcustom.errors.RLCustomError`, the file system (``OSError``), model
  loading and data (``ValueError``/``KeyError``/``ImportError``), W&B, Ray connection and actor start-up --
  print one line naming what failed and exit 2;
* Ray's wrappers are taken off first: a ``RayTaskError`` gives its ``cause``; an actor whose ``__init__`` raised
  comes back as ``ActorDiedError`` carrying only the remote traceback's text, whose last ``Type: message`` line
  is the user's own exception;
* anything else (a bug) prints one line that says so, exit 1; ``KeyboardInterrupt`` exits 130;
* ``--verbose`` (anywhere on the command line) or ``RLCUSTOM_VERBOSE=1`` also prints the traceback.

CLI hooks (kept by any CLI front end)::

    argv, verbose = split_flags(argv)                      # --verbose, --resume-force -> resume_force=true
    return run_guarded(command, lambda: fn(args), verbose)  # the exit code
"""
from __future__ import annotations

import os
import re
import sys
import traceback
from typing import Any, Callable

from rlcustom.errors import RLCustomError

EXIT_USER, EXIT_BUG, EXIT_INTERRUPTED = 2, 1, 130
# commands that run other programs whose traceback is their report (`bench all` reads a failed benchmark's
# last traceback line): only our own one-line errors are turned into a line there
RAW_COMMANDS = ("bench",)
_LAST_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)): (.+)$")


class RemoteError(RLCustomError):
    """What an actor's constructor raised, recovered from Ray's text (the type is in the message)."""


def split_flags(argv: list[str]) -> tuple[list[str], bool]:
    """Take ``--verbose`` out of ``argv`` and turn ``--resume-force`` into the override ``resume_force=true``."""
    verbose = os.environ.get("RLCUSTOM_VERBOSE", "") not in ("", "0", "false")
    out = []
    for a in argv:
        if a == "--verbose":
            verbose = True
        elif a == "--resume-force":
            out.append("resume_force=true")
        else:
            out.append(a)
    return out, verbose


def unwrap(err: BaseException) -> BaseException:
    """The user's own exception inside Ray's wrappers (RayTaskError.cause, ActorDiedError text, __cause__)."""
    try:
        from ray.exceptions import RayActorError, RayTaskError
    except ImportError:  # pragma: no cover - ray is a dependency
        return err
    seen: set[int] = set()
    while id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, RayTaskError) and getattr(err, "cause", None) is not None:
            err = err.cause
            continue
        if isinstance(err, RayActorError):
            inner = err.__cause__ if isinstance(err.__cause__, RayTaskError) else None
            if inner is not None:
                err = inner
                continue
            return _from_text(str(err)) or err
        if isinstance(err, RLCustomError) and isinstance(err.__cause__, (RayTaskError, RayActorError)):
            err = err.__cause__
            continue
        break
    return err


def _from_text(text: str) -> BaseException | None:
    """The last ``Type: message`` line of a remote traceback, as one error (None when there is none)."""
    for line in reversed(text.strip().splitlines()):
        m = _LAST_LINE.match(line.strip())
        if m:
            name, msg = m.group(1).rsplit(".", 1)[-1], m.group(2).strip()
            if name.startswith("Ray") or name in ("ActorDiedError", "RayActorError"):
                continue
            return RemoteError(msg if _is_ours(name) else f"{name}: {msg}")
    return None


def _is_ours(type_name: str) -> bool:
    import rlcustom.errors as E

    ours = {n for n in dir(E) if isinstance(getattr(E, n), type)}
    return type_name in ours or type_name in ("RewardFunctionError", "RewardSpecError", "PreflightError",
                                              "ResumeMismatch", "ActorTimeout", "Interrupted", "JobError")


def describe(err: BaseException) -> tuple[str, int]:
    """(one line, exit code) for ``err``."""
    err = unwrap(err)
    first = (str(err).strip().splitlines() or [""])[0]
    if isinstance(err, RLCustomError):
        return first or type(err).__name__, EXIT_USER
    if isinstance(err, KeyError):  # str(KeyError) quotes its message
        msg = str(err.args[0]) if err.args else "missing key"
        return f"{msg}", EXIT_USER
    if isinstance(err, OSError):
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        what = err.strerror or first or type(err).__name__
        if isinstance(err, (ConnectionError, TimeoutError)):
            return f"{type(err).__name__}: {where}{what} (check cluster.address / the endpoint is up)", EXIT_USER
        return f"{where}{what}", EXIT_USER
    kind = type(err).__module__.split(".")[0]
    if kind == "wandb":
        return f"W&B: {first} (tracking.mode=offline runs without W&B)", EXIT_USER
    if kind == "ray":  # connection to a cluster, placement, GCS: not a bug of ours
        return f"Ray: {type(err).__name__}: {first}", EXIT_USER
    if kind == "safetensors" or type(err).__name__ == "SafetensorError":
        return f"model weights unreadable: {first}", EXIT_USER
    if isinstance(err, (ValueError, ImportError, LookupError, RuntimeError, FloatingPointError)):
        return f"{type(err).__name__}: {first}", EXIT_USER
    return f"{type(err).__name__}: {first} (an unexpected error, probably a bug in rlcustom: rerun with " \
           f"--verbose and report the traceback)", EXIT_BUG


def run_guarded(command: str, fn: Callable[[], Any], verbose: bool = False) -> int:
    """Run one command; its return value (an exit code, None = 0), or the one-line report of what it raised."""
    try:
        return int(fn() or 0)
    except KeyboardInterrupt:
        print(f"rlcustom {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - this is the boundary
        if command in RAW_COMMANDS and not isinstance(e, RLCustomError):
            raise
        line, code = describe(e)
        if verbose:
            traceback.print_exc()
        hint = "" if verbose or code == EXIT_BUG or isinstance(unwrap(e), RLCustomError) else " (--verbose for details)"
        print(f"rlcustom {command}: error: {line}{hint}", file=sys.stderr, flush=True)
        return code
