"""Cost of the distributed runtime: one algorithm step through Ray actors vs the same step in one process.

    rlcustom bench runtime_overhead [--trainer pg|ppo] [--repeats 3] [--model smollm2-135m-instruct]

Both sides run the *same trainer code* (``PGTrainer.step`` / ``PPOTrainer.step``: generate -> score ->
advantages -> train -> sync) with the demo's model, LoRA, sampling, batch and seeds
(configs/examples/ppo_length.yaml; ``pg`` is the demo with a REINFORCE/RLOO step instead of PPO's):

* ``ray`` -- the roles are Ray actors in placement bundles, as in every run (the sync is the
  adapter over the gloo group, ``sync: collective``);
* ``one_process`` -- the same actor classes instantiated in this process, each ``actor.method.remote(...)``
  a plain call and each ``get`` the value itself; the sync is the in-memory hand-over
  (``get_weights`` -> ``load_weights``, no copy through a store).

Steps alternate between the sides (one warm-up step each), so both see the same prompts, seeds and
weights: the per-step rewards and losses are compared to show the work is the same. Every role uses
the threads this process was given (``OMP_NUM_THREADS``). Overhead = median ray step / median
one-process step - 1 (target: under 10%).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics

from benchmarks import _trainer_steps as ts
from benchmarks.common import interleaved, report, summarize


def local_trainer(cls, cfg):
    """Trainer ``cls`` with ``cluster.backend: inprocess``: the same actor classes as plain objects in this
    process (:mod:`rlcustom.runtime.inprocess`)."""
    return cls(dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, backend="inprocess")))


def pg_config(overrides: list[str]):
    """The demo's settings with a PG (REINFORCE, RLOO baseline) step instead of PPO's."""
    import tempfile
    from pathlib import Path

    import yaml

    from rlcustom.config import read_yaml

    data = read_yaml(Path(__file__).resolve().parent.parent / "configs" / "examples" / "ppo_length.yaml")
    data["trainer"] = "pg"
    data["algo"] = {"prompts_per_step": data["algo"]["prompts_per_step"], "advantage": data["algo"]["advantage"]}
    data["roles"] = {k: v for k, v in data["roles"].items() if k != "reference"}
    path = Path(tempfile.mkdtemp(prefix="rlcustom-bench-pg-")) / "pg.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return ts.demo_config(overrides, path=str(path))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="rlcustom bench runtime_overhead")
    p.add_argument("--trainer", default="pg", choices=["pg", "ppo"], help="pg: demo settings, REINFORCE step; "
                   "ppo: the demo's PPO step (2 epochs, reference + learner log-probs)")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per side (after one warm-up step each)")
    p.add_argument("--warmup", type=int, default=1)
    a = p.parse_args(argv)

    load_start = os.getloadavg()
    import tempfile

    import ray

    from rlcustom.trainers.pg import PGTrainer
    from rlcustom.trainers.ppo import PPOTrainer

    out = tempfile.mkdtemp(prefix="rlcustom-bench-rt-")
    overrides = [f"model.path={a.model}", f"output_dir={out}", "engine=hf"]
    cfg = pg_config(overrides) if a.trainer == "pg" else ts.demo_config(overrides)
    cls = PGTrainer if a.trainer == "pg" else PPOTrainer
    sides = {"ray": cls(cfg), "one_process": local_trainer(cls, cfg)}
    stats: dict[str, list[dict]] = {k: [] for k in sides}
    try:
        start_s = {k: ts.start(t) for k, t in sides.items()}  # Ray first: the local learner needs no Ray

        def side(name):
            def fn():
                wall, st = ts.run_step(sides[name])
                stats[name].append(st)
                print(f"{name} step {sides[name].step_idx}: {wall:.2f} s "
                      f"(reward {st.get('reward/mean', float('nan')):.4f}, "
                      f"loss {st.get('train/loss', float('nan')):.4f})",
                      flush=True)
            return fn

        times = interleaved({k: side(k) for k in sides}, repeats=a.repeats, warmup=a.warmup)
    finally:
        for t in sides.values():
            t.shutdown()
        if ray.is_initialized():
            ray.shutdown()

    rows = []
    ref = summarize(times["one_process"])["median_s"]
    for name, t in times.items():
        st = stats[name][a.warmup:]
        phases = sorted({k for s in st for k in s if k.startswith("timing/")})
        rows.append({"side": name, **summarize(t), "ratio": summarize(t)["median_s"] / ref,
                     **{k[7:]: statistics.median(s.get(k, 0.0) for s in st) for k in phases},
                     "start_s": start_s[name]})
    per_round = sorted(r / l for r, l in zip(times["ray"], times["one_process"]))
    pairs = list(zip(stats["ray"], stats["one_process"]))
    same = [abs(r.get("reward/mean", 0) - l.get("reward/mean", 0)) for r, l in pairs]
    loss_diff = [abs(r.get("train/loss", 0) - l.get("train/loss", 0)) for r, l in pairs]
    ratios = {"ray/one_process": rows[0]["median_s"] / ref, "overhead_pct": 100 * (rows[0]["median_s"] / ref - 1),
              "ratio_min": per_round[0], "ratio_max": per_round[-1]}
    notes = [f"same work on both sides: max |reward/mean diff| {max(same):.3g}, max |train/loss diff| "
             f"{max(loss_diff):.3g} over {len(same)} steps (warm-up included)",
             "phase columns (generate_s, score_s, train_s, sync_s): medians of the trainer's own timers",
             "ratio_min/max: ray/one_process per interleaved round",
             "load average (1, 5, 15 min) at start %s, at end %s (shared machine)"
             % tuple(", ".join(f"{x:.1f}" for x in la) for la in (load_start, os.getloadavg()))]
    report("runtime_overhead", {"trainer": a.trainer, "model": a.model, "config": "configs/examples/ppo_length.yaml settings",
                                "lora": "r=8 alpha=16", "rollouts_per_step": "4 prompts x 4 answers, <=32 tokens",
                                "repeats": a.repeats, "warmup": a.warmup, "threads_per_role": ts.threads(),
                                "target": "overhead < 10%"},
           rows, ratios, notes)


if __name__ == "__main__":
    main()
