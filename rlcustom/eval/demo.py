"""``rlcustom demo`` on a verifiable task: held-out accuracy before and after training, a sample of
each, and ``OUTPUT_DIR/demo.png`` (reward per step and the two accuracies)."""
from __future__ import annotations

import math
import time
from typing import Any

__all__ = ["wants_accuracy", "run_verifiable_demo"]


def wants_accuracy(cfg) -> bool:
    """A Python reward that reads a column of the data (``answer``, ...): the demo measures accuracy."""
    from rlcustom.rewards import resolve_reward
    from rlcustom.rewards.signature import required_fields

    if cfg.reward.spec in ("model", "loglik", "http"):
        return False
    return bool(required_fields(resolve_reward(cfg.reward.spec), cfg.reward.kwargs))


def _sample(r: dict, k: int = 0) -> str:
    prompt, completion, score = r["samples"][k]
    return f"  Q: {prompt.strip()[:120]}\n  A: {' '.join(completion.split())[:200]!r}  (reward {score:.2f})"


def run_verifiable_demo(cfg, limit: int | None = None, train=None) -> dict[str, Any]:
    """Held-out accuracy of ``model.path``, training (``train(cfg)``: the CLI's run with its quiet console and
    footer; default :func:`rlcustom.trainers.run_trainer`, its summary printed), accuracy of the result."""
    from rlcustom.eval.heldout import accuracy_line, heldout_accuracy, plot_run
    from rlcustom.metrics_record import read_metrics
    from rlcustom.trainers import run_trainer

    out = cfg.output_dir
    before = heldout_accuracy(cfg, cfg.model.path, limit=limit)
    print(accuracy_line("before training", before) + f"  [{before['seconds']:.0f} s]")
    print(_sample(before), flush=True)
    t0 = time.perf_counter()
    if train is not None:
        train(cfg)
    else:
        print(run_trainer(cfg)["summary"])
    train_s = time.perf_counter() - t0
    after = heldout_accuracy(cfg, f"{out}/model", limit=limit)
    print(accuracy_line("after training ", after) + f"  [{after['seconds']:.0f} s]")
    print(_sample(after))
    diff = after["accuracy"] - before["accuracy"]
    se = math.sqrt(before["se"] ** 2 + after["se"] ** 2) or float("nan")
    print(f"change: {diff:+.3f} ({diff / se:+.1f} standard errors); training took {train_s:.0f} s")
    rows = read_metrics(out)
    parts = tuple(k for k in (rows[0] if rows else {}) if k.startswith("reward/") and k.count("/") == 1
                  and k not in ("reward/mean", "reward/max", "reward/std"))
    png = plot_run(rows, f"{out}/demo.png", keys=parts or ("reward/mean",), marks={"held-out accuracy before": (0, before["accuracy"], before["se"]),
                                                   "held-out accuracy after": (cfg.steps, after["accuracy"],
                                                                               after["se"])},
                   title=f"{cfg.trainer}/{getattr(cfg.algo, 'objective', '')} on {cfg.data.prompts}")
    print(f"plot: {png}   metrics: {out}/metrics.jsonl")
    return {"before": before, "after": after, "train_seconds": train_s, "z": diff / se, "png": png}
