"""Trajectories of ``benchmarks/l3m_135m``: the per-step series from a run's offline W&B log, their smoothness
numbers and the plot."""
from __future__ import annotations

from pathlib import Path

NAMES = ("length.lo", "length.hi", "sentiment")  # the k = 3 scalar constraints (trainer metric names)
TRAJ_KEYS = {"task_step": "train/task_step", "response_len": "rollout/response_len", "mu": "constraint/mu",
             "train_task_ppl": "eval/task_ppl", "sentiment": "reward/sentiment/mean"}


def trajectory(run_dir: Path, names=NAMES) -> dict[str, list]:
    """Per-step series from the run's offline W&B log (``None`` where a step did not log the key)."""
    from rlcustom.tracking import read_offline_run

    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    if not runs:
        raise SystemExit(f"{run_dir}/wandb: no offline W&B run (was the run trained with tracking.mode=offline?)")
    hist = [h for h in read_offline_run(runs[-1])["history"] if "train/task_step" in h]
    keys = dict(TRAJ_KEYS)
    for n in names:
        for part in ("ema", "multiplier", "value", "satisfaction"):
            keys[f"{n}/{part}"] = f"constraint/{n}/{part}"
    out = {"step": [int(h.get("_step", i)) for i, h in enumerate(hist)]}
    for short, key in keys.items():
        out[short] = [h.get(key) for h in hist]
    return out


def trajectory_row(t: dict) -> dict:
    """Smoothness of each constraint's trajectory over the constraint steps: the sd of the step-to-step changes
    of the batch estimate of C_i (``dC sd``; the policy's own movement, no EMA), of its EMA and of the
    multiplier, and the total variation of the batch estimate."""
    from benchmarks._l3m_stats import constraint_points, smoothness

    row = {}
    for n in NAMES:
        c = smoothness(constraint_points(t, f"{n}/value"))
        row[f"{n} dC sd"], row[f"{n} C TV"] = c["step_sd"], c["total_variation"]
        row[f"{n} dEMA sd"] = smoothness(constraint_points(t, f"{n}/ema"))["step_sd"]
        row[f"{n} dlambda sd"] = smoothness(constraint_points(t, f"{n}/multiplier"))["step_sd"]
    return row


def write_plot(a, traj: dict[str, dict], stem: Path) -> Path:
    from rlcustom.eval.plot import Panel, write_panels

    def pts(v, key, only_constraint=False):
        t = traj[v]
        return [(s, y) for s, y, task in zip(t["step"], t[key], t["task_step"])
                if y is not None and not (only_constraint and task)]

    con = [v for v in ("l3m", "mm") if v in traj]
    panels = [
        Panel("mean rollout length (tokens)", "step", {v: pts(v, "response_len", True) for v in con},
              hlines=(a.lo, a.hi)),
        Panel("mean rollout sentiment (VADER)", "step", {v: pts(v, "sentiment", True) for v in con},
              hlines=(a.sentiment_lo,)),
        Panel(f"C_i, length (EMA, units of {a.length_unit:g} tokens)", "step",
              {f"{v} {n} EMA": pts(v, f"length.{n}/ema") for v in con for n in ("lo", "hi")}, hlines=(0.0,),
              markers=False),
        Panel("C_i, sentiment (EMA)", "step", {f"{v} EMA": pts(v, "sentiment/ema") for v in con} |
              {f"{v} batch": pts(v, "sentiment/value", True) for v in con}, hlines=(0.0,)),
        Panel("multiplier (L3M implied, MM learned)", "step",
              {f"{v} {n}": pts(v, f"{n}/multiplier") for v in con for n in NAMES}, log_y=True, markers=False),
        Panel("task ppl (trainer, training rows)", "step", {v: pts(v, "train_task_ppl") for v in traj}),
    ]
    return write_panels(panels, stem)
