"""PPO and GRPO: samples/s and time per phase, rlcustom vs TRL's trainers, on CPU (issue 11, question 1).

    rlcustom bench trl_rl [--models tiny,smollm2-135m-instruct] [--algos grpo,ppo] [--steps 3]
                          [--warmup 1] [--completions 8] [--new-tokens 32] [--dtype bfloat16]
                          [--engine hf] [--vllm auto|skip] [--quick]

Both sides train the same model (a seeded tiny Llama written to a directory, and/or the 135M model)
on the same prompts with the same LoRA (r=8, alpha=16 on q,k,v,o), learning rate, number and length
of completions, and seed; each runs ``warmup + steps`` optimizer steps, and the first ``warmup``
are dropped. The TRL side runs in a subprocess of the same interpreter with TRL on ``PYTHONPATH``
(``.bench/trl-<version>``, set up by ``make bench-deps``), so torch/transformers/peft are the same.

* GRPO: TRL 1.16's ``GRPOTrainer`` in its defaults (``model.generate`` for generation, gradient
  checkpointing on, bf16 autocast, beta = 0 so no reference model, one update per generation) vs
  rlcustom's ``pg`` trainer with ``advantage: grpo`` (the same computation: group-normalised
  rewards, one policy-gradient update per batch, no reference). One prompt x ``completions``
  completions per step (TRL's default group of 8), reward: ``target_length`` (20 words).
* PPO: TRL 1.12's ``experimental.ppo.PPOTrainer`` (TRL removed PPO after 1.12) vs rlcustom's
  ``ppo`` trainer: ``completions`` prompts x 1 completion, a reward model and a full-size value
  model (both the policy's backbone with a fresh scalar head), KL penalty 0.05 to the frozen base,
  one PPO epoch, one mini-batch. Behaviour log-probs come from the sampler on both sides.
* TRL with vLLM (``use_vllm=True, vllm_mode="colocate"``): tried on the tiny model when
  ``--vllm auto``; if it cannot start, the reason is recorded in the JSON.

Phases: rlcustom's own per-step timers (``timing/{generate,score,train,sync}_s``, as logged to W&B);
TRL's are measured by wrapping its generation / scoring calls, with train = step wall - the rest.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def spread_pct(xs):
    return 100 * (max(xs) - min(xs)) / statistics.median(xs) if xs else float("nan")


# ----------------------------------------------------------------------------- TRL side (subprocess)


def target_length_reward(completions, **kw) -> list[float]:
    """rlcustom's ``target_length`` (target 20 words) for TRL's reward-function interface."""
    from rlcustom.rewards import target_length

    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [target_length("", t, target=20) for t in texts]


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                      target_modules=LORA["targets"], task_type="CAUSAL_LM")


def trl_grpo(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(spec["seed"])
    n_steps = spec["warmup"] + spec["steps"]
    prompts = [[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}] for i in range(n_steps)]
    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    kw = dict(output_dir=str(Path(spec["tmp"]) / "out"), per_device_train_batch_size=spec["completions"],
              num_generations=spec["completions"], max_completion_length=spec["new_tokens"], max_steps=n_steps,
              learning_rate=spec["lr"], seed=spec["seed"], report_to="none", save_strategy="no",
              logging_steps=1000, disable_tqdm=True, temperature=1.0, use_cpu=True, shuffle_dataset=False)
    if spec.get("vllm"):
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's CPU default (4) is too much here
        kw |= dict(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3)
    args = GRPOConfig(**kw)
    phases, steps = {}, []
    trainer = GRPOTrainer(model=spec["model_dir"], reward_funcs=target_length_reward, args=args,
                          train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tok,
                          peft_config=_lora(), callbacks=[step_callback(phases, steps)])
    trainer._generate = timed(trainer._generate, phases, "generate")
    trainer._generate_and_score_completions = timed(trainer._generate_and_score_completions, phases, "gen_score")
    vg = getattr(trainer, "vllm_generation", None)
    if vg is not None and hasattr(vg, "sync_weights"):
        vg.sync_weights = timed(vg.sync_weights, phases, "sync")
    trainer.train()
    for s in steps:
        g, gs, sy = s.pop("generate", 0.0), s.pop("gen_score", 0.0), s.pop("sync", 0.0)
        s |= {"generate": g - sy, "score": gs - g, "sync": sy, "train": s["wall_s"] - gs}
    return {"steps": steps, "trl": __import__("trl").__version__,
            "config": {"gradient_checkpointing": args.gradient_checkpointing, "bf16": args.bf16,
                       "beta": args.beta, "loss_type": args.loss_type, "use_vllm": args.use_vllm,
                       "num_iterations": args.num_iterations}}


def trl_ppo(spec: dict) -> dict:
    import torch
    import trl.experimental.ppo.ppo_trainer as pt
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    torch.manual_seed(spec["seed"])
    B, n_steps = spec["completions"], spec["warmup"] + spec["steps"]
    tok = AutoTokenizer.from_pretrained(spec["model_dir"], padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    texts = [tok.apply_chat_template([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], tokenize=False,
                                     add_generation_prompt=True) for i in range(B * n_steps)]
    ds = Dataset.from_dict({"input_ids": [tok(t, add_special_tokens=False)["input_ids"] for t in texts]})
    policy = AutoModelForCausalLM.from_pretrained(spec["model_dir"])
    value = AutoModelForSequenceClassification.from_pretrained(spec["model_dir"], num_labels=1)
    reward = AutoModelForSequenceClassification.from_pretrained(spec["model_dir"], num_labels=1)
    for m in (value, reward):
        m.config.pad_token_id = tok.pad_token_id
    args = PPOConfig(output_dir=str(Path(spec["tmp"]) / "out"), per_device_train_batch_size=B,
                     gradient_accumulation_steps=1, num_mini_batches=1, num_ppo_epochs=1,
                     total_episodes=B * n_steps, response_length=spec["new_tokens"], stop_token="eos",
                     learning_rate=spec["lr"], kl_coef=0.05, seed=spec["seed"], report_to="none",
                     save_strategy="no", logging_steps=1000, num_sample_generations=0, disable_tqdm=True,
                     temperature=1.0, use_cpu=True)
    phases, steps = {}, []
    no_grad = lambda: not torch.is_grad_enabled()  # noqa: E731 - rollout-time calls only
    pt.batch_generation = timed(pt.batch_generation, phases, "generate")
    pt.get_reward = timed(pt.get_reward, phases, "score", no_grad)
    pt.forward = timed(pt.forward, phases, "score", no_grad)  # reference log-probs
    trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=None, reward_model=reward,
                         train_dataset=ds, value_model=value, peft_config=_lora(),
                         callbacks=[step_callback(phases, steps)])
    trainer.train()
    for s in steps:
        s |= {"generate": s.get("generate", 0.0), "score": s.get("score", 0.0), "sync": 0.0}
        s["train"] = s["wall_s"] - s["generate"] - s["score"]
    return {"steps": steps, "trl": __import__("trl").__version__,
            "config": {"gradient_checkpointing": args.gradient_checkpointing, "bf16": args.bf16,
                       "num_ppo_epochs": args.num_ppo_epochs, "kl_coef": args.kl_coef}}


def worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    import torch

    torch.set_num_threads(spec["threads"])
    res = {"grpo": trl_grpo, "ppo": trl_ppo}[spec["algo"]](spec)
    res["torch_threads"] = torch.get_num_threads()
    Path(spec["out"]).write_text(json.dumps(res))


# ----------------------------------------------------------------------------- rlcustom side (in-process)


def rlcustom_run(algo: str, model_dir: str, a, tmp: Path) -> dict:
    import rlcustom.trainers  # noqa: F401  (registers the trainers)
    from rlcustom.config import load_config
    from rlcustom.registry import TRAINERS

    out = tmp / f"rlcustom_{algo}_{Path(model_dir).name}_{time.time_ns()}"
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QUESTIONS))
    t, n_steps = a.threads, a.warmup + a.steps
    ts = a.score_threads or max(1, t // 2)
    common = [f"model.path={model_dir}", f"output_dir={out}", f"data.prompts={prompts}", "data.split=all",
              f"steps={n_steps}", "save_every=0", "resume=never", f"seed={a.seed}", f"engine={a.engine}",
              f"model.dtype={a.dtype}", f"model.lora.r={LORA['r']}", f"model.lora.alpha={LORA['alpha']}",
              f"model.lora.dropout={LORA['dropout']}", f"sampling.max_new_tokens={a.new_tokens}",
              "sampling.temperature=1.0", f"optim.lr={a.lr}", f"optim.micro_batch_size={a.completions}",
              "tracking.mode=offline", "roles.learner.zero_stage=0",
              f"roles.rollout.cpus=0.25", f"roles.rollout.num_threads={t}",
              f"roles.learner.cpus=0.25", f"roles.learner.num_threads={t}",
              f"roles.reward.cpus=0.25", f"roles.reward.num_threads={ts}"]
    if algo == "grpo":
        ov = ["trainer=pg", "algo.advantage=grpo", "algo.prompts_per_step=1", f"sampling.n={a.completions}",
              "reward.spec=target_length", "reward.kwargs.target=20"]
    else:
        from rlcustom.models.heads import RewardModel

        rm_dir = tmp / f"rm_{Path(model_dir).name}"
        if not rm_dir.exists():  # the policy's backbone + a fresh scalar head (TRL: AutoModelForSequenceClassification)
            RewardModel.from_pretrained(model_dir, with_tokenizer=True).save(rm_dir)
        ov = ["trainer=ppo", "algo.advantage=gae", f"algo.prompts_per_step={a.completions}", "sampling.n=1",
              "algo.ppo_epochs=1", "algo.kl_coef=0.05", "algo.recompute_logprobs=false", "reward.spec=model",
              f"reward.model_path={rm_dir}", f"reward.kwargs.dtype={a.dtype}",
              f"roles.reference.cpus=0.25", f"roles.reference.num_threads={ts}",
              f"roles.critic.cpus=0.25", f"roles.critic.num_threads={ts}"]
    cfg = load_config(None, common + ov)
    base = TRAINERS.get(cfg.trainer)

    class Timed(base):  # the step's wall time next to its phase timers
        def step(self):
            t0 = time.perf_counter()
            stats = super().step()
            stats["timing/step_wall_s"] = time.perf_counter() - t0
            return stats

    hist = Timed(cfg).fit()["history"]
    steps = [{"wall_s": h["timing/step_wall_s"], **{p: h.get(f"timing/{p}_s", 0.0) for p in PHASES},
              "response_len": h.get("rollout/response_len")} for h in hist]
    return {"steps": steps, "overrides": common + ov}


# ----------------------------------------------------------------------------- main


def side_row(model: str, algo: str, side: str, res: dict, a) -> dict:
    if "error" in res:  # the log tail goes with the raw data (not printed in the table)
        return {"model": model, "algo": algo, "side": side, "error": res["error"], "raw_s": {"tail": res.get("tail")}}
    kept = res["steps"][a.warmup:]
    walls = [s["wall_s"] for s in kept]
    row = {"model": model, "algo": algo, "side": side, "steps": len(kept),
           "samples_per_s": a.completions / median(walls), "step_median_s": median(walls),
           "step_min_s": min(walls), "step_max_s": max(walls), "spread_pct": spread_pct(walls)}
    row |= {f"{p}_s": median([s.get(p, 0.0) for s in kept]) for p in PHASES}
    lens = [s["response_len"] for s in kept if s.get("response_len") is not None]
    if lens:
        row["response_len"] = median(lens)
    row["raw_s"] = res["steps"]
    return row


def prepare_run(a: argparse.Namespace) -> tuple[float, float, float]:
    """Shared set-up of the TRL comparisons: --quick, the thread count, offline W&B; returns the load
    average at the start (reported in the notes)."""
    if a.quick:
        a.models, a.steps = "tiny", 2
    a.threads = a.threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or 2
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    return os.getloadavg()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="rlcustom bench trl_rl")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--models", default="tiny,smollm2-135m-instruct")
    p.add_argument("--algos", default="grpo,ppo")
    p.add_argument("--steps", type=int, default=3, help="measured steps per side (after --warmup)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--completions", type=int, default=8, help="completions per step (GRPO: one group; PPO: prompts)")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"], help="rlcustom's model.dtype")
    p.add_argument("--engine", default="hf", choices=["hf", "vllm"], help="rlcustom's generation engine")
    p.add_argument("--vllm", default="auto", choices=["auto", "skip"], help="also try TRL GRPO with vLLM (tiny)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process/actor (default: OMP_NUM_THREADS or 2)")
    p.add_argument("--score-threads", type=int, default=None,
                   help="threads of rlcustom's reward/reference/critic actors (default: threads // 2)")
    p.add_argument("--quick", action="store_true", help="tiny model only, 2 measured steps")
    p.add_argument("--tag", default="", help="write results/trl_rl_<tag>.json (a variant run) instead of trl_rl.json")
    a = p.parse_args(argv)
    if a.worker:
        return worker(a.worker)
    load_start = prepare_run(a)
    import ray

    rows, ratios, notes = [], {}, []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_trl_rl_") as tmpd:
        tmp = Path(tmpd)
        models = prep_models(tmp, a.models.split(","))
        for model, mdir in models.items():
            for algo in a.algos.split(","):
                version = TRL_GRPO_VERSION if algo == "grpo" else TRL_PPO_VERSION
                spec = {"algo": algo, "model_dir": mdir, "warmup": a.warmup, "steps": a.steps,
                        "completions": a.completions, "new_tokens": a.new_tokens, "lr": a.lr, "seed": a.seed,
                        "threads": a.threads}
                try:
                    ours = rlcustom_run(algo, mdir, a, tmp)
                except Exception as e:  # noqa: BLE001 - keep the other cases' numbers (a signal still stops the run)
                    if type(e).__name__ == "Interrupted":
                        raise
                    ours = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"}
                    notes.append(f"rlcustom {algo} on {model} failed: {ours['error']}")
                theirs = run_worker("trl_rl", version, spec, a.threads)
                r_ours = side_row(model, algo, "rlcustom", ours, a)
                r_trl = side_row(model, algo, f"trl-{version}", theirs, a)
                if "config" in theirs:
                    r_trl["trl_config"] = json.dumps(theirs["config"])
                rows += [r_ours, r_trl]
                if "error" not in theirs and "error" not in ours:
                    ratios[f"{algo}@{model}: rlcustom/trl-{version} default (samples/s)"] = (
                        r_ours["samples_per_s"] / r_trl["samples_per_s"])
                else:
                    notes.append(f"TRL {version} {algo} on {model} failed: {theirs['error']}")
                if algo == "grpo" and model == "tiny" and a.vllm == "auto":
                    res = run_worker("trl_rl", version, spec | {"vllm": True}, a.threads, timeout_s=420)
                    r_v = side_row(model, algo, f"trl-{version}+vllm", res, a)
                    rows.append(r_v)
                    if "error" in res:
                        notes.append(f"TRL {version} GRPO with vLLM (colocate) does not run here: {res['error']}")
                    elif "error" not in ours:
                        ratios[f"grpo@{model}: rlcustom/trl-{version}+vllm (samples/s)"] = (
                            r_ours["samples_per_s"] / r_v["samples_per_s"])
                print(f"{algo}@{model}: " + ", ".join(
                    f"{r['side']} {r.get('samples_per_s', float('nan')):.2f} samples/s" for r in rows[-3:]
                    if r["model"] == model and r["algo"] == algo), flush=True)
    if ray.is_initialized():
        ray.shutdown()
    notes += ["samples/s = completions per step / median step wall time over the measured steps (warm-up dropped)",
              "rlcustom GRPO = pg trainer with advantage grpo (TRL's default GRPO has beta=0 and one update per "
              "generation, so neither side computes reference or old log-probs)",
              "TRL phases: generate = its generation call, score = rewards (+ value/reference forwards for PPO), "
              "train = step wall - generate - score; sync = vLLM weight sync (0 without vLLM: one model)",
              "rlcustom phases: the trainer's timing/* metrics (each role is a Ray actor; sync = LoRA adapter "
              "learner -> rollout)",
              "sides run back to back per (model, algo), in one run, same prompts/seed/settings",
              "load average (1, 5, 15 min) at start %s, at end %s (shared machine)"
              % tuple(", ".join(f"{x:.1f}" for x in la) for la in (load_start, os.getloadavg())),
              f"total wall {time.perf_counter() - t_start:.0f} s"]
    from benchmarks.common import report

    report("trl_rl" + (f"_{a.tag}" if a.tag else ""), {
                      "models": a.models, "algos": a.algos, "steps": a.steps, "warmup": a.warmup,
                      "completions_per_step": a.completions, "new_tokens": a.new_tokens, "lr": a.lr, "seed": a.seed,
                      "rlcustom_dtype": a.dtype, "rlcustom_engine": a.engine, "threads": a.threads,
                      "score_threads": a.score_threads or max(1, a.threads // 2),
                      "lora": LORA, "trl_grpo": TRL_GRPO_VERSION, "trl_ppo": TRL_PPO_VERSION},
           rows, ratios, notes)


if __name__ == "__main__":
    main(sys.argv[1:])
