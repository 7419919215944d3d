"""What a user sees in the terminal: library chatter kept out, named metrics on the progress bar, a run footer.

* :func:`quiet_libraries` (the default; ``rlcustom --verbose`` skips it): transformers' and DeepSpeed's
  warnings and progress bars, Python warnings, and Ray's actor log lines (``(Learner pid=...) ...``)
  stay off the console. They go to the run's log file instead (``OUTPUT_DIR/console.log`` for records
  of this process, Ray's session logs for actors; :func:`run_footer` names both).
* :func:`step_postfix`: the progress bar's text after each step, e.g.
  ``reward 0.412 | KL 0.013 | loss 0.21 | step 3.1 s (generate 1.2, train 1.5, sync 0.2)``.
* :func:`run_footer`: the closing lines of a run (run directory, W&B, the PNG of its curves).

The verbosity travels to Ray's workers as ``RLCUSTOM_VERBOSE`` (RLCUSTOM_* is passed to every actor).
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Mapping

__all__ = ["VERBOSE_ENV", "set_verbose", "is_verbose", "quiet_libraries", "log_to_file", "step_postfix",
           "run_footer", "save_actor_logs", "NOISY_LOGGERS"]

VERBOSE_ENV = "RLCUSTOM_VERBOSE"
NOISY_LOGGERS = ("py.warnings", "ray", "DeepSpeed", "deepspeed", "transformers", "torch.distributed", "accelerate", "peft",
                 "datasets", "httpx", "urllib3", "wandb", "vllm")
# the progress bar's metrics: (label, keys tried in order)
SHOWN: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reward", ("reward/mean", "reward/best_of_n")),
    ("KL", ("kl/seq_mean", "kl/mean")),
    ("loss", ("train/loss", "train/dpo_loss", "train/bt_loss", "train/nll", "value/loss")),
    ("acc", ("train/reward_accuracy", "train/pair_accuracy")),
)
_handler: logging.Handler | None = None


def set_verbose(on: bool) -> None:
    if on:
        os.environ[VERBOSE_ENV] = "1"
    else:
        os.environ.pop(VERBOSE_ENV, None)


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false")


def quiet_libraries() -> None:
    """Keep library warnings off the console (no-op with ``--verbose``); safe to call in any process."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if is_verbose():
        return
    # read by the libraries at import or start-up; set before they are imported (also reach Ray's workers)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_LOGGER_LEVEL", "error")  # ray.init sets the "ray" logger's level from it
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # inherited by Ray's workers
    warnings.filterwarnings("ignore")
    for name in NOISY_LOGGERS:
        lg = logging.getLogger(name)
        lg.setLevel(logging.ERROR)
    import sys

    if "transformers" in sys.modules:  # else TRANSFORMERS_VERBOSITY applies when it is imported
        from transformers.utils import logging as tlog

        tlog.disable_progress_bar()
        tlog.set_verbosity_error()


class _LazyFileHandler(logging.FileHandler):
    """Creates the file (and its folder) at the first record: a run that fails on bad input writes nothing."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, delay=True)

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def log_to_file(path: str | Path) -> Path:
    """Also write this process's warnings and library log records (all levels from WARNING) to ``path``."""
    global _handler
    path = Path(path)
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = _LazyFileHandler(path)
    _handler.setLevel(logging.WARNING)
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(_handler)
    logging.captureWarnings(True)
    if not is_verbose():
        warnings.resetwarnings()  # quiet_libraries ignored them; from here on they go to the file, once each
        warnings.simplefilter("default")
        os.environ["RAY_LOGGER_LEVEL"] = "warning"  # read when ray is imported; ray.init sets the level from it
        import ray  # noqa: F401  (installs its console handler on the "ray" logger now, not during the run)
        for name in NOISY_LOGGERS:  # warnings to the file; the libraries' own console handlers: errors only
            lg = logging.getLogger(name)
            lg.setLevel(logging.WARNING)
            lg.propagate = False
            for h in lg.handlers:
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                    h.setLevel(logging.ERROR)
            if _handler not in lg.handlers:
                lg.addHandler(_handler)
    return path


def save_actor_logs(path: str | Path) -> Path | None:
    """Append the actors' output of this machine's latest local Ray session (what ``--verbose`` shows
    with ``(Role pid=...)`` prefixes) to ``path``; None when there is none."""
    logs = Path("/tmp/ray/session_latest/logs")  # Ray's documented default location
    files = sorted(p for p in logs.glob("worker-*") if p.suffix in (".out", ".err") and p.stat().st_size)
    if not files:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for p in files:
            f.write(f"===== {p.name}\n")
            f.write(p.read_text(errors="replace"))
    return path


def _first(stats: Mapping[str, float], keys: tuple[str, ...]) -> float | None:
    for k in keys:
        v = stats.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def step_postfix(stats: Mapping[str, float]) -> str:
    """The progress bar's text for one step's metrics: named metrics, then the step time and its phases."""
    parts = []
    for label, keys in SHOWN:
        v = _first(stats, keys)
        if v is not None:
            parts.append(f"{label} {v:.3g}")
    phases = {k[len("timing/"):-2]: float(v) for k, v in stats.items()
              if k.startswith("timing/") and k.endswith("_s") and isinstance(v, (int, float))}
    total = _first(stats, ("timing/step_s",))
    phases.pop("step", None)
    if total is None and phases:
        total = sum(phases.values())
    if total is not None:
        detail = ", ".join(f"{k} {v:.1f}" for k, v in sorted(phases.items(), key=lambda kv: -kv[1])[:4])
        parts.append(f"step {total:.1f} s" + (f" ({detail})" if detail else ""))
    return " | ".join(parts)


def run_footer(run_dir: str | Path, *, wandb: str | None = None, png: str | Path | None = None,
               log_file: str | Path | None = None, note: str | None = None) -> str:
    """The last lines of a run: where its files are."""
    run_dir = Path(run_dir)
    offline = sorted(run_dir.glob("wandb/offline-run-*"), key=lambda p: p.stat().st_mtime)
    lines = ["-" * 72, f"run directory: {run_dir}"]
    if wandb:
        lines.append(wandb if wandb.startswith("W&B") else f"W&B: {wandb}")
    elif offline:
        lines.append(f"W&B: {offline[-1]}  (upload: wandb sync {offline[-1]})")
    if png is not None:
        lines.append(f"plot: {png}")
    if note:
        lines.append(note)
    if log_file is not None and Path(log_file).is_file() and Path(log_file).stat().st_size:
        lines.append(f"library warnings: {log_file}" + ("" if is_verbose() else " (shown with --verbose)"))
    return "\n".join(lines)
