"""Send a run to a Ray cluster as a job (Ray's Job Submission API) and follow it.

    rlcustom submit configs/ppo.yaml steps=100 --address http://HEAD:8265
    rlcustom jobs list|status|logs|stop [JOB_ID] --address http://HEAD:8265

What a submitted job gets
-------------------------
- entrypoint: ``rlcustom train CONFIG overrides...`` (``rlcustom generate ...``
  when the config says ``trainer: generate``), every word quoted with
  :func:`shlex.quote`. The config is validated here first, so a typo fails in
  one line before anything is uploaded.
- runtime_env ``working_dir``: the current directory (or ``--working-dir``),
  zipped and uploaded by Ray, minus :data:`DEFAULT_EXCLUDES` (checkpoints,
  ``.venv``, ``runs/``, ``wandb/``, ``benchmarks/results``, ``.git``, caches)
  and the config's own relative ``output_dir``. CONFIG must lie inside it; the
  job runs with the uploaded copy as its current directory.
- runtime_env ``pip``: nothing by default. A cluster built from
  ``cluster/Dockerfile`` already has the whole environment (and a cluster
  whose nodes run this repo's ``.venv`` likewise); ``--install [LOCK]`` adds the
  exact pins of ``cluster/requirements-cpu.txt`` (or LOCK) with ``--no-deps``
  for a bare ``rayproject/ray`` image, and the entrypoint becomes
  ``python -m rlcustom.cli ...`` (the package itself comes from working_dir).
- runtime_env ``env_vars``: ``WANDB_API_KEY`` when it is set here, plus
  ``WANDB_MODE``/``WANDB_ENTITY``/``WANDB_PROJECT``/``WANDB_BASE_URL``, every
  ``RLCUSTOM_*`` variable, and the names given with ``--env NAME`` (or
  ``--env NAME=VALUE``). Values are never printed: what is shown goes through
  :func:`rlcustom.tracking.redact`, and so does every log line streamed back.
  Ray itself, though, treats env_vars as configuration, not secrets: it keeps
  the job's runtime_env in its job table (readable through the dashboard: keep
  it on 127.0.0.1 or behind token auth) and its runtime_env agent logs it in
  ``runtime_env_agent.log`` on the node that runs the job. Where that matters,
  give the nodes the key yourself (a Kubernetes Secret in the pod env, a
  cloud secret manager) and submit with ``--no-wandb-key``.

Authentication (Ray >= 2.60 token auth)
---------------------------------------
A head started with ``RAY_AUTH_MODE=token`` answers 401 "Missing
authentication token" to clients without the token. The token is looked up
here, in Ray's own order: ``$RAY_AUTH_TOKEN``, the file named by
``$RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token`` (what ``ray get-auth-token
--generate`` writes). When one is found it is sent as ``Authorization: Bearer
...`` on every request (including the log websocket); it is never printed,
never passed to the job, never written anywhere. A head with auth disabled
(``cluster/start-local-head.sh`` without ``--token``) ignores the header, so
sending it is harmless. A 401/403 becomes a one-line error saying which
variable to set.

The address: ``--address``, else ``$RAY_ADDRESS``, else
``http://127.0.0.1:8265`` (the dashboard, as for ``ray job submit``; a bare
``host:port`` gets ``http://``).
"""
from __future__ import annotations

import asyncio
import os
import secrets as _secrets
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, TextIO

from rlcustom.errors import RLCustomError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")

# Never uploaded with the working_dir (gitignore syntax, relative to working_dir).
DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".git/", ".venv/", "venv/", "runs/", "wandb/", "checkpoints/", "**/checkpoints/",
    "benchmarks/results/", "__pycache__/", "*.pyc", ".pytest_cache/", ".hypothesis/",
    ".mypy_cache/", ".ruff_cache/", ".cache/", "*.egg-info/", "build/", "dist/", ".whl/",
    ".ipynb_checkpoints/",
)

