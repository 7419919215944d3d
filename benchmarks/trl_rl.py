"""PPO and GRPO: samples/s and time per phase, rlcustom vs TRL's trainers, on CPU, whole steps alternated.

    rlcustom bench trl_rl [--models tiny,smollm2-135m-instruct] [--algos grpo,ppo] [--steps 6] [--warmup 1]
                          [--stop-spread 10] [--threads N] [--overlap on|off] [--overlap-threads N]
                          [--completions 8] [--new-tokens 32] [--dtype float32] [--engine hf]
                          [--vllm auto|skip] [--quick]

Both sides train the same model (a seeded tiny Llama written to a directory, and/or the 135M model)
on the same prompts with the same LoRA (r=8, alpha=16 on q,k,v,o), learning rate, number and length
of completions, and seed. Per (model, algo) each side is one persistent process
(:mod:`benchmarks._trl_rl_sides`) that runs ONE optimizer step when the parent says so and then
blocks; the parent alternates whole steps, A B A B ... (:mod:`benchmarks._alternate`), drops the
``--warmup`` rounds and runs ``--steps`` measured rounds (fewer once every side's and ratio's spread is
under ``--stop-spread`` %, after 4). All sides are alive at once but only one computes at a time, so a
change of the machine's load lands on both; every ratio is taken per round, then its median and spread.
Every process and role actor gets the same torch threads and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``
(``--threads``), which each side reports (the ``threads`` column); the load average before and after
each case and the run is in the JSON. The TRL side runs with TRL on ``PYTHONPATH``
(``.bench/trl-<version>``, set up by ``make bench-deps``), so torch/transformers/peft are the same.

* GRPO: TRL 1.16's ``GRPOTrainer`` in its defaults (``model.generate`` for generation, gradient
  checkpointing on, bf16 autocast, beta = 0 so no reference model, one update per generation) vs
  rlcustom's ``pg`` trainer with ``advantage: grpo`` (the same computation: group-normalised
  rewards, one policy-gradient update per batch, no reference). One prompt x ``completions``
  completions per step (TRL's default group of 8), reward: ``target_length`` (20 words).
* PPO: TRL 1.12's ``experimental.ppo.PPOTrainer`` (TRL removed PPO after 1.12) vs rlcustom's
  ``ppo`` trainer at its LoRA defaults (value head on the policy, reference = the policy with its
  adapter disabled): ``completions`` prompts x 1 completion, a reward model (the policy's backbone with
  a fresh scalar head), KL penalty 0.05 to the frozen base, one PPO epoch, one mini-batch. Behaviour
  log-probs come from the sampler on both sides.
* ``rlcustom max_staleness=1`` (``--overlap on``): the same rlcustom run with ``algo.max_staleness: 1``
  (the next step generates while this one trains; :mod:`rlcustom.trainers.overlap`). Its step still
  ends with the sync stage, after the launched generation has finished, so it alternates like the
  others. Generation and training run at once, so each of its roles gets ``--overlap-threads``
  (default ``threads // 2``: the two add up to the others' threads). ``overlap_ratio`` = its step /
  max(generate, train) of the ``max_staleness: 0`` row of the same run.
* TRL with vLLM (``use_vllm=True, vllm_mode="colocate"``): tried on the tiny model with
  ``--vllm auto``; if it cannot start, the reason is recorded in the JSON.

Phases: rlcustom's own per-step timers (``timing/{generate,score,train,sync}_s``, as logged to W&B);
TRL's are measured by wrapping its generation / scoring calls, with train = step wall - the rest.
``--quick``: the tiny model, 2 measured rounds, written to ``results/trl_rl_quick.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._alternate import (Side, alternate, measured, median, pair_ratios, spread_pct,  # noqa: F401
                                   summary, threads_label)

BENCH_ALL_ARGS = ["--quick"]  # `rlcustom bench all`: the defaults take longer than its 15 minutes per benchmark
ROOT = Path(__file__).resolve().parent.parent


def pinned_trl(name: str) -> str:
    """The TRL version pinned in benchmarks/<name> (what ``make bench-deps`` installs)."""
    for line in (ROOT / "benchmarks" / name).read_text().splitlines():
        if line.strip().startswith("trl=="):
            return line.split("==", 1)[1].strip()
    raise SystemExit(f"benchmarks/{name}: no 'trl==<version>' line")


TRL_GRPO_VERSION = pinned_trl("requirements-trl.txt")  # newest TRL; runs with our transformers (GRPO/DPO/RM)
TRL_PPO_VERSION = pinned_trl("requirements-trl-ppo.txt")  # the last TRL with a PPOTrainer (trl.experimental.ppo)
PHASES = ("generate", "score", "train", "sync")
QUESTIONS = ["What is the capital of France?", "Tell me a joke.", "How do I bake bread?", "Name three colors.",
             "Why is the sky blue?", "Give me a tip for sleeping well.", "What is two plus two?",
             "Write one sentence about cats."]
LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]}


# ----------------------------------------------------------------------------- shared with trl_offline


def trl_dir(version: str) -> Path:
    d = ROOT / ".bench" / f"trl-{version}"
    if not (d / "trl" / "__init__.py").is_file():
        raise SystemExit(f"TRL {version} not found in {d}: run `make bench-deps` first")
    return d


def run_worker(module: str, version: str, spec: dict, threads: int, timeout_s: float = 1800) -> dict:
    """Run ``python -m benchmarks.<module> --worker spec.json`` with TRL ``version`` importable; its result JSON."""
    try:
        trl_path = trl_dir(version)
    except SystemExit as e:  # recorded as this side's error: `rlcustom bench all` goes on
        return {"error": str(e), "tail": []}
    with tempfile.TemporaryDirectory(prefix="trl_worker_") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps({**spec, "out": str(out_path), "tmp": tmp}))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(trl_path), str(ROOT)]),
                   OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
                   WANDB_MODE="disabled", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                   TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore")
        try:
            p = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--worker", str(spec_path)], env=env,
                               cwd=str(ROOT), capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            tail = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            return {"error": f"no result within {timeout_s:.0f} s (killed)", "tail": tail.splitlines()[-25:]}
        if p.returncode != 0 or not out_path.is_file():
            lines = [ln for ln in (p.stdout + "\n" + p.stderr).splitlines() if ln.strip()]
            errs = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", ln.strip())]
            return {"error": (errs or lines or [f"exit {p.returncode}"])[-1].strip()[:500], "tail": lines[-25:]}
        return json.loads(out_path.read_text())


def step_callback(phases: dict, steps: list):
    """A TrainerCallback that closes a step at each ``on_step_end``: wall time since the previous one
    plus the phase seconds accumulated in ``phases`` (then cleared)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            phases.clear()
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            steps.append({"wall_s": now - self.t, **{k: v for k, v in phases.items()}})
            phases.clear()
            self.t = now

    return StepTimer()


