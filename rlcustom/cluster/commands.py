"""Cluster subcommands, registered on the ``rlcustom`` dispatcher on import (nothing else happens on import).

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

import argparse
import sys

from rlcustom.cli import _config_args, command

_ADDRESS_HELP = "Ray dashboard address (default: $RAY_ADDRESS, else http://127.0.0.1:8265)"


# ----------------------------------------------------------------------------- submit


def _submit_configure(p: argparse.ArgumentParser) -> None:
    _config_args(p, config_required=True)
    p.add_argument("--address", default=None, help=_ADDRESS_HELP)
    p.add_argument("--no-wait", action="store_true", help="print the job id and return; don't stream logs")
    p.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                   help="also pass this environment variable to the job (repeatable); "
                        "WANDB_API_KEY, WANDB_MODE and RLCUSTOM_* pass through already")
    p.add_argument("--no-wandb-key", action="store_true",
                   help="don't pass WANDB_API_KEY (the cluster's nodes have it, e.g. from a Kubernetes Secret)")
    p.add_argument("--working-dir", default=None, help="uploaded as the job's working_dir (default: current dir)")
    p.add_argument("--runtime-env", default=None, metavar="FILE",
                   help="a runtime_env YAML merged under ours (e.g. cluster/runtime_env.yaml)")
    p.add_argument("--install", nargs="?", const="cluster/requirements-cpu.txt", default=None, metavar="LOCK",
                   help="pip-install the pinned requirements in the job env (default lock: %(const)s); "
                        "not needed on a cluster built from cluster/Dockerfile")
    p.add_argument("--entrypoint-command", choices=["auto", "train", "generate"], default="auto",
                   help="rlcustom subcommand the job runs (auto: generate for trainer 'generate', else train)")
    p.add_argument("--entrypoint-num-cpus", type=float, default=None, help="CPUs reserved for the entrypoint process")
    p.add_argument("--entrypoint-num-gpus", type=float, default=None,
                   help="GPUs reserved for the entrypoint process (e.g. 1 for `generate`, which runs in the driver)")
    p.add_argument("--job-id", default=None, help="submission id (default: rlcustom-TRAINER-DATE-RANDOM)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="stop following after S seconds (the job keeps running); exit 1")
    p.add_argument("--dry-run", action="store_true", help="validate and print the entrypoint and runtime_env only")


@command("submit", "send a run to a Ray cluster as a job (Job Submission API) and stream its logs",
         configure=_submit_configure)
def submit(args: argparse.Namespace) -> int:
    from rlcustom.cluster import jobs as J

    config, overrides = args.config, list(args.overrides)
    from rlcustom.config import load_config
    from rlcustom.preflight import preflight

    preflight(load_config(config, overrides), "submit", config_path=config)  # before anything is uploaded
    sub = J.plan_submission(config, overrides, working_dir=args.working_dir, command=args.entrypoint_command,
                            env_names=args.env, install=args.install, runtime_env_file=args.runtime_env,
                            job_id=args.job_id, entrypoint_num_cpus=args.entrypoint_num_cpus,
                            entrypoint_num_gpus=args.entrypoint_num_gpus, pass_wandb_key=not args.no_wandb_key)
    for note in sub.notes:
        print(f"rlcustom submit: note: {note}", file=sys.stderr)
    print(f"entrypoint: {J.redacted(sub.entrypoint)}")
    J.print_runtime_env(sub)
    if args.dry_run:
        print("dry run: nothing submitted")
        return 0
    jobs = J.Jobs(args.address)
    job_id = J.submit(jobs, sub)
    print(f"submitted job {job_id} to {jobs.address}")
    if args.no_wait:
        print(f"follow: rlcustom jobs logs {job_id} --follow --address {jobs.address}")
        return 0
    try:
        status = J.follow(jobs, job_id, timeout_s=args.timeout)
    except KeyboardInterrupt:
        print(f"\nrlcustom submit: stopped following; job {job_id} keeps running "
              f"(rlcustom jobs stop {job_id} --address {jobs.address})", file=sys.stderr)
        return 130
    return _report(jobs, job_id, status)


def _report(jobs, job_id: str, status: str) -> int:
    from rlcustom.cluster import jobs as J

    if status not in J.TERMINAL:
        print(f"job {job_id}: still {status} (stopped following; it keeps running)", file=sys.stderr)
        return 1
    try:
        info = jobs.call("get_job_info", job_id)
        msg = (getattr(info, "message", None) or "").strip()
    except J.JobError:
        msg = ""
    line = f"job {job_id}: {status}" + (f" ({J.redacted(msg.splitlines()[0])})" if msg and status != "SUCCEEDED" else "")
    print(line, file=sys.stdout if status == "SUCCEEDED" else sys.stderr)
    if "exit code 127" in msg:
        print("rlcustom: hint: the entrypoint's command was not found on the cluster: run a cluster built from "
              "cluster/Dockerfile, start the head from the project's venv (cluster/start-local-head.sh), "
              "or submit with --install", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1


# ----------------------------------------------------------------------------- jobs


def _jobs_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, help=_ADDRESS_HELP)
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    ls = sub.add_parser("list", help="recent jobs, newest first")
    ls.add_argument("--limit", type=int, default=20)
    st = sub.add_parser("status", help="status, times and (redacted) runtime_env of a job")
    lg = sub.add_parser("logs", help="a job's driver log")
    lg.add_argument("--follow", "-f", action="store_true", help="stream until the job ends (exit 0 iff SUCCEEDED)")
    sp = sub.add_parser("stop", help="stop a running job")
    sp.add_argument("--no-wait", action="store_true", help="don't wait for it to reach STOPPED")
    for q in (st, lg, sp):
        q.add_argument("job_id", metavar="JOB_ID")
    for q in (ls, st, lg, sp):
        q.add_argument("--address", default=argparse.SUPPRESS, help=_ADDRESS_HELP)


@command("jobs", "list, inspect, follow or stop jobs on a Ray cluster", configure=_jobs_configure)
def jobs_cmd(args: argparse.Namespace) -> int:
    from rlcustom.cluster import jobs as J

    jobs = J.Jobs(args.address)
    if args.action == "list":
        print("\n".join(J.list_lines(jobs.call("list_jobs"), limit=args.limit)))
        return 0
    if args.action == "status":
        print("\n".join(J.describe(jobs.call("get_job_info", args.job_id))))
        return 0
    if args.action == "logs":
        if not args.follow:
            sys.stdout.write(J.redacted(jobs.call("get_job_logs", args.job_id)))
            sys.stdout.flush()
            return 0
        try:
            status = J.follow(jobs, args.job_id)
        except KeyboardInterrupt:
            return 130
        return _report(jobs, args.job_id, status)
    if args.action == "stop":
        stopped = jobs.call("stop_job", args.job_id)
        status = jobs.status(args.job_id)
        if not stopped and status in J.TERMINAL:
            print(f"job {args.job_id}: already {status}")
            return 0
        print(f"job {args.job_id}: stop requested")
        if args.no_wait:
            return 0
        status = J.wait_status(jobs, args.job_id, timeout_s=60.0)
        print(f"job {args.job_id}: {status}")
        return 0 if status in J.TERMINAL else 1
    raise AssertionError(args.action)
