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

import os
import secrets as _secrets
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from rlcustom.cluster.client import JobError, Jobs
from rlcustom.cluster.runtime_env import build_runtime_env, load_runtime_env_file


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