def timed(fn, phases: dict, name: str, when=lambda: True):
    """``fn`` that adds its seconds to ``phases[name]`` (when ``when()`` holds at call time)."""
    def wrapper(*a, **kw):
        if not when():
            return fn(*a, **kw)
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - t
    return wrapper


def prep_models(tmp: Path, names: list[str]) -> dict[str, str]:
    """model label -> directory both sides load (the tiny model is written once per run)."""
    from rlcustom.models.loading import resolve_model_path
    from rlcustom.models.tiny import save_tiny

    out = {}
    for n in names:
        out[n] = str(save_tiny(tmp / "tiny", seed=0)) if n == "tiny" else str(resolve_model_path(n))
    return out


# ----------------------------------------------------------------------------- shared by both TRL processes


def target_length_reward(completions, **kw) -> list[float]:
    """rlcustom's ``target_length`` (target 20 words) for TRL's reward-function interface."""
    from rlcustom.rewards import target_length

    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [target_length("", t, target=20) for t in texts]


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                      target_modules=LORA["targets"], task_type="CAUSAL_LM")


# ----------------------------------------------------------------------------- the sides


def rlcustom_overrides(algo: str, model_dir: str, a, tmp: Path, threads: int, staleness: int = 0) -> list[str]:
    """The rlcustom trainer's config for one side: every role with ``threads`` torch threads."""
    out = tmp / f"rlcustom_{algo}_{Path(model_dir).name}_ms{staleness}"
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QUESTIONS))
    trainer = "trainer=pg" if algo == "grpo" else "trainer=ppo"  # first: the algo.* keys below are the trainer's
    common = [trainer, f"model.path={model_dir}", f"output_dir={out}", f"data.prompts={prompts}", "data.split=all",
              f"steps={a.warmup + a.steps + 1}", "save_every=0", "resume=never", f"seed={a.seed}",
              f"engine={a.engine}", f"model.dtype={a.dtype}", f"model.lora.r={LORA['r']}",
              f"model.lora.alpha={LORA['alpha']}", f"model.lora.dropout={LORA['dropout']}",
              f"sampling.max_new_tokens={a.new_tokens}", "sampling.temperature=1.0", f"optim.lr={a.lr}",
              f"optim.micro_batch_size={a.completions}", "tracking.mode=disabled", "roles.learner.zero_stage=0",
              f"algo.max_staleness={staleness}"]
    roles = ("rollout", "learner", "reward") + (("reference", "critic") if algo == "ppo" else ())
    common += [f"roles.{r}.{k}={v}" for r in roles for k, v in (("cpus", 0.25), ("num_threads", threads))]
    if algo == "grpo":
        return common + ["algo.advantage=grpo", "algo.prompts_per_step=1", f"sampling.n={a.completions}",
                         "reward.spec=target_length", "reward.kwargs.target=20"]
    from rlcustom.models.heads import RewardModel

    rm_dir = tmp / f"rm_{Path(model_dir).name}"
    if not rm_dir.exists():  # the policy's backbone + a fresh scalar head (TRL: AutoModelForSequenceClassification)
        RewardModel.from_pretrained(model_dir, with_tokenizer=True).save(rm_dir)
    return common + ["algo.advantage=gae", f"algo.prompts_per_step={a.completions}", "sampling.n=1",
                     "algo.ppo_epochs=1", "algo.kl_coef=0.05", "algo.recompute_logprobs=false", "reward.spec=model",
                     f"reward.model_path={rm_dir}", f"reward.kwargs.dtype={a.dtype}"]


