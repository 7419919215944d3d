"""L3M vs the min-max baseline vs SFT-only on the embedded SmolLM2-135M-Instruct: a length interval and a
sentiment bound.

    python -m benchmarks.l3m_135m [--lo 10 --hi 20 --sentiment-lo 0.35 --steps 48 ...]   (not in `bench all`)

The paper's Sections 6.2-6.3 at a 2-core budget: the task is SFT on HH-RLHF chosen replies; the
constraints are ``lo <= E[|y|] <= hi`` response tokens (two constraints, ``length.lo`` and
``length.hi``, Sec. 6.2) and ``E[vader(y)] >= sentiment_lo`` (``sentiment``: VADER's compound score
in [-1, 1], the registered reward ``vader_sentiment``), so k = 3. The defaults are chosen so that
SFT-only violates both (its held-out answers are longer than ``hi`` and less positive than the bound;
the report says whether it did, with SEs). Three trainings from the same model with the same
seed, steps, data order and coin flips (``configs/l3m.yaml`` with the overrides below):

- ``l3m``: trainer ``l3m`` (relaxed log-barrier, Eq. 11);
- ``mm``: trainer ``mm`` (Lagrangian with multipliers learned by projected ascent, ``--multiplier-lr``);
- ``sft``: trainer ``l3m`` with ``algo.task_prob=1`` -- task steps only (the same task batches
  as the others' task steps, in the same order, and twice as many of them).

Every trained model and the base model are then evaluated alike: ``--eval-samples`` answers to
each of ``--eval-prompts`` held-out prompts (validation split, sampling as in training: temperature,
top-p, ``max_new_tokens``, a fixed seed), reporting mean length and mean sentiment with SEs, the
fractions of answers inside the interval / at or above the bound, and the stop rate; and the task
perplexity of held-out SFT rows (the chosen replies of ``--ppl-pairs`` validation pairs, the
``rlcustom eval --metrics ppl`` definition: total NLL / total tokens), with its SE and the paired
difference of each constrained model's per-token NLL from SFT-only's on the same rows. The per-step
metrics of each run (its offline W&B log) give the constraint trajectories: mean rollout length and
sentiment per constraint step, the batch estimate and the EMA of each ``C_i``, the multipliers (L3M:
implied, Sec. 5.2; MM: learned), ``mu`` and the trainer's task perplexity; each constrained row gets
smoothness numbers of them (``benchmarks/_l3m_stats.smoothness``: the sd of the step-to-step changes
and the total variation over constraint steps). Writes ``benchmarks/results/l3m_135m.json`` and the
plot ``l3m_135m.png`` next to it (matplotlib).

Resumable phases: ``--phase train`` trains (skipped when ``OUT/<variant>/model`` exists, ``--retrain``
to redo), ``--jobs`` trainings side by side (each its own process and Ray, log in ``OUT/<variant>/train.log``);
``--phase eval --variants base,l3m`` evaluates (cached in ``OUT/<variant>/eval.json`` for the same
settings); ``--phase all`` (default) does what is missing and writes the report.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._l3m_report import trajectory, trajectory_row, write_plot

ROOT = Path(__file__).resolve().parent.parent
IN_BENCH_ALL = False  # an experiment of tens of minutes: `rlcustom bench all` leaves it out (run it by name)
VARIANTS = ("l3m", "mm", "sft")
RUN_KEYS = ("model", "lo", "hi", "length_unit", "sentiment_lo", "seed", "steps", "lr", "warmup", "max_new_tokens", "temperature", "top_p", "n",
            "prompts_per_step", "task_batch_size", "max_completion_tokens", "max_prompt_tokens", "ema_smoothing",
            "mu_start", "mu_end", "multiplier_lr", "task_max_grad_norm", "constraint_max_grad_norm", "eval_rows",
            "eval_every")
# keys an SFT-only run ignores (it takes no constraint step), so one SFT-only run serves every interval
CONSTRAINT_ONLY_KEYS = ("lo", "hi", "length_unit", "sentiment_lo", "n", "prompts_per_step", "ema_smoothing", "mu_start", "mu_end", "multiplier_lr",
                        "constraint_max_grad_norm")
EVAL_VERSION = 2  # 2: answers' texts and per-row NLLs stored (sentiment, SEs)
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
    p.add_argument("--jobs", type=int, default=2, help="trainings side by side (each about one core)")
    p.add_argument("--lo", type=float, default=10.0, help="lower end of the length interval (tokens)")
    p.add_argument("--hi", type=float, default=20.0, help="upper end")
    p.add_argument("--length-unit", type=float, default=10.0,
                   help="the length constraint counts in units of this many tokens (length_tokens scale 1/unit), "
                        "so its coefficients b_i - r_i are of the sentiment's size")
    p.add_argument("--sentiment-lo", type=float, default=0.35, help="bound b of E[vader compound] >= b")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=48, help="trainer steps (coin: about half are constraint steps)")
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
    p.add_argument("--multiplier-lr", type=float, default=1.0, help="mm: step size of the multipliers' ascent "
                   "(per unit of C_i: 1.0 at 10-token units = the earlier run's 0.1 per token)")
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
    if not -1.0 <= a.sentiment_lo <= 1.0:
        p.error(f"--sentiment-lo {a.sentiment_lo}: VADER's compound score is in [-1, 1]")
    if a.length_unit <= 0:
        p.error(f"--length-unit {a.length_unit}: must be > 0")
    if a.jobs < 1:
        p.error(f"--jobs {a.jobs}: at least 1")
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
    u = a.length_unit
    algo |= {"constraints": [{"name": "length", "reward": "length_tokens", "kwargs": {"scale": 1.0 / u},
                              "lo": a.lo / u, "hi": a.hi / u},
                             {"name": "sentiment", "reward": "vader_sentiment", "lo": a.sentiment_lo}],
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


def train(a, variant: str, log: bool = False) -> dict:
    """One training through the CLI, as a user runs it (console to ``OUT/<variant>/train.log`` when ``log``);
    returns its wall time and config."""
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
    if log:
        with open(out / "train.log", "w") as f:
            r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        if r.returncode:
            raise SystemExit(f"{variant}: training failed (exit {r.returncode}); see {out / 'train.log'}")
    else:
        subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    print(f"{variant}: trained in {time.perf_counter() - t:.0f} s", flush=True)
    meta = {"variant": variant, "train_s": time.perf_counter() - t, "settings": run_settings(a, variant)}
    (out / "train_meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def run_settings(a, variant: str) -> dict:
    return {k: getattr(a, k) for k in RUN_KEYS if not (variant == "sft" and k in CONSTRAINT_ONLY_KEYS)}


# --------------------------------------------------------------------------- evaluation


def evaluate_model(a, path: str) -> dict:
    """Held-out answers (lengths, VADER scores) and the per-row NLL of held-out task rows of one model."""
    import dataclasses

    import torch

    from rlcustom.config import load_config
    from rlcustom.data.chat import format_prompt
    from rlcustom.data.loaders import load_preference_pairs
    from rlcustom.data.prompting import build_prompts
    from rlcustom.engines.base import SamplingParams
    from rlcustom.engines.hf import HFEngine
    from rlcustom.eval.metrics import _seq_logprobs
    from rlcustom.models.loading import load_causal_lm, load_tokenizer
    from rlcustom.rewards.sentiment import vader_sentiment
    from rlcustom.trainers.offline import encode_pairs

    torch.set_num_threads(a.threads)
    cfg = load_config(None, [f"model.path={path}", "data.prompts=hh-rlhf", "data.split=validation",
                             f"data.max_prompt_tokens={a.max_prompt_tokens}", f"seed={a.seed}"])
    t = time.perf_counter()
    tok, model = load_tokenizer(path), load_causal_lm(path).eval()
    ps = build_prompts(dataclasses.replace(cfg.data, limit=a.eval_prompts), tok)
    params = SamplingParams(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_p=a.top_p,
                            n=a.eval_samples, seed=a.seed + 12345)  # the same seed for every model
    ro = HFEngine(model, tok, batch_size=32).generate(ps.ids, params)
    lens = [len(r) for r in ro.response_ids]
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    # the task perplexity as `rlcustom eval --metrics ppl` computes it (rlcustom/eval/metrics.py), kept per row
    d = cfg.data
    rows = list(load_preference_pairs(d.prompts, split="validation", val_fraction=d.val_fraction, seed=d.split_seed,
                                      limit=a.ppl_pairs))
    texts = [format_prompt(tok, r.get("messages") or r["prompt"], use_chat_template=d.chat_template) for r in rows]
    ch = encode_pairs(tok, texts, [r["chosen"] for r in rows], d.max_prompt_tokens, 256)
    nll = (-_seq_logprobs(model, ch, tok.pad_token_id)).tolist()
    return {"stop_rate": sum(f == "stop" for f in ro.finish_reasons) / len(lens), "answers": len(lens),
            "prompts": len(ps.ids), "lengths": lens, "texts": list(ro.texts),
            "sentiment": [vader_sentiment(ps.raw[i], y) for i, y in zip(ro.prompt_index, ro.texts)],
            "row_nll": nll, "row_tokens": [len(x) for x in ch.response_ids], "gen_s": gen_s,
            "ppl_s": time.perf_counter() - t, "example": {"prompt": ps.raw[0], "answer": ro.texts[0]}}


def summarize(a, res: dict) -> dict:
    """The held-out numbers of one model (with SEs) from its stored answers and row NLLs."""
    from benchmarks._l3m_stats import bound_stats, length_stats, token_nll

    return (res | length_stats(res["lengths"], a.lo, a.hi) | bound_stats(res["sentiment"], a.sentiment_lo, "sent")
            | token_nll(res["row_nll"], res["row_tokens"]))


def cached_eval(a, variant: str, compute: bool = True) -> dict | None:
    """:func:`evaluate_model` of ``base`` or ``OUT/<variant>/model``, cached per settings in ``OUT/<variant>``
    (the bounds are not among them: the report computes the shares from the stored lengths and scores)."""
    out = _out(a) / variant
    model = a.model if variant == "base" else str(out / "model")
    if variant != "base" and not Path(model).is_dir():
        raise SystemExit(f"{model}: no trained model; run --phase train --variants {variant} first")
    key = {k: getattr(a, k) for k in EVAL_KEYS} | {"model": model, "version": EVAL_VERSION}
    stamp = (out / "model" / "config.json").stat().st_mtime if variant != "base" else None
    f = out / "eval.json"
    if f.is_file():
        saved = json.loads(f.read_text())
        if saved.get("settings") == key and saved.get("model_mtime") == stamp:
            return summarize(a, saved["result"])
    if not compute:
        return None
    print(f"evaluating {variant} ({model})", flush=True)
    res = evaluate_model(a, model)
    out.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({"settings": key, "model_mtime": stamp, "result": res}, indent=1))
    res = summarize(a, res)
    print(f"{variant}: mean length {res['mean_len']:.1f}, in range {res['frac_in_range']:.2f}, mean sentiment "
          f"{res['mean_sent']:.3f}, task ppl {res['task_ppl']:.2f} ({res['gen_s'] + res['ppl_s']:.0f} s)", flush=True)
    return res


# --------------------------------------------------------------------------- main


NICE = {"base": "base (no training)", "sft": "SFT-only", "l3m": "L3M", "mm": "MM"}
ROW_KEYS = ("mean_len", "mean_len_se", "median_len", "frac_in_range", "frac_in_range_se", "mean_sent", "mean_sent_se",
            "frac_sent_ge_b", "stop_rate", "task_ppl", "task_ppl_se")


def train_all(a, variants: list[str]) -> None:
    """The missing trainings, ``--jobs`` at a time (the constrained ones first: they take longest)."""
    out = _out(a)
    todo = [v for v in variants if a.retrain or not (out / v / "model").is_dir()]
    for v in variants:
        if v not in todo:
            print(f"{v}: {out / v / 'model'} exists, not retrained (--retrain to redo)", flush=True)
    if a.jobs == 1 or len(todo) < 2:
        for v in todo:
            train(a, v)
        return
    with concurrent.futures.ThreadPoolExecutor(a.jobs) as pool:  # each job waits on its own process
        for f in [pool.submit(train, a, v, True) for v in todo]:
            f.result()


def variant_row(a, v: str, r: dict, out: Path, traj: dict, smooth: dict) -> dict:
    row = {"variant": NICE[v]} | {k: r.get(k) for k in ROW_KEYS}
    # "in expectation": the held-out mean inside the bound, and by how many SEs (negative: violated)
    if r:
        row["len_margin_se"] = min(r["mean_len"] - a.lo, a.hi - r["mean_len"]) / max(r["mean_len_se"], 1e-12)
        row["sent_margin_se"] = (r["mean_sent"] - a.sentiment_lo) / max(r["mean_sent_se"], 1e-12)
        row["meets_both"] = row["len_margin_se"] >= 0 and row["sent_margin_se"] >= 0
    if v == "base":
        return row
    meta = json.loads((out / v / "train_meta.json").read_text())
    if meta["settings"] != run_settings(a, v):
        raise SystemExit(f"{out / v}: trained with other settings ({meta['settings']}); --retrain")
    t = traj[v] = trajectory(out / v)
    row["constraint_steps"] = sum(1 for x in t["task_step"] if x == 0.0)
    if row["constraint_steps"]:
        smooth[v] = trajectory_row(t)
    ppl = [x for x in t["train_task_ppl"] if x is not None]
    row["trainer_task_ppl_last"] = ppl[-1] if ppl else None  # eval/task_ppl: fixed *training* rows
    row["train_s"] = meta["train_s"]
    return row


def main(argv=None) -> int:
    a = _parse(argv if argv is not None else sys.argv[1:])
    out = _out(a)
    trained = [v for v in a.variants if v != "base"]
    if a.phase in ("all", "train"):
        train_all(a, trained)
    if a.phase == "train":
        return 0
    order = ["base"] + trained if a.phase == "all" else a.variants
    evals = {v: cached_eval(a, v, compute=not a.cached_evals_only) for v in order}
    missing = [v for v, r in evals.items() if r is None]
    evals = {v: r for v, r in evals.items() if r is not None}
    if a.phase == "eval":
        return 0

    from benchmarks._l3m_stats import paired_nll_diff
    from benchmarks.common import RESULTS, report

    traj: dict[str, dict] = {}
    smooth: dict[str, dict] = {}
    rows = [variant_row(a, v, evals.get(v, {}), out, traj, smooth) for v in order]
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot = write_plot(a, traj, RESULTS / a.name)
    ratios = {}
    if "sft" in evals:  # paired on the same held-out rows: the rows' common difficulty cancels
        s = evals["sft"]
        for v in ("l3m", "mm"):
            if v in evals:
                d, se = paired_nll_diff(evals[v]["row_nll"], s["row_nll"], s["row_tokens"])
                ratios[f"task ppl {NICE[v]} / SFT-only"] = evals[v]["task_ppl"] / s["task_ppl"]
                ratios[f"task NLL {NICE[v]} - SFT-only (nats/token)"] = d
                ratios[f"task NLL {NICE[v]} - SFT-only SE"] = se
        if "l3m" in evals and "mm" in evals:
            d, se = paired_nll_diff(evals["l3m"]["row_nll"], evals["mm"]["row_nll"], s["row_tokens"])
            ratios["task NLL L3M - MM (nats/token)"], ratios["task NLL L3M - MM SE"] = d, se
    for v, sm in smooth.items():
        ratios |= {f"{NICE[v]} {k}": x for k, x in sm.items()}
    if "l3m" in smooth and "mm" in smooth:  # > 1: L3M's trajectory is the smoother one
        for k, x in smooth["l3m"].items():
            if k.endswith("dC sd") and x > 0:
                ratios[f"{k}: MM / L3M"] = smooth["mm"][k] / x
    settings = dict(vars(a)) | {"plot": str(plot.relative_to(ROOT)) if plot.is_relative_to(ROOT) else str(plot)}
    notes = [f"{r['answers']} answers ({r['prompts']} held-out prompts x {a.eval_samples}) per model, "
             f"sampled at temperature {a.temperature}, top-p {a.top_p}, max {a.max_new_tokens} new tokens, one seed; "
             f"task ppl: chosen replies of {a.ppl_pairs} validation pairs (SE: delta method over rows)"
             for r in list(evals.values())[:1]]
    notes.append("len_margin_se / sent_margin_se: distance of the held-out mean inside its bound in SEs "
                 "(negative: violated in expectation); meets_both: both >= 0")
    notes.append(f"length constraint in units of {a.length_unit:g} tokens (length_tokens scale 1/unit); smoothness "
                 "(ratios), over constraint steps: '<c> dC sd' = sd of the step-to-step changes of the batch "
                 "estimate of C_i, '<c> C TV' its total variation, 'dEMA sd' / 'dlambda sd' the same sd for the "
                 "EMA of C_i and the multiplier (L3M's implied multiplier grows as mu decays)")
    if missing:
        notes.append(f"no held-out evaluation (not run: --cached-evals-only) for {', '.join(NICE[v] for v in missing)}")
    notes.append("trajectories (key 'trajectories'): per trainer step; response_len, sentiment, C_i (value), "
                 "its EMA and the multipliers are logged on constraint steps (EMA/multipliers carried on task steps)")
    cmd = "python -m benchmarks.l3m_135m " + " ".join(argv if argv is not None else sys.argv[1:])
    path = report(a.name, settings, rows, ratios, notes, command=cmd.strip())
    res = json.loads(path.read_text())  # the long parts go into the JSON only, not the printed table
    res |= {"trajectories": traj, "lengths": {v: r["lengths"] for v, r in evals.items()},
            "sentiment": {v: r["sentiment"] for v, r in evals.items()},
            "examples": {v: r["example"] for v, r in evals.items()}}
    path.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
