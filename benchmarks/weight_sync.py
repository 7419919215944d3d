"""Weight-sync time vs parameter count, and its share of a PPO step (target: under 5%).

    rlcustom bench weight_sync [--sizes 2x64,4x256,8x512] [--no-135m] [--repeats 3]
                               [--ppo-steps 2] [--ppo-full] [--engine hf]

Everything goes through the trainer's own ``sync_weights`` on real Ray actors (a DeepSpeed
learner and a rollout engine placed by the scheduler), so what is timed is the path a run takes:

1. **Full weights vs size.** For tiny Llamas of growing depth x width (``LAYERSxHIDDEN``) and the
   135M model, no LoRA: ``collective`` (learner rank 0 -> rollout over the TCPStore gloo group in
   dtype buckets, then ``load_weights`` into the engine) and ``object_store`` (``get_weights`` ->
   Ray object store -> ``load_weights``), interleaved on the same two actors.
2. **Share of a PPO step.** The demo's PPO run (configs/examples/ppo_length.yaml: 135M, LoRA r=8, 4 prompts x 4
   answers of 32 tokens, 2 PPO epochs): ``--ppo-steps`` steps after one warm-up step, each timed
   whole; the sync inside it is the adapter-only collective path (``timing/sync_s``). Then the
   adapter-only ``collective`` and ``object_store`` paths interleaved on the same actors.
   The share for full 135M weights is the full collective sync of part 1 over the same step time
   (an upper bound: a full-parameter step trains more, so it is longer); ``--ppo-full`` measures
   full-parameter PPO steps of the demo instead of estimating.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import tempfile

from benchmarks import _trainer_steps as ts
from benchmarks.common import interleaved, report, summarize

MODEL_135M = "smollm2-135m-instruct"


def _sizes(spec: str) -> list[tuple[int, int]]:
    out = []
    for part in filter(None, spec.split(",")):
        layers, hidden = part.lower().split("x")
        out.append((int(layers), int(hidden)))
    return out


def _sync_only_trainer(cfg):
    from rlcustom.trainers.base import Trainer
    from rlcustom.trainers.roles import build_learner, build_rollout

    class SyncOnly(Trainer):  # the roles a sync touches, nothing else
        name = "sync_only"
        roles_used = ("rollout", "learner")

        def build(self) -> None:
            build_rollout(self)
            build_learner(self)

    return SyncOnly(cfg)


def _time_sync(trainer, cfg, repeats: int, warmup: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """collective vs object_store on the same actors, interleaved; plus bytes sent per sync."""
    bytes_sent: dict[str, float] = {}

    def side(mode: str):
        c = dataclasses.replace(cfg, sync=mode)

        def fn():
            trainer.cfg = c
            out = trainer.sync_weights()
            bytes_sent[mode] = out.get("system/sync_bytes", bytes_sent.get(mode, 0.0))
        return fn

    times = interleaved({"collective": side("collective"), "object_store": side("object_store")},
                        repeats=repeats, warmup=warmup)
    trainer.cfg = cfg
    return times, bytes_sent


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="rlcustom bench weight_sync")
    p.add_argument("--sizes", default="2x64,4x256,8x512", help="tiny Llamas as LAYERSxHIDDEN (MLP = 2x hidden)")
    p.add_argument("--no-135m", action="store_true", help="leave the 135M model out of the size sweep")
    p.add_argument("--repeats", type=int, default=3, help="interleaved syncs per side and size")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--ppo-steps", type=int, default=2, help="timed demo PPO steps (after one warm-up step); 0: none")
    p.add_argument("--ppo-model", default=MODEL_135M, help="model of the demo PPO steps (default: the demo's)")
    p.add_argument("--ppo-full", action="store_true", help="also time full-parameter demo PPO steps (no LoRA)")
    p.add_argument("--engine", default="hf", choices=["hf", "vllm"], help="rollout engine that receives the weights")
    a = p.parse_args(argv)

    load_start = os.getloadavg()
    import ray

    from rlcustom.models.tiny import save_tiny
    from rlcustom.trainers.ppo import PPOTrainer

    tmp = tempfile.mkdtemp(prefix="rlcustom-bench-sync-")
    rows, ratios, notes = [], {}, []
    full_135m_sync = None
    ppo_error: Exception | None = None
    try:
        models = []
        for layers, hidden in _sizes(a.sizes):
            heads = max(2, hidden // 32)  # head size 32 (vLLM's CPU kernels take it)
            d = save_tiny(f"{tmp}/tiny-{layers}x{hidden}", seed=0, layers=layers, hidden=hidden, heads=heads,
                          kv_heads=max(1, heads // 4), intermediate=2 * hidden)
            models.append((f"tiny {layers}x{hidden}", str(d)))
        if not a.no_135m:
            models.append(("smollm2-135m", MODEL_135M))

        # -- 1. full weights vs size
        for label, path in models:
            cfg = ts.demo_config([f"model.path={path}", "model.lora=null", f"engine={a.engine}",
                                  f"output_dir={tmp}/out"])
            trainer = _sync_only_trainer(cfg)
            start_s = ts.start(trainer)
            try:
                times, nbytes = _time_sync(trainer, cfg, a.repeats, a.warmup)
            finally:
                trainer.shutdown()
            n = ts.param_count(path)
            for mode, t in times.items():
                s = summarize(t)
                rows.append({"part": "size", "model": label, "params_m": n / 1e6, "weights": "full", "path": mode,
                             "mb_sent": nbytes.get(mode, 0.0) / 1e6 or None, **s,
                             "gb_per_s": (nbytes.get("collective", 0.0) / 1e9) / s["median_s"]})
            if path == MODEL_135M:
                full_135m_sync = summarize(times["collective"])["median_s"]
            print(f"{label} ({n / 1e6:.1f}M params, roles up in {start_s:.0f} s): collective "
                  f"{summarize(times['collective'])['median_s']:.3f} s, object_store "
                  f"{summarize(times['object_store'])['median_s']:.3f} s", flush=True)

        # -- 2. share of a PPO step (the demo's run)
        def ppo(overrides: list[str], label: str) -> float | None:
            cfg = ts.demo_config([f"output_dir={tmp}/ppo", f"engine={a.engine}", f"model.path={a.ppo_model}",
                                  *overrides])
            trainer = PPOTrainer(cfg)
            ts.start(trainer)
            try:
                ts.run_step(trainer)  # warm-up: also sets up the gloo group
                walls, syncs = [], []
                for _ in range(a.ppo_steps):
                    wall, stats = ts.run_step(trainer)
                    walls.append(wall)
                    syncs.append(stats["timing/sync_s"])
                    print(f"ppo {label} step {trainer.step_idx}: {wall:.1f} s, sync {stats['timing/sync_s']:.3f} s "
                          f"({100 * stats['timing/sync_s'] / wall:.2f}%); phases "
                          + ", ".join(f"{k[7:-2]} {v:.1f}" for k, v in stats.items() if k.startswith("timing/")),
                          flush=True)
                    rows.append({"part": "ppo_step", "model": a.ppo_model, "weights": label, "path": "collective",
                                 "step_s": wall, "sync_s": stats["timing/sync_s"],
                                 "share_pct": 100 * stats["timing/sync_s"] / wall,
                                 **{k: v for k, v in stats.items() if k.startswith("timing/")}})
                step = statistics.median(walls)
                ratios[f"sync_share_of_ppo_step_{label}_pct"] = 100 * statistics.median(syncs) / step
                times, nbytes = _time_sync(trainer, cfg, a.repeats, 0)
                for mode, t in times.items():
                    s = summarize(t)
                    rows.append({"part": "ppo_sync", "model": a.ppo_model, "weights": label, "path": mode,
                                 "mb_sent": nbytes.get(mode, 0.0) / 1e6 or None, **s,
                                 "share_pct": 100 * s["median_s"] / step})
                    ratios[f"{mode}_{label}_sync_share_of_ppo_step_pct"] = 100 * s["median_s"] / step
                return step
            finally:
                trainer.shutdown()

        try:  # the size sweep above is kept (and reported) if a PPO part cannot run
            if a.ppo_steps > 0:
                step = ppo([], "lora_adapter")
                if full_135m_sync is not None and a.ppo_model == MODEL_135M:
                    ratios["full_135m_collective_sync_over_lora_ppo_step_pct"] = 100 * full_135m_sync / step
                if a.ppo_full:
                    ppo(["model.lora=null", "optim.lr=1e-5"], "full")
        except Exception as e:  # noqa: BLE001 - reported with the size rows, then raised
            ppo_error = e
            notes.append(f"PPO part failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            print(f"weight_sync: {notes[-1]}", flush=True)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    notes += ["size rows: full weights, no LoRA; a sync = learner rank 0 -> 1 rollout replica incl. load_weights",
              "gb_per_s: bytes of the collective sync / median time of the row",
              "ppo_step rows: configs/examples/ppo_length.yaml (LoRA r=8, 4x4 rollouts of <=32 tokens, 2 PPO epochs), one warm-up "
              "step not shown; share_pct = timing/sync_s / the step's wall time",
              "full_135m_collective_sync_over_lora_ppo_step_pct: full-weight sync over the LoRA step (an upper bound "
              "for full-parameter PPO, whose steps are longer)",
              "load average (1, 5, 15 min) at start %s, at end %s (shared machine)"
              % tuple(", ".join(f"{x:.1f}" for x in la) for la in (load_start, os.getloadavg()))]
    report("weight_sync", {"sizes": a.sizes, "model_135m": not a.no_135m, "repeats": a.repeats, "warmup": a.warmup,
                           "ppo_steps": a.ppo_steps, "ppo_model": a.ppo_model, "ppo_full": a.ppo_full,
                           "engine": a.engine,
                           "threads_per_role": ts.threads(), "dtype": "float32", "target": "sync < 5% of a PPO step"},
           rows, ratios, notes)
    if ppo_error is not None:
        raise ppo_error


if __name__ == "__main__":
    main()