def make_sides(model: str, model_dir: str, algo: str, a, tmp: Path) -> list[Side]:
    """rlcustom (max_staleness 0), rlcustom max_staleness 1 (``--overlap``), TRL (and TRL + vLLM on the tiny
    model with ``--vllm auto``): one process each, same threads, TRL on ``PYTHONPATH`` for its sides."""
    version = TRL_GRPO_VERSION if algo == "grpo" else TRL_PPO_VERSION
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads),
               TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore",
               PYTHONPATH=str(ROOT))
    base = {"algo": algo, "model_dir": model_dir, "max_steps": a.warmup + a.steps, "completions": a.completions,
            "new_tokens": a.new_tokens, "lr": a.lr, "seed": a.seed, "threads": a.threads}
    plan = [("rlcustom", {"side": "rlcustom", "overrides": rlcustom_overrides(algo, model_dir, a, tmp, a.threads)})]
    if a.overlap:
        ovl = rlcustom_overrides(algo, model_dir, a, tmp, a.overlap_threads, staleness=1)
        plan.append(("rlcustom max_staleness=1", {"side": "rlcustom", "overrides": ovl}))
    trl_path = ROOT / ".bench" / f"trl-{version}"
    plan.append((f"trl-{version}", {"side": "trl"}))
    if algo == "grpo" and model == "tiny" and a.vllm == "auto":
        plan.append((f"trl-{version}+vllm", {"side": "trl", "vllm": True}))
    sides = []
    for i, (name, extra) in enumerate(plan):
        d = tmp / f"{algo}_{model}_{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "spec.json").write_text(json.dumps(base | extra | {"tmp": str(d)}))
        side_env = dict(env, PYTHONPATH=os.pathsep.join([str(trl_path), str(ROOT)])) if extra["side"] == "trl" else env
        s = Side(name, [sys.executable, "-m", "benchmarks._trl_rl_sides", str(d / "spec.json")], side_env,
                 d / "log.txt", cwd=str(ROOT), start_timeout_s=420 if extra.get("vllm") else 900)
        if extra["side"] == "trl" and not (trl_path / "trl" / "__init__.py").is_file():
            s.error = f"TRL {version} not found in {trl_path}: run `make bench-deps` first"
        sides.append(s)
    return sides


# ----------------------------------------------------------------------------- rows and ratios


