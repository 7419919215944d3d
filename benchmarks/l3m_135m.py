"""L3M vs the min-max baseline vs SFT-only on the embedded SmolLM2-135M-Instruct: a length interval.

    python -m benchmarks.l3m_135m [--lo 20 --hi 40 --steps 36 ...]     (not part of `rlcustom bench all`)

The paper's Table 1 setting (Dhillon et al. 2025, Section 6.2) at a 2-core budget: the task is
SFT on HH-RLHF chosen replies; the constraint is ``lo <= E[|y|] <= hi`` response tokens (two
constraints, ``length.lo`` and ``length.hi``). Three trainings from the same model with the same
seed, steps, data order and coin flips (``configs/l3m.yaml`` with the overrides below):

- ``l3m``: trainer ``l3m`` (relaxed log-barrier, Eq. 11);
- ``mm``: trainer ``mm`` (Lagrangian with multipliers learned by projected ascent, ``--multiplier-lr``);
- ``sft``: trainer ``l3m`` with ``algo.task_prob=1`` -- task steps only (the same task batches
  as the others' task steps, in the same order, and twice as many of them).

Every trained model and the base model are then evaluated alike: ``--eval-samples`` answers to
each of ``--eval-prompts`` held-out prompts (validation split, sampling as in training: temperature,
top-p, ``max_new_tokens``, a fixed seed), reporting mean length, the fraction of answers with
``lo <= |y| <= hi`` and the stop rate; and the task perplexity of held-out SFT rows (the chosen
replies of ``--ppl-pairs`` validation pairs, :func:`rlcustom.eval.metrics.evaluate` with
``metrics=("ppl",)``, as ``rlcustom eval --metrics ppl``). The per-step metrics of each run (its
offline W&B log) give the constraint trajectories: mean rollout length per constraint step, the EMA
of ``C_i``, the multipliers (L3M: implied, Sec. 5.2; MM: learned), ``mu`` and the trainer's task
perplexity. Writes ``benchmarks/results/l3m_135m.json`` and a plot next to it (PNG with
matplotlib).

Phases, so the trainings can run side by side in separate processes:
``--phase train --variants l3m`` trains (skipped when ``OUT/<variant>/model`` exists, ``--retrain``
to redo); ``--phase eval --variants base,l3m`` evaluates (cached in ``OUT/<variant>/eval.json``
for the same settings); ``--phase all`` (default) does what is missing and writes the report.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IN_BENCH_ALL = False  # an experiment of tens of minutes: `rlcustom bench all` leaves it out (run it by name)
VARIANTS = ("l3m", "mm", "sft")
RUN_KEYS = ("model", "lo", "hi", "seed", "steps", "lr", "warmup", "max_new_tokens", "temperature", "top_p", "n",
            "prompts_per_step", "task_batch_size", "max_completion_tokens", "max_prompt_tokens", "ema_smoothing",
            "mu_start", "mu_end", "multiplier_lr", "task_max_grad_norm", "constraint_max_grad_norm", "eval_rows",
            "eval_every")
# keys an SFT-only run ignores (it takes no constraint step), so one SFT-only run serves every interval
CONSTRAINT_ONLY_KEYS = ("lo", "hi", "n", "prompts_per_step", "ema_smoothing", "mu_start", "mu_end", "multiplier_lr",
                        "constraint_max_grad_norm")
EVAL_KEYS = ("seed", "max_new_tokens", "temperature", "top_p", "max_prompt_tokens", "eval_prompts",
             "eval_samples", "ppl_pairs")


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.l3m_135m", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/l3m-135m", help="one output_dir per variant under it")
    p.add_argument("--name", default="l3m_135m", help="results: benchmarks/results/NAME.json and the plot NAME.png")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--phase", choices=["all", "train", "eval"], default="all")
    p.add_argument("--variants", default="l3m,mm,sft", help="trainings (and, for --phase eval, 'base')")
    p.add_argument("--retrain", action="store_true", help="train even if OUT/<variant>/model exists")
    p.add_argument("--lo", type=float, default=20.0, help="lower end of the length interval (tokens)")
    p.add_argument("--hi", type=float, default=40.0, help="upper end")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=32, help="trainer steps (coin: about half are constraint steps)")
    p.add_argument("--lr", type=float, default=1e-4, help="peak of a cosine schedule over the run")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--n", type=int, default=2, help="answers per prompt in a constraint step")
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--task-batch-size", type=int, default=8)
    p.add_argument("--max-completion-tokens", type=int, default=96)
    p.add_argument("--max-prompt-tokens", type=int, default=128)
    p.add_argument("--ema-smoothing", type=float, default=0.3, help="weight of the newest batch in the EMA of C_i")
    p.add_argument("--mu-start", type=float, default=1.0)
    p.add_argument("--mu-end", type=float, default=1e-3)
    p.add_argument("--multiplier-lr", type=float, default=0.1, help="mm: step size of the multipliers' ascent")
    p.add_argument("--task-max-grad-norm", type=float, default=1.0)
    p.add_argument("--constraint-max-grad-norm", type=float, default=1.0)
    p.add_argument("--eval-rows", type=int, default=16, help="trainer's eval/task_ppl rows (training data)")
    p.add_argument("--eval-every", type=int, default=8)
    p.add_argument("--eval-prompts", type=int, default=48, help="held-out prompts (validation split)")
    p.add_argument("--eval-samples", type=int, default=2, help="answers per held-out prompt")
    p.add_argument("--ppl-pairs", type=int, default=64, help="held-out SFT rows for the task perplexity")
    p.add_argument("--threads", type=int, default=1, help="torch threads per role / in the evaluation")
    p.add_argument("--cached-evals-only", action="store_true",
                   help="report: no new evaluation; a model without a cached one gets a row without held-out numbers")
    a = p.parse_args(argv)
    a.variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    bad = [v for v in a.variants if v not in (*VARIANTS, "base")]
    if bad:
        p.error(f"--variants: unknown {bad} (have base, {', '.join(VARIANTS)})")
    if a.lo > a.hi:
        p.error(f"--lo {a.lo} > --hi {a.hi}")
    return a


def _out(a) -> Path:
    return (ROOT / a.out) if not Path(a.out).is_absolute() else Path(a.out)


# --------------------------------------------------------------------------- training


def variant_config(a, variant: str) -> dict:
    """``configs/l3m.yaml`` with this benchmark's settings; ``mm`` swaps the barrier keys for the multipliers'."""
    import yaml

    cfg = yaml.safe_load((ROOT / "configs/l3m.yaml").read_text())
    out = _out(a) / variant
    cfg |= {"trainer": "mm" if variant == "mm" else "l3m", "seed": a.seed, "output_dir": str(out), "steps": a.steps,
            "save_every": 0, "resume": "never", "engine": "hf"}
    cfg["model"]["path"] = a.model
    cfg["data"] |= {"split": "train", "max_prompt_tokens": a.max_prompt_tokens}
    cfg["sampling"] |= {"max_new_tokens": a.max_new_tokens, "temperature": a.temperature, "top_p": a.top_p, "n": a.n}
    cfg["optim"] |= {"lr": a.lr, "warmup_steps": a.warmup, "total_steps": a.steps, "micro_batch_size": 8}
    algo = cfg["algo"]
    algo |= {"constraints": [{"name": "length", "reward": "length_tokens", "lo": a.lo, "hi": a.hi}],
             "prompts_per_step": a.prompts_per_step, "task_batch_size": a.task_batch_size,
             "max_completion_tokens": a.max_completion_tokens, "task_prob": 1.0 if variant == "sft" else 0.5,
             "task_max_grad_norm": a.task_max_grad_norm, "constraint_max_grad_norm": a.constraint_max_grad_norm,
             "ema_smoothing": a.ema_smoothing, "eval_rows": a.eval_rows, "eval_every": a.eval_every}
    if variant == "mm":
        algo.pop("mu_start", None)
        algo.pop("mu_end", None)
        algo |= {"multiplier_lr": a.multiplier_lr, "multiplier_init": 0.0}
    else:
        algo |= {"mu_start": a.mu_start, "mu_end": a.mu_end}
    cfg["roles"] = {"rollout": {"cpus": 1, "num_threads": a.threads},
                    "learner": {"cpus": 1, "zero_stage": 2, "num_threads": a.threads},
                    "reward": {"cpus": 0.25, "num_threads": 1}}
    cfg["cluster"] = {"num_cpus": 4}  # Ray's bookkeeping only; the cpu_slot wrapper bounds the real use
    cfg["tracking"] = {"project": "rlcustom", "group": "l3m-135m", "name": f"l3m-135m-{variant}", "mode": "offline"}
    return cfg


def train(a, variant: str) -> dict:
    """One training through the CLI, as a user runs it; returns its wall time and config."""
    import yaml

    out = _out(a) / variant
    out.mkdir(parents=True, exist_ok=True)
    cfg = variant_config(a, variant)
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [sys.executable, "-m", "rlcustom.cli", "train", str(path)]
    print("$", " ".join(cmd[2:]), flush=True)
    # on a shared machine Ray's memory monitor kills *our* workers when *other* processes fill memory
    env = os.environ | {"RAY_memory_monitor_refresh_ms": os.environ.get("RAY_memory_monitor_refresh_ms", "0")}
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    meta = {"variant": variant, "train_s": time.perf_counter() - t, "settings": run_settings(a, variant)}
    (out / "train_meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def run_settings(a, variant: str) -> dict:
    return {k: getattr(a, k) for k in RUN_KEYS if not (variant == "sft" and k in CONSTRAINT_ONLY_KEYS)}


# --------------------------------------------------------------------------- evaluation


def length_stats(lens: list[int], lo: float, hi: float) -> dict:
    """Mean length and the shares of answers below, inside and above ``[lo, hi]``."""
    n, m = len(lens), sum(lens) / len(lens)
    sd = (sum((x - m) ** 2 for x in lens) / max(n - 1, 1)) ** 0.5
    return {"mean_len": m, "mean_len_se": sd / n ** 0.5, "median_len": sorted(lens)[n // 2], "frac_in_range": sum(lo <= x <= hi for x in lens) / n,
            "frac_below": sum(x < lo for x in lens) / n, "frac_above": sum(x > hi for x in lens) / n}


def evaluate_model(a, path: str) -> dict:
    """Held-out answers' length statistics and the held-out task perplexity of one model."""
    import dataclasses

    import torch

    from rlcustom.config import load_config
    from rlcustom.data.prompting import build_prompts
    from rlcustom.engines.base import SamplingParams
    from rlcustom.engines.hf import HFEngine
    from rlcustom.eval.metrics import evaluate
    from rlcustom.models.loading import load_causal_lm, load_tokenizer

    torch.set_num_threads(a.threads)
    cfg = load_config(None, [f"model.path={path}", "data.prompts=hh-rlhf", "data.split=validation",
                             f"data.max_prompt_tokens={a.max_prompt_tokens}", f"seed={a.seed}"])
    t = time.perf_counter()
    tok, model = load_tokenizer(path), load_causal_lm(path).eval()
    ps = build_prompts(dataclasses.replace(cfg.data, limit=a.eval_prompts), tok, seed=a.seed)
    params = SamplingParams(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_p=a.top_p,
                            n=a.eval_samples, seed=a.seed + 12345)  # the same seed for every model
    ro = HFEngine(model, tok, batch_size=32).generate(ps.ids, params)
    lens = [len(r) for r in ro.response_ids]
    gen_s = time.perf_counter() - t
    ppl = evaluate(cfg, policy=path, reference=None, metrics=("ppl",), pairs_limit=a.ppl_pairs)
    return {"mean_len": sum(lens) / len(lens), "stop_rate": sum(f == "stop" for f in ro.finish_reasons) / len(lens), "task_ppl": ppl["metrics"]["ppl"],
            "answers": len(lens), "prompts": len(ps.ids), "lengths": lens, "gen_s": gen_s,
            "ppl_s": ppl["seconds"], "example": {"prompt": ps.raw[0], "answer": ro.texts[0]}}