# Passed through from the submitting environment when set.
PASSTHROUGH_ENV: tuple[str, ...] = ("WANDB_API_KEY", "WANDB_MODE", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_BASE_URL")
PASSTHROUGH_PREFIXES: tuple[str, ...] = ("RLCUSTOM_",)
# Never sent to a job, even when named with --env: they are the client's credentials.
NEVER_PASS: tuple[str, ...] = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ADDRESS")

DEFAULT_LOCK = "cluster/requirements-cpu.txt"


class JobError(RLCustomError):
    """A cluster/job problem the user can fix: one line, no traceback."""


# ----------------------------------------------------------------------------- address and auth


def resolve_address(address: str | None = None) -> str:
    addr = (address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS).strip().rstrip("/")
    if addr == "auto":
        raise JobError("address 'auto' is for ray.init; job submission needs the dashboard, e.g. http://HEAD:8265")
    if "://" not in addr:
        addr = "http://" + addr
    return addr


def auth_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The Ray auth token: $RAY_AUTH_TOKEN, the file at $RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token."""
    env = os.environ if environ is None else environ
    tok = (env.get("RAY_AUTH_TOKEN") or "").strip()
    if tok:
        return tok
    candidates = []
    if env.get("RAY_AUTH_TOKEN_PATH"):
        candidates.append(Path(env["RAY_AUTH_TOKEN_PATH"]).expanduser())
    candidates.append(Path.home() / ".ray" / "auth_token")
    for p in candidates:
        try:
            tok = p.read_text().strip()
        except OSError:
            continue
        if tok:
            return tok
    return None


def auth_headers(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    tok = auth_token(environ)
    return {"Authorization": f"Bearer {tok}"} if tok else {}


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return _redact_text(lines[0] if lines else text)


def _explain(e: BaseException, address: str) -> JobError:
    text = str(e)
    if "401" in text or "Missing authentication token" in text or "Authentication required" in text:
        return JobError(f"the Ray head at {address} requires an auth token: set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH "
                        f"to the token file, or put it in ~/.ray/auth_token (`ray get-auth-token` on the head prints it)")
    if "403" in text or "Invalid authentication token" in text or "Authentication failed" in text:
        return JobError(f"the Ray head at {address} rejected the auth token (403): check RAY_AUTH_TOKEN / "
                        f"RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token")
    if isinstance(e, ConnectionError) or "Failed to connect" in text or "Connection refused" in text:
        return JobError(f"cannot reach the Ray dashboard at {address} (start one with cluster/start-local-head.sh, "
                        f"or port-forward a cluster's with `ray dashboard CLUSTER.yaml`)")
    return JobError(f"{address}: {_one_line(e)}")


class Jobs:
    """A thin wrapper over ``JobSubmissionClient``: auth header, one-line errors, redacted text."""

    def __init__(self, address: str | None = None) -> None:
        self.address = resolve_address(address)
        try:
            from ray.job_submission import JobSubmissionClient
        except ImportError as e:  # pragma: no cover - ray[default] is a dependency
            raise JobError(f"ray[default] is needed for job submission: {e}") from None
        try:
            self.client = JobSubmissionClient(self.address, headers=auth_headers())
        except Exception as e:  # ConnectionError, RuntimeError, requests errors
            raise _explain(e, self.address) from None

    def call(self, name: str, *args, **kwargs):
        try:
            return getattr(self.client, name)(*args, **kwargs)
        except Exception as e:
            if "does not exist" in str(e) or "404" in str(e):
                job = args[0] if args else kwargs.get("job_id", "?")
                raise JobError(f"no job '{job}' on {self.address} (see: rlcustom jobs list)") from None
            raise _explain(e, self.address) from None

    def status(self, job_id: str) -> str:
        st = self.call("get_job_status", job_id)
        return str(getattr(st, "value", st))


# ----------------------------------------------------------------------------- runtime_env


def _redact_text(text: str) -> str:
    from rlcustom.tracking import redact

    out = redact(text)
    for v in (os.environ.get("WANDB_API_KEY"), os.environ.get("RAY_AUTH_TOKEN"), auth_token()):
        if v and len(v) >= 6:  # (a one-letter "key" would blank every such letter)
            out = out.replace(v, "***")
    return out


def redacted(obj: Any) -> Any:
    """What may be shown of a runtime_env / job details: secret-looking keys and env secrets masked."""
    from rlcustom.tracking import redact

    def walk(o: Any) -> Any:
        if isinstance(o, Mapping):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [walk(v) for v in o]
        return _redact_text(o) if isinstance(o, str) else o

    return walk(redact(obj))


def read_lock(path: str | Path) -> list[str]:
    """Requirement lines of a lock file (comments, blanks and ``ray`` itself dropped)."""
    p = Path(path)
    if not p.is_file():
        raise JobError(f"{p}: no such requirements file (for --install)")
    out = []
    for line in p.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name = line.split("==")[0].split("[")[0].strip().lower()
        if name == "ray":  # the cluster runs its own ray; a second one in the job env breaks it
            continue
        out.append(line)
    return out


def env_for_job(names: Iterable[str] = (), environ: Mapping[str, str] | None = None,
                pass_wandb_key: bool = True) -> dict[str, str]:
    """env_vars for the job: the pass-through set plus ``--env NAME`` / ``--env NAME=VALUE``."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for k, v in env.items():
        if k == "WANDB_API_KEY" and not pass_wandb_key:
            continue
        if k in PASSTHROUGH_ENV or k.startswith(PASSTHROUGH_PREFIXES):
            out[k] = v
    for spec in names:
        if "=" in spec:
            k, v = spec.split("=", 1)
        else:
            k, v = spec, env.get(spec)
            if v is None:
                raise JobError(f"--env {spec}: not set in this environment (use --env {spec}=VALUE to give a value)")
        if not k or not k.replace("_", "a").isalnum():
            raise JobError(f"--env {spec!r}: expected NAME or NAME=VALUE")
        out[k] = v
    for k in NEVER_PASS:
        out.pop(k, None)
    return out


def build_runtime_env(working_dir: str | Path, *, env_names: Iterable[str] = (), environ: Mapping[str, str] | None = None,
                      install: str | Path | None = None, extra_excludes: Iterable[str] = (),
                      base: Mapping[str, Any] | None = None, pass_wandb_key: bool = True) -> dict[str, Any]:
    """The runtime_env of a submitted run. ``base`` (a runtime_env YAML) is merged under ours."""
    rt: dict[str, Any] = {k: v for k, v in dict(base or {}).items()}
    excludes = list(rt.get("excludes") or [])
    for e in (*DEFAULT_EXCLUDES, *extra_excludes):
        if e not in excludes:
            excludes.append(e)
    rt["working_dir"] = str(Path(working_dir).resolve())
    rt["excludes"] = excludes
    env = {str(k): str(v) for k, v in dict(rt.get("env_vars") or {}).items()}
    env.update(env_for_job(env_names, environ, pass_wandb_key=pass_wandb_key))
    if env:
        rt["env_vars"] = env
    else:
        rt.pop("env_vars", None)
    if install is not None:
        packages = read_lock(install)
        options = ["--no-deps", "--disable-pip-version-check", "--no-cache-dir"]
        if any("+cpu" in p for p in packages):  # torch==X+cpu lives on PyTorch's own index
            options += ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]
        rt["pip"] = {"packages": packages, "pip_check": False, "pip_install_options": options}
    return rt