def side_row(model: str, algo: str, side: str, recs: list[dict], completions: int, *, error: str | None = None,
             ready: dict | None = None) -> dict:
    """Medians over the measured rounds (warm-up dropped) of one side's step records, with their spreads."""
    kept = measured(recs)
    row: dict = {"model": model, "algo": algo, "side": side}
    if ready and ready.get("threads"):
        row["threads"] = threads_label(ready["threads"])
    if not kept:
        return row | {"error": error or "no measured step", "raw_s": recs}
    walls = summary([s["wall_s"] for s in kept])
    row |= {"rounds": len(kept), "samples_per_s": completions / walls["median"], "step_median_s": walls["median"],
            "step_iqr_pct": walls["iqr_pct"], "spread_pct": walls["spread_pct"], "step_min_s": walls["min"],
            "step_max_s": walls["max"]}
    row |= {f"{p}_s": median([s.get(p, 0.0) for s in kept]) for p in PHASES}
    if any(s.get("rollout_wait") for s in kept):
        row["rollout_wait_s"] = median([s.get("rollout_wait", 0.0) for s in kept])
    lens = [s["response_len"] for s in kept if s.get("response_len") is not None]
    if lens:
        row["response_len"] = median(lens)
    if error:
        row["error"] = error
    if ready:
        row["threads_detail"] = ready.get("threads")
        if ready.get("config"):
            row["trl_config"] = json.dumps(ready["config"])
    return row | {"raw_s": recs}


def overlap_ratio(overlapped: dict, sync: dict) -> float:
    """The overlapped row's step over max(generate, train) of the synchronous row (its phases measured alone)."""
    return overlapped["step_median_s"] / max(sync["generate_s"], sync["train_s"])


# ----------------------------------------------------------------------------- main


def prepare_run(a: argparse.Namespace) -> tuple[float, float, float]:
    """--quick, the thread count, offline W&B (shared with trl_offline); returns the load average now."""
    if a.quick:
        a.models, a.steps = "tiny", 2
    a.threads = a.threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or 2
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    return os.getloadavg()


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rlcustom bench trl_rl")
    p.add_argument("--models", default="tiny,smollm2-135m-instruct")
    p.add_argument("--algos", default="grpo,ppo")
    p.add_argument("--steps", type=int, default=6, help="measured rounds at most (one step of each side per round)")
    p.add_argument("--warmup", type=int, default=1, help="rounds dropped at the start")
    p.add_argument("--stop-spread", type=float, default=10.0,
                   help="stop after 4 measured rounds once every side's and ratio's spread is under this %% (0: off)")
    p.add_argument("--completions", type=int, default=8, help="completions per step (GRPO: one group; PPO: prompts)")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="rlcustom's model.dtype")
    p.add_argument("--engine", default="hf", choices=["hf", "vllm"], help="rlcustom's generation engine")
    p.add_argument("--vllm", default="skip", choices=["auto", "skip"], help="also try TRL GRPO with vLLM (tiny)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch/OpenMP/MKL threads of every process and role actor (default: OMP_NUM_THREADS or 2)")
    p.add_argument("--overlap", default="on", choices=["on", "off"], help="the rlcustom max_staleness=1 row")
    p.add_argument("--overlap-threads", type=int, default=None,
                   help="threads per role of the max_staleness=1 row, whose generation and training run at once "
                        "(default: threads // 2, so the two add up to --threads)")
    p.add_argument("--quick", action="store_true", help="tiny model, 2 measured rounds (writes trl_rl_quick.json)")
    p.add_argument("--tag", default="", help="write results/trl_rl_<tag>.json (a variant run) instead of trl_rl.json")
    a = p.parse_args(argv)
    a.overlap, a.stop_spread, a.tag = a.overlap == "on", 0.0 if a.quick else a.stop_spread, a.tag or ("quick" if a.quick else "")
    return a


