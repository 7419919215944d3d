"""What the cluster subcommands do (the typer wrappers are in rlcustom/cli/cluster.py); exit codes returned.

    rlcustom submit CONFIG [key=value ...] [--address URL] [--no-wait] [--env NAME[=VALUE] ...] [--no-wandb-key]
                    [--working-dir DIR] [--runtime-env FILE] [--install [LOCK]]
                    [--entrypoint-command auto|train|generate] [--entrypoint-num-gpus N] [--timeout S] [--dry-run]
    rlcustom jobs list                [--address URL]
    rlcustom jobs status JOB_ID       [--address URL]
    rlcustom jobs logs JOB_ID         [--address URL] [--follow]
    rlcustom jobs stop JOB_ID         [--address URL] [--no-wait]

The address defaults to ``$RAY_ADDRESS``, then ``http://127.0.0.1:8265``.
Auth tokens, secrets and exit codes: see :mod:`rlcustom.cluster.jobs`. ``submit``
exits 0 iff the job SUCCEEDED (with ``--no-wait``: iff it was accepted).
"""
from __future__ import annotations

import sys
from typing import Sequence

__all__ = ["submit", "jobs_list", "jobs_status", "jobs_logs", "jobs_stop"]


# ----------------------------------------------------------------------------- submit


def submit(config: str, overrides: Sequence[str], *, address: str | None = None, no_wait: bool = False,
           env: Sequence[str] = (), no_wandb_key: bool = False, working_dir: str | None = None,
           runtime_env: str | None = None, install: str | None = None, entrypoint_command: str = "auto",
           entrypoint_num_cpus: float | None = None, entrypoint_num_gpus: float | None = None,
           job_id: str | None = None, timeout: float | None = None, dry_run: bool = False) -> int:
    """``rlcustom submit``: plan, show (redacted), submit, then follow the job's log unless ``no_wait``."""
    from rlcustom.cluster import client as C, jobs as J, watch as W

    from rlcustom.config import load_config
    from rlcustom.preflight import preflight

    preflight(load_config(config, list(overrides)), "submit", config_path=config)  # before anything is uploaded
    sub = J.plan_submission(config, list(overrides), working_dir=working_dir, command=entrypoint_command,
                            env_names=list(env), install=install, runtime_env_file=runtime_env,
                            job_id=job_id, entrypoint_num_cpus=entrypoint_num_cpus,
                            entrypoint_num_gpus=entrypoint_num_gpus, pass_wandb_key=not no_wandb_key)
    for note in sub.notes:
        print(f"rlcustom submit: note: {note}", file=sys.stderr)
    print(f"entrypoint: {C.redacted(sub.entrypoint)}")
    W.print_runtime_env(sub)
    if dry_run:
        print("dry run: nothing submitted")
        return 0
    jobs = C.Jobs(address)
    job_id = J.submit(jobs, sub)
    print(f"submitted job {job_id} to {jobs.address}")
    if no_wait:
        print(f"follow: rlcustom jobs logs {job_id} --follow --address {jobs.address}")
        return 0
    try:
        status = W.follow(jobs, job_id, timeout_s=timeout)
    except KeyboardInterrupt:
        print(f"\nrlcustom submit: stopped following; job {job_id} keeps running "
              f"(rlcustom jobs stop {job_id} --address {jobs.address})", file=sys.stderr)
        return 130
    return _report(jobs, job_id, status)


def _report(jobs, job_id: str, status: str) -> int:
    from rlcustom.cluster import client as C

    if status not in C.TERMINAL:
        print(f"job {job_id}: still {status} (stopped following; it keeps running)", file=sys.stderr)
        return 1
    try:
        info = jobs.call("get_job_info", job_id)
        msg = (getattr(info, "message", None) or "").strip()
    except C.JobError:
        msg = ""
    line = f"job {job_id}: {status}" + (f" ({C.redacted(msg.splitlines()[0])})" if msg and status != "SUCCEEDED" else "")
    print(line, file=sys.stdout if status == "SUCCEEDED" else sys.stderr)
    if "exit code 127" in msg:
        print("rlcustom: hint: the entrypoint's command was not found on the cluster: run a cluster built from "
              "cluster/Dockerfile, start the head from the project's venv (cluster/start-local-head.sh), "
              "or submit with --install", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1


# ----------------------------------------------------------------------------- jobs


def jobs_list(address: str | None, limit: int = 20) -> int:
    """Recent jobs, newest first."""
    from rlcustom.cluster import client as C, watch as W

    print("\n".join(W.list_lines(C.Jobs(address).call("list_jobs"), limit=limit)))
    return 0


def jobs_status(address: str | None, job_id: str) -> int:
    """Status, times and (redacted) runtime_env of a job."""
    from rlcustom.cluster import client as C, watch as W

    print("\n".join(W.describe(C.Jobs(address).call("get_job_info", job_id))))
    return 0


def jobs_logs(address: str | None, job_id: str, follow: bool = False) -> int:
    """A job's driver log; with ``follow``, streamed until the job ends (0 iff SUCCEEDED)."""
    from rlcustom.cluster import client as C, watch as W

    jobs = C.Jobs(address)
    if not follow:
        sys.stdout.write(C.redacted(jobs.call("get_job_logs", job_id)))
        sys.stdout.flush()
        return 0
    try:
        status = W.follow(jobs, job_id)
    except KeyboardInterrupt:
        return 130
    return _report(jobs, job_id, status)


def jobs_stop(address: str | None, job_id: str, no_wait: bool = False) -> int:
    """Stop a running job; wait (up to 60 s) for it to reach a terminal state unless ``no_wait``."""
    from rlcustom.cluster import client as C, watch as W

    jobs = C.Jobs(address)
    stopped = jobs.call("stop_job", job_id)
    status = jobs.status(job_id)
    if not stopped and status in C.TERMINAL:
        print(f"job {job_id}: already {status}")
        return 0
    print(f"job {job_id}: stop requested")
    if no_wait:
        return 0
    status = W.wait_status(jobs, job_id, timeout_s=60.0)
    print(f"job {job_id}: {status}")
    return 0 if status in C.TERMINAL else 1
