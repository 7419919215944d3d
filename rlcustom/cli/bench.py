"""``rlcustom bench NAME [ARGS...]``: a side-by-side benchmark from benchmarks/ (a table, JSON in benchmarks/results/).

Everything after NAME goes to the benchmark, ``--help`` included (``rlcustom bench weight_sync --help``)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from rlcustom.errors import RLCustomError

SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def bench(
    ctx: typer.Context,
    name: Annotated[Optional[str], typer.Argument(
        help="a script in benchmarks/ (e.g. generation), or 'all': every comparison benchmark at its default "
             "settings, each in its own process, a summary table and benchmarks/results/bench_all.json",
        show_default=False)] = None,
    args: Annotated[Optional[List[str]], typer.Argument(help="passed to the benchmark (see its --help)",
                                                        show_default=False)] = None,
) -> int:
    """Run a side-by-side benchmark from benchmarks/ (prints a table, writes JSON)."""
    from rlcustom import bench_runner as br

    if name in (None, "--help", "-h"):  # the command's own help (options after NAME belong to the benchmark)
        print(ctx.get_help())
        return 0 if name else 2
    root = next((b for b in (Path.cwd(), Path(__file__).resolve().parents[2]) if (b / "benchmarks").is_dir()), None)
    if root is None:
        raise RLCustomError("benchmarks/ not found: run from a checkout of the repository")
    sys.path.insert(0, str(root))
    if name == "all":
        rows = br.run_all(root)
        return 1 if any(r.status.startswith("failed") for r in rows) else 0
    names = br.benchmark_names(root / "benchmarks")
    if name not in names:
        raise RLCustomError(f"no benchmark '{name}' (have: {', '.join(names)})")
    try:
        importlib.import_module(f"benchmarks.{name}").main(list(args or []) + list(ctx.args))
    except Exception as e:  # noqa: BLE001 - a missing optional dependency is a skip, anything else is raised
        reason = br.skip_reason(e)
        if reason is None:
            raise
        print(f"{br.SKIP_MARK}{reason}", flush=True)
        return br.SKIP_RC
    return 0