def run_case(model: str, mdir: str, algo: str, a, tmp: Path) -> tuple[list[dict], dict, list[str]]:
    """Start the sides, alternate whole steps, stop them; rows, ratios and notes of one (model, algo)."""
    case, sides = f"{algo}@{model}", make_sides(model, mdir, algo, a, tmp)
    load_before = os.getloadavg()
    for s in sides:
        if s.error is None:
            s.start()
            print(f"{case}: {s.name} " + (f"failed to start: {s.error}" if s.error else "ready"), flush=True)

    def progress(r: int, out: dict) -> None:
        print(f"{case} round {r + 1}{' (warm-up)' if r < a.warmup else ''}: " + ", ".join(
            f"{k} {v[-1]['wall_s']:.2f} s" for k, v in out.items() if v and v[-1]["round"] == r), flush=True)

    ours = [s.name for s in sides if s.name.startswith("rlcustom")]
    theirs = [s.name for s in sides if s.name.startswith("trl")]
    try:
        out = alternate(sides, a.steps, a.warmup, stop_spread_pct=a.stop_spread, min_rounds=min(4, a.steps),
                        ratio_pairs=[(o, t) for o in ours for t in theirs], on_round=progress)
    finally:
        for s in sides:
            s.close()
    load_after = os.getloadavg()
    rows = [side_row(model, algo, s.name, out[s.name], a.completions, error=s.error, ready=s.ready) for s in sides]
    for r in rows:
        r |= {"load_1m_before": load_before[0], "load_1m_after": load_after[0]}
    ratios, notes = pair_ratios(case, out, ours, theirs), []
    by = {r["side"]: r for r in rows}
    sync, ovl = by.get("rlcustom", {}), by.get("rlcustom max_staleness=1", {})
    if "step_median_s" in sync and "step_median_s" in ovl:
        ovl["overlap_ratio"] = overlap_ratio(ovl, sync)
        ratios[f"{case}: max_staleness=1 step / max(generate, train) of max_staleness=0"] = ovl["overlap_ratio"]
        ratios |= pair_ratios(case, out, ["rlcustom max_staleness=1"], ["rlcustom"])
    notes += [f"{case}: {s.name} failed: {s.error}" for s in sides if s.error]
    return rows, ratios, notes


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    load_start = prepare_run(a)
    a.overlap_threads = a.overlap_threads or max(1, a.threads // 2)
    rows, ratios, notes = [], {}, []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_trl_rl_") as tmpd:
        tmp = Path(tmpd)
        for model, mdir in prep_models(tmp, a.models.split(",")).items():
            for algo in a.algos.split(","):
                r, q, n = run_case(model, mdir, algo, a, tmp)
                rows, ratios, notes = rows + r, ratios | q, notes + n
    load_end = os.getloadavg()
    notes += ["sides alternate whole optimizer steps, A B A B ...: each side is one persistent process that runs "
              "one step per command and then blocks, so all are alive but one computes at a time; the first "
              f"{a.warmup} round(s) are dropped, then at most {a.steps} measured rounds",
              f"early stop: after 4 measured rounds once every side's and ratio's spread is under {a.stop_spread:g}%"
              if a.stop_spread else "",
              "samples/s = completions per step / median step wall time over the measured rounds; spread_pct = "
              "(max - min) / median, step_iqr_pct = interquartile range / median; ratios: per round (ours / theirs "
              "samples/s = their step / ours), then median, spread and IQR over the rounds",
              f"threads: every process and role actor {a.threads} torch threads with OMP_NUM_THREADS = "
              f"MKL_NUM_THREADS = {a.threads} (as each reported: threads column); the max_staleness=1 row runs "
              f"generation and training at once, each role with {a.overlap_threads}",
              "overlap_ratio = max_staleness=1 step / max(generate, train) of the max_staleness=0 row (phases "
              "measured one at a time in the same run); its generate_s is only the wait for a batch launched in "
              "the step before, rollout_wait_s the sync stage's wait for the next one",
              "rlcustom GRPO = pg trainer with advantage grpo (TRL's default GRPO has beta=0 and one update per "
              "generation, so neither side computes reference or old log-probs)",
              "TRL phases: generate = its generation call, score = rewards (+ value/reference forwards for PPO), "
              "train = step wall - generate - score; rlcustom phases: its timing/* metrics (Ray actors)",
              "load average (1, 5, 15 min) at start %s, at end %s" % tuple(
                  ", ".join(f"{x:.2f}" for x in la) for la in (load_start, load_end)),
              f"total wall {time.perf_counter() - t_start:.0f} s"]
    from benchmarks.common import report

    report("trl_rl" + (f"_{a.tag}" if a.tag else ""), {
        "models": a.models, "algos": a.algos, "steps": a.steps, "warmup": a.warmup, "stop_spread_pct": a.stop_spread,
        "completions_per_step": a.completions, "new_tokens": a.new_tokens, "lr": a.lr, "seed": a.seed,
        "rlcustom_dtype": a.dtype, "rlcustom_engine": a.engine, "threads": a.threads,
        "overlap_threads": a.overlap_threads if a.overlap else None, "lora": LORA, "trl_grpo": TRL_GRPO_VERSION,
        "trl_ppo": TRL_PPO_VERSION, "load_avg_start": ", ".join(f"{x:.2f}" for x in load_start),
        "load_avg_end": ", ".join(f"{x:.2f}" for x in load_end)},
        rows, ratios, [n for n in notes if n], command=" ".join(["rlcustom bench trl_rl", *(argv or [])]))


if __name__ == "__main__":
    main(sys.argv[1:])