def cached_eval(a, variant: str, compute: bool = True) -> dict | None:
    """:func:`evaluate_model` of ``base`` or ``OUT/<variant>/model``, cached per settings in ``OUT/<variant>``
    (the interval is not one of them: the shares in range are computed from the stored lengths)."""
    out = _out(a) / variant
    model = a.model if variant == "base" else str(out / "model")
    if variant != "base" and not Path(model).is_dir():
        raise SystemExit(f"{model}: no trained model; run --phase train --variants {variant} first")
    key = {k: getattr(a, k) for k in EVAL_KEYS} | {"model": model}
    stamp = (out / "model" / "config.json").stat().st_mtime if variant != "base" else None
    f = out / "eval.json"
    if f.is_file():
        saved = json.loads(f.read_text())
        # "lo"/"hi": files written before the interval left the key (the lengths do not depend on it)
        same = {k: x for k, x in saved.get("settings", {}).items() if k not in ("lo", "hi")} == key
        if same and saved.get("model_mtime") == stamp:
            return saved["result"] | length_stats(saved["result"]["lengths"], a.lo, a.hi)
    if not compute:
        return None
    print(f"evaluating {variant} ({model})", flush=True)
    res = evaluate_model(a, model)
    out.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({"settings": key, "model_mtime": stamp, "result": res}, indent=1))
    res |= length_stats(res["lengths"], a.lo, a.hi)
    print(f"{variant}: mean length {res['mean_len']:.1f}, in range {res['frac_in_range']:.2f}, "
          f"task ppl {res['task_ppl']:.2f}", flush=True)
    return res