def load_runtime_env_file(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except OSError as e:
        raise JobError(f"{p}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise JobError(f"{p}: malformed YAML: {_one_line(e)}") from None
    if not isinstance(data, dict):
        raise JobError(f"{p}: a runtime_env must be a mapping")
    data.pop("working_dir", None)  # ours (the --working-dir) wins: it is uploaded from here
    return data


# ----------------------------------------------------------------------------- the submission


@dataclass
class Submission:
    entrypoint: str
    runtime_env: dict[str, Any]
    submission_id: str
    metadata: dict[str, str]
    notes: list[str] = field(default_factory=list)
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None


def plan_submission(config: str, overrides: Iterable[str] = (), *, working_dir: str | Path | None = None,
                    command: str = "auto", env_names: Iterable[str] = (), install: str | Path | None = None,
                    runtime_env_file: str | Path | None = None, job_id: str | None = None,
                    entrypoint_num_cpus: float | None = None, entrypoint_num_gpus: float | None = None,
                    environ: Mapping[str, str] | None = None, pass_wandb_key: bool = True) -> Submission:
    """Validate the config locally and build what will be submitted (nothing is sent)."""
    from rlcustom.config import load_config

    overrides = list(overrides)
    cfg = load_config(config, overrides)  # ConfigError: one line naming the file/override and key
    wd = Path(working_dir or os.getcwd()).resolve()
    if not wd.is_dir():
        raise JobError(f"--working-dir {wd}: not a directory")
    cpath = Path(config).resolve()
    try:
        rel_config = cpath.relative_to(wd).as_posix()
    except ValueError:
        raise JobError(f"{config}: the config must be inside the uploaded working dir {wd} "
                       f"(run from the repository root, or pass --working-dir)") from None
    if command == "auto":
        command = "generate" if cfg.trainer == "generate" else "train"
    if command == "train" and cfg.trainer == "generate":
        raise JobError(f"{config}: trainer 'generate' runs with `rlcustom generate` (use --entrypoint-command auto)")
    prog = ["python", "-m", "rlcustom.cli"] if install is not None else ["rlcustom"]
    entrypoint = shlex.join([*prog, command, rel_config, *overrides])

    notes, extra = [], []
    out = Path(cfg.output_dir)
    if not out.is_absolute():
        extra.append(out.as_posix().rstrip("/") + "/")
        notes.append(f"output_dir '{cfg.output_dir}' is relative: on the cluster it lands in the job's temporary copy "
                     f"of the working dir on the node running the entrypoint; set output_dir=/shared/path to keep it")
    if install is not None:
        lock = Path(install)
        install = lock if lock.is_absolute() or lock.is_file() else wd / lock
    base = load_runtime_env_file(runtime_env_file) if runtime_env_file else None
    rt = build_runtime_env(wd, env_names=env_names, environ=environ, install=install, extra_excludes=extra, base=base,
                           pass_wandb_key=pass_wandb_key)
    sid = job_id or f"rlcustom-{_slug(cfg.trainer)}-{time.strftime('%Y%m%d-%H%M%S')}-{_secrets.token_hex(3)}"
    meta = {"rlcustom.config": rel_config, "rlcustom.trainer": cfg.trainer, "rlcustom.command": command}
    return Submission(entrypoint, rt, sid, meta, notes, entrypoint_num_cpus, entrypoint_num_gpus)


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c == "-" else "-" for c in s.lower())[:32] or "run"


def submit(jobs: Jobs, sub: Submission, agent_wait_s: float = 60.0) -> str:
    kwargs: dict[str, Any] = dict(entrypoint=sub.entrypoint, runtime_env=sub.runtime_env,
                                  submission_id=sub.submission_id, metadata=sub.metadata)
    if sub.entrypoint_num_cpus is not None:
        kwargs["entrypoint_num_cpus"] = sub.entrypoint_num_cpus
    if sub.entrypoint_num_gpus is not None:
        kwargs["entrypoint_num_gpus"] = sub.entrypoint_num_gpus
    # A head that has just started may not have registered its job agent yet ("No available agent").
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            return jobs.call("submit_job", **kwargs)
        except JobError as e:
            if "No available agent" not in str(e):
                raise
            if time.monotonic() > deadline:
                raise JobError(f"{jobs.address}: the head's job agent did not come up in {agent_wait_s:.0f} s "
                               f"(a port clash? see dashboard_agent.log in the head's session logs)") from None
        time.sleep(2.0)


# ----------------------------------------------------------------------------- following a job


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
        out.write(_redact_text(chunk))
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
        lines.append(f"  message: {_redact_text(str(d['message']).strip().splitlines()[0])}")
    lines.append(f"  entrypoint: {_redact_text(str(d.get('entrypoint', '')))}")
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
                     _redact_text(str(d.get("entrypoint", "")))))
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


def print_runtime_env(sub: Submission, out: TextIO | None = None) -> None:
    import json

    print("runtime_env: " + json.dumps(redacted(sub.runtime_env)), file=out or sys.stdout)
