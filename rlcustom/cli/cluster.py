"""Cluster commands: ``rlcustom submit`` and the ``rlcustom jobs`` sub-app (list/status/logs/stop).

The work is done in rlcustom/cluster/commands.py; this module only declares the options.
"""
from __future__ import annotations

from enum import Enum
from typing import Annotated, List, Optional

import typer

from rlcustom.cli.options import OverridesArg

DEFAULT_LOCK = "cluster/requirements-cpu.txt"
Address = Annotated[Optional[str], typer.Option(
    help="Ray dashboard address (default: $RAY_ADDRESS, else http://127.0.0.1:8265)", show_default=False)]
JobId = Annotated[str, typer.Argument(metavar="JOB_ID", show_default=False)]


class EntryCommand(str, Enum):
    auto = "auto"
    train = "train"
    generate = "generate"


def submit(
    config: Annotated[str, typer.Argument(help="YAML config (see configs/)", show_default=False)],
    overrides: OverridesArg = None,
    address: Address = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="print the job id and return; don't stream logs")] = False,
    env: Annotated[Optional[List[str]], typer.Option(
        metavar="NAME[=VALUE]", help="also pass this environment variable to the job (repeatable); "
                                     "WANDB_API_KEY, WANDB_MODE and RLCUSTOM_* pass through already")] = None,
    no_wandb_key: Annotated[bool, typer.Option(
        "--no-wandb-key", help="don't pass WANDB_API_KEY (the cluster's nodes have it, e.g. from a Secret)")] = False,
    working_dir: Annotated[Optional[str], typer.Option(
        help="uploaded as the job's working_dir (default: current dir)")] = None,
    runtime_env: Annotated[Optional[str], typer.Option(
        metavar="FILE", help="a runtime_env YAML merged under ours (e.g. cluster/runtime_env.yaml)")] = None,
    install: Annotated[Optional[str], typer.Option(
        metavar="[LOCK]",
        help=f"pip-install the pinned requirements in the job env (no value: {DEFAULT_LOCK}); "
             "not needed on a cluster built from cluster/Dockerfile")] = None,
    entrypoint_command: Annotated[EntryCommand, typer.Option(
        help="rlcustom subcommand the job runs (auto: generate for trainer 'generate', else train)")]
    = EntryCommand.auto,
    entrypoint_num_cpus: Annotated[Optional[float], typer.Option(help="CPUs reserved for the entrypoint")] = None,
    entrypoint_num_gpus: Annotated[Optional[float], typer.Option(
        help="GPUs reserved for the entrypoint (e.g. 1 for `generate`, which runs in the driver)")] = None,
    job_id: Annotated[Optional[str], typer.Option(help="submission id (default: rlcustom-TRAINER-DATE-RANDOM)")]
    = None,
    timeout: Annotated[Optional[float], typer.Option(
        metavar="S", help="stop following after S seconds (the job keeps running); exit 1")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate; print the entrypoint and runtime_env only")]
    = False,
) -> int:
    """Send a run to a Ray cluster as a job (Job Submission API) and stream its logs."""
    from rlcustom.cluster import commands

    return commands.submit(config, overrides or [], address=address, no_wait=no_wait, env=env or [],
                           no_wandb_key=no_wandb_key, working_dir=working_dir, runtime_env=runtime_env,
                           install=install, entrypoint_command=entrypoint_command.value,
                           entrypoint_num_cpus=entrypoint_num_cpus, entrypoint_num_gpus=entrypoint_num_gpus,
                           job_id=job_id, timeout=timeout, dry_run=dry_run)


jobs = typer.Typer(help="List, inspect, follow or stop jobs on a Ray cluster.", no_args_is_help=True)


@jobs.callback()
def _jobs(ctx: typer.Context, address: Address = None) -> None:
    """List, inspect, follow or stop jobs on a Ray cluster (--address here or after the action)."""
    ctx.obj = address


def _address(ctx: typer.Context, address: str | None) -> str | None:
    return address if address is not None else ctx.obj


@jobs.command("list")
def jobs_list(ctx: typer.Context, limit: Annotated[int, typer.Option(help="jobs shown")] = 20,
              address: Address = None) -> int:
    """Recent jobs, newest first."""
    from rlcustom.cluster import commands

    return commands.jobs_list(_address(ctx, address), limit=limit)


@jobs.command("status")
def jobs_status(ctx: typer.Context, job_id: JobId, address: Address = None) -> int:
    """Status, times and runtime_env (secrets hidden) of a job."""
    from rlcustom.cluster import commands

    return commands.jobs_status(_address(ctx, address), job_id)


@jobs.command("logs")
def jobs_logs(ctx: typer.Context, job_id: JobId, address: Address = None,
              follow: Annotated[bool, typer.Option("--follow", "-f", help="stream until the job ends "
                                                                         "(exit 0 iff SUCCEEDED)")] = False) -> int:
    """A job's driver log."""
    from rlcustom.cluster import commands

    return commands.jobs_logs(_address(ctx, address), job_id, follow=follow)


@jobs.command("stop")
def jobs_stop(ctx: typer.Context, job_id: JobId, address: Address = None,
              no_wait: Annotated[bool, typer.Option("--no-wait", help="don't wait for it to reach STOPPED")]
              = False) -> int:
    """Stop a running job."""
    from rlcustom.cluster import commands

    return commands.jobs_stop(_address(ctx, address), job_id, no_wait=no_wait)
