"""Commands that run a job on this machine: ``train``, ``demo``, ``prepare-model``, ``plot``.

    rlcustom train CONFIG [key=value ...]
    rlcustom demo [key=value ...] [--config FILE]
    rlcustom prepare-model [ALIAS] [--force]
    rlcustom plot RUN_DIR [--out FILE]
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from rlcustom.cli.options import OverridesArg, load


def train(
    config: Annotated[str, typer.Argument(help="YAML config (see configs/)", show_default=False)],
    overrides: OverridesArg = None,
) -> int:
    """Run a trainer from a YAML config (local Ray, started if needed)."""
    cfg = load(config, overrides)
    _run_trainer(cfg)
    return 0


def demo(
    overrides: Annotated[Optional[List[str]], typer.Argument(
        help="dotted overrides for configs/demo.yaml", show_default=False)] = None,
    config: Annotated[Optional[str], typer.Option(
        help="default: configs/demo.yaml beside the package, else built-in")] = None,
) -> int:
    """The main job on the embedded model (see docs/getting-started.md)."""
    from types import SimpleNamespace

    from rlcustom.config import load_config
    from rlcustom.preflight import preflight_args

    path = config or find_config("demo.yaml")
    cfg = load_config(path, list(overrides or []))
    preflight_args(cfg, SimpleNamespace(command="demo", config=path))  # no Ray, no weights: one line if wrong
    print(f"rlcustom demo: {path or 'built-in defaults'} -> trainer '{cfg.trainer}' on {cfg.model.path}")
    if cfg.trainer == "generate":
        from rlcustom.cli.generate import run_generation

        result = run_generation(cfg)
        for row in result["rows"][:3]:
            print("-" * 72)
            print("PROMPT:", row["prompt"].strip()[-300:])
            print("COMPLETION:", row["completion"].strip())
        print("=" * 72)
        print(result["summary"])
        return 0
    from rlcustom.eval.demo import run_verifiable_demo, wants_accuracy

    if wants_accuracy(cfg):  # a verifiable task: held-out accuracy before/after (± SE), samples, a plot
        run_verifiable_demo(cfg, train=_run_trainer)
        return 0
    _run_trainer(cfg)
    return 0


def _run_trainer(cfg) -> dict:
    """Run the config's trainer; print its summary, then where the run's files are (and a PNG of its curves).

    Library warnings of this process go to OUTPUT_DIR/console.log, the actors' output (local Ray) is
    appended to it after the run; ``--verbose`` shows both on the console instead."""
    from rlcustom import console
    from rlcustom.eval.run_plot import plot_run
    from rlcustom.trainers import run_trainer

    out = Path(cfg.output_dir)
    log_file = console.log_to_file(out / "console.log")
    result = run_trainer(cfg)
    lines = result["summary"].splitlines()
    wandb = next((ln for ln in lines if ln.startswith("W&B")), None)
    print("\n".join(ln for ln in lines if ln is not wandb))
    if not getattr(cfg.cluster, "address", None) and not console.is_verbose():
        console.save_actor_logs(log_file)
    png, note = None, None
    try:
        png = plot_run(out, rows=result.get("history") or None)
    except Exception as e:  # noqa: BLE001 - the run succeeded; a missing plot is a note, not a failure
        note = f"no plot: {e}"
    print(console.run_footer(out, wandb=wandb, png=png, log_file=log_file, note=note))
    return result


def find_config(name: str) -> str | None:
    """``configs/NAME`` in the current directory, else beside the package (a checkout); None if neither."""
    for base in (Path.cwd() / "configs", Path(__file__).resolve().parents[2] / "configs"):
        if (base / name).is_file():
            return str(base / name)
    return None


def prepare_model(
    alias: Annotated[str, typer.Argument(help="embedded model alias")] = "smollm2-135m-instruct",
    force: Annotated[bool, typer.Option("--force", help="convert again even if cached")] = False,
) -> int:
    """Convert the embedded GGUF model to safetensors in the cache (once)."""
    from rlcustom.models.embedded import cache_root, prepare_embedded
    from rlcustom.preflight import check_creatable_dir

    check_creatable_dir(cache_root(), "model cache (RLCUSTOM_CACHE)")  # before a minute of conversion
    t = time.perf_counter()
    path = prepare_embedded(alias, force=force)
    print(f"{alias}: ready in {path} ({time.perf_counter() - t:.1f} s)")
    return 0


def plot(
    run_dir: Annotated[Path, typer.Argument(help="a run's output_dir (with metrics.jsonl or wandb/)",
                                            show_default=False)],
    out: Annotated[Optional[Path], typer.Option(help="PNG to write (default: RUN_DIR/curves.png)")] = None,
) -> int:
    """Write a PNG of a run's main curves (reward, KL, loss, phase times) from RUN_DIR/metrics.jsonl."""
    from rlcustom.eval.run_plot import plot_run

    print(f"wrote {plot_run(run_dir, out=out)}")
    return 0
