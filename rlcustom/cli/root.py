"""The ``rlcustom`` command line on typer: the command table, ``--version``, ``--verbose``, shell completion,
and one-line errors (exit 2) for everything a user can fix.

    rlcustom generate [CONFIG] [key=value ...] --out gens.jsonl
    rlcustom train CONFIG [key=value ...]
    rlcustom eval [metrics|dera|qadapter] CONFIG ...
    rlcustom submit CONFIG ... | rlcustom jobs list|status|logs|stop ...
    rlcustom demo | prepare-model | bench NAME | plot RUN_DIR
    rlcustom --install-completion        # bash/zsh/fish completion (typer)
"""
from __future__ import annotations

import sys
from typing import Annotated, Callable, Optional

import typer
from typer._click import exceptions as click  # typer 0.29 vendors click: its exceptions, not the click package's

from rlcustom import console
from rlcustom.cli import bench as _bench
from rlcustom.cli import cluster as _cluster
from rlcustom.cli import eval as _eval
from rlcustom.cli import generate as _generate
from rlcustom.cli import run as _run

app = typer.Typer(name="rlcustom", help="Distributed RL for language models on Ray.", no_args_is_help=True,
                  pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})


def _version(value: bool) -> None:
    if value:
        print(f"rlcustom {version()}")
        raise typer.Exit()


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        return dist_version("rlcustom")
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        from rlcustom import __version__

        return __version__


@app.callback()
def _root(
    version_: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                     help="print the version and exit")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show Ray/DeepSpeed/transformers warnings and "
                                                                   "actor log lines (also after the command)")]
    = False,
) -> None:
    """Distributed RL for language models on Ray: PPO, TD(lambda)/VAS, L3M, Q-Adapter, DeRa."""
    console.set_verbose(verbose)
    console.quiet_libraries()


app.command("generate")(_generate.generate)
app.command("train")(_run.train)
app.add_typer(_eval.app, name="eval")
app.command("demo")(_run.demo)
app.command("prepare-model")(_run.prepare_model)
app.command("plot")(_run.plot)
app.command("bench", context_settings=_bench.SETTINGS)(_bench.bench)
app.command("submit")(_cluster.submit)
app.add_typer(_cluster.jobs, name="jobs")

COMMANDS: tuple[str, ...] = tuple(c.name for c in app.registered_commands) + tuple(
    g.name for g in app.registered_groups)
_PASS_THROUGH = ("bench",)  # everything after the name belongs to the benchmark
# options whose value may be left out (argparse's nargs="?"; typer has no such option): the value then
OPTIONAL_VALUE = {("submit", "--install"): _cluster.DEFAULT_LOCK}


def guarded(command: str, fn: Callable[[], int], verbose: bool = False) -> int:
    """The one error boundary every command runs in (its only call site is :func:`main`): a failure a user
    can fix is one line on stderr and exit 2, Ray's wrappers unwrapped to the user's own exception
    (:func:`rlcustom.boundary.run_guarded`); Ctrl-C is exit 130; ``--verbose`` adds the traceback."""
    from rlcustom.boundary import run_guarded

    def call() -> int:
        try:
            return fn()
        except typer.Abort:
            raise KeyboardInterrupt from None

    return run_guarded(command, call, verbose or console.is_verbose())


def _fill_optional_values(argv: list[str]) -> list[str]:
    """``submit cfg.yaml --install --dry-run`` -> ``... --install cluster/requirements-cpu.txt --dry-run``."""
    cut = argv.index("--") if "--" in argv else len(argv)
    cmd = next((a for a in argv[:cut] if not a.startswith("-")), None)
    out = []
    for i, a in enumerate(argv):
        out.append(a)
        default = OPTIONAL_VALUE.get((cmd, a)) if i < cut else None
        if default is not None and (i + 1 >= cut or argv[i + 1].startswith("-")):
            out.append(default)
    return out


def _hoist_verbose(argv: list[str]) -> list[str]:
    """``rlcustom train cfg.yaml --verbose`` == ``rlcustom --verbose train cfg.yaml``."""
    cut = argv.index("--") if "--" in argv else len(argv)
    cmd = next((a for a in argv[:cut] if not a.startswith("-")), None)
    if cmd in _PASS_THROUGH:
        return argv
    flags = [a for a in argv[:cut] if a in ("--verbose", "-v")]
    if not flags:
        return argv
    return ["--verbose"] + [a for a in argv[:cut] if a not in ("--verbose", "-v")] + argv[cut:]


def _run(argv: list[str], name: str) -> int:
    """Parse ``argv`` and run the command; usage errors (typer's) are one line and exit 2 here."""
    cmd = typer.main.get_command(app)
    try:
        rc = cmd.main(args=argv, prog_name="rlcustom", standalone_mode=False)
    except click.NoArgsIsHelpError:  # typer has printed the help
        return 2
    except click.UsageError as e:
        sub = e.ctx.command_path if e.ctx is not None else f"rlcustom {name}".strip()
        print(f"{sub}: error: {e.format_message()}", file=sys.stderr)
        return 2
    except click.ClickException as e:
        print(f"rlcustom {name}: error: {e.format_message()}", file=sys.stderr)
        return e.exit_code
    return int(rc or 0)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (2: a one-line error a user can fix)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    # --resume-force: resume although the checkpoint's identity differs (trainers/checkpoint_identity.py)
    argv = [("resume_force=true" if a == "--resume-force" else a) for a in argv[:cut]] + argv[cut:]
    argv = _fill_optional_values(_hoist_verbose(argv))
    name = next((a for a in argv if not a.startswith("-")), "")
    return guarded(name, lambda: _run(argv, name), verbose="--verbose" in argv[:cut] or "-v" in argv[:cut])