# --------------------------------------------------------------------------- trajectories


TRAJ_KEYS = {"task_step": "train/task_step", "response_len": "rollout/response_len", "mu": "constraint/mu",
             "train_task_ppl": "eval/task_ppl"}


def trajectory(run_dir: Path, names=("length.lo", "length.hi")) -> dict[str, list]:
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
        Panel("EMA of C_i (tokens)", "step", {f"{v} {n}": pts(v, f"length.{n}/ema") for v in con for n in ("lo", "hi")},
              hlines=(0.0,), markers=False),
        Panel("multiplier (L3M implied, MM learned)", "step",
              {f"{v} {n}": pts(v, f"length.{n}/multiplier") for v in con for n in ("lo", "hi")} |
              ({"l3m mu": pts("l3m", "mu")} if "l3m" in traj else {}), log_y=True, markers=False),
        Panel("task ppl (trainer, training rows)", "step", {v: pts(v, "train_task_ppl") for v in traj}),
    ]
    return write_panels(panels, stem)


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    a = _parse(argv if argv is not None else sys.argv[1:])
    out = _out(a)
    trained = [v for v in a.variants if v != "base"]
    if a.phase in ("all", "train"):
        for v in trained:
            if a.retrain or not (out / v / "model").is_dir():
                train(a, v)
            else:
                print(f"{v}: {out / v / 'model'} exists, not retrained (--retrain to redo)", flush=True)
    if a.phase == "train":
        return 0
    evals = {v: cached_eval(a, v, compute=not a.cached_evals_only)
             for v in (["base"] + trained if a.phase == "all" else a.variants)}
    missing = [v for v, r in evals.items() if r is None]
    evals = {v: r for v, r in evals.items() if r is not None}
    if a.phase == "eval":
        return 0

    from benchmarks.common import RESULTS, report

    names = {"base": "base (no training)", "sft": "SFT-only", "l3m": "L3M", "mm": "MM"}
    traj, metas, rows = {}, {}, []
    for v in ["base"] + trained if a.phase == "all" else a.variants:
        r = evals.get(v, {})
        row = {"variant": names[v]} | {k: r.get(k) for k in ("mean_len", "mean_len_se", "median_len", "frac_in_range",
                                                               "frac_below", "frac_above", "stop_rate", "task_ppl")}
        if v != "base":
            metas[v] = json.loads((out / v / "train_meta.json").read_text())
            if metas[v]["settings"] != run_settings(a, v):
                raise SystemExit(f"{out / v}: trained with other settings ({metas[v]['settings']}); --retrain")
            traj[v] = trajectory(out / v)
            t = traj[v]
            row["constraint_steps"] = sum(1 for x in t["task_step"] if x == 0.0)
            lens = [(s, x) for s, x in zip(t["step"], t["response_len"]) if x is not None]
            if lens:  # the rollout trajectory: first step whose batch mean was inside, share of steps inside after it
                first = next((i for i, (_, x) in enumerate(lens) if a.lo <= x <= a.hi), None)
                row["first_step_in_range"] = None if first is None else lens[first][0]
                row["rollout_steps_in_range_after"] = (None if first is None else
                                                       sum(a.lo <= x <= a.hi for _, x in lens[first:]) /
                                                       len(lens[first:]))
                row["rollout_len_last3"] = sum(x for _, x in lens[-3:]) / len(lens[-3:])
            ppl = [x for x in t["train_task_ppl"] if x is not None]
            row["trainer_task_ppl_last"] = ppl[-1] if ppl else None  # eval/task_ppl: fixed *training* rows
            row["train_s"] = metas[v]["train_s"]
        rows.append(row)
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot = write_plot(a, traj, RESULTS / a.name)
    ratios = {}
    if "sft" in evals:
        for v in ("l3m", "mm"):
            if v in evals:
                ratios[f"task ppl {names[v]} / SFT-only"] = evals[v]["task_ppl"] / evals["sft"]["task_ppl"]
    settings = dict(vars(a)) | {"plot": str(plot.relative_to(ROOT)) if plot.is_relative_to(ROOT) else str(plot)}
    notes = [f"{r['answers']} answers ({r['prompts']} held-out prompts x {a.eval_samples}) per model, "
             f"sampled at temperature {a.temperature}, top-p {a.top_p}, max {a.max_new_tokens} new tokens, one seed; "
             f"task ppl: chosen replies of {a.ppl_pairs} validation pairs" for r in list(evals.values())[:1]]
    if missing:
        notes.append(f"no held-out evaluation (not run: --cached-evals-only) for {', '.join(names[v] for v in missing)}")
    notes.append("trajectories (key 'trajectories'): per trainer step; response_len, EMA of C_i and the "
                 "multipliers are logged on constraint steps (EMA/multipliers carried on task steps)")
    path = report(a.name, settings, rows, ratios, notes)
    res = json.loads(path.read_text())  # the long parts go into the JSON only, not the printed table
    res |= {"trajectories": traj, "lengths": {v: r["lengths"] for v, r in evals.items()},
            "examples": {v: r["example"] for v, r in evals.items()}}
    path.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
