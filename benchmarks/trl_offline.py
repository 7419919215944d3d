"""DPO and reward-model training: optimizer steps/s, rlcustom vs TRL's DPOTrainer / RewardTrainer (issue 11, q. 2).

    rlcustom bench trl_offline [--models tiny,smollm2-135m-instruct] [--algos dpo,reward] [--steps 3]
                               [--warmup 1] [--pairs 4] [--prompt-tokens 64] [--completion-tokens 64]
                               [--dtype bfloat16] [--quick]

The same HH-RLHF pairs on both sides: chat-formatted prompts cut to their last ``prompt_tokens``
tokens and answers to their first ``completion_tokens`` (decoded back to text once, so neither side
truncates again); EOS appended to each answer by both. One optimizer step = ``pairs`` pairs
(chosen and rejected rows in one batch), same learning rate and seed.

* DPO: LoRA r=8 (alpha 16, q,k,v,o), beta 0.1, the frozen base as reference; TRL 1.16's
  ``DPOTrainer`` in its defaults (reference log-probs each step from the adapter-disabled model,
  gradient checkpointing, bf16 autocast) vs rlcustom's ``dpo`` trainer (learner + reference actors).
* Reward model: full fine-tuning of the backbone + a scalar head, Bradley-Terry loss; TRL 1.16's
  ``RewardTrainer`` (``AutoModelForSequenceClassification``) vs rlcustom's ``reward`` trainer.

Step wall time: TRL via a callback (``on_step_end`` to ``on_step_end``); rlcustom around its
trainer's ``step()``. The TRL side runs in a subprocess with ``.bench/trl-<version>`` on PYTHONPATH
(``make bench-deps``), the same interpreter and torch/transformers/peft.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.trl_rl import (LORA, TRL_GRPO_VERSION, median, prep_models, prepare_run, run_worker, spread_pct,
                                step_callback)

TRL_VERSION = TRL_GRPO_VERSION  # newest TRL that runs with our transformers


def make_pairs(model_dir: str, n: int, prompt_tokens: int, completion_tokens: int, path: Path) -> Path:
    """``n`` HH-RLHF train pairs as explicit {prompt, chosen, rejected} texts, already cut to length."""
    from rlcustom.data.chat import format_prompt
    from rlcustom.data.loaders import load_preference_pairs
    from rlcustom.models.loading import load_tokenizer

    tok = load_tokenizer(model_dir)
    rows = []
    for r in load_preference_pairs("hh-rlhf", split="train", limit=n):
        p = tok(format_prompt(tok, r["messages"]), add_special_tokens=False)["input_ids"][-prompt_tokens:]

        def cut(t):
            return tok.decode(tok(t, add_special_tokens=False)["input_ids"][:completion_tokens - 1])
        rows.append({"prompt": tok.decode(p), "chosen": cut(r["chosen"]), "rejected": cut(r["rejected"])})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ----------------------------------------------------------------------------- TRL side (subprocess)


def trl_side(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(spec["seed"])
    rows = [json.loads(x) for x in Path(spec["pairs"]).read_text().splitlines()]
    ds = Dataset.from_list(rows)
    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    n_steps = spec["warmup"] + spec["steps"]
    common = dict(output_dir=str(Path(spec["tmp"]) / "out"), per_device_train_batch_size=spec["pairs_per_step"],
                  gradient_accumulation_steps=1, max_steps=n_steps, learning_rate=spec["lr"], seed=spec["seed"],
                  report_to="none", save_strategy="no", logging_steps=1000, disable_tqdm=True, use_cpu=True,
                  max_length=None, lr_scheduler_type="constant", warmup_steps=0)
    phases, steps = {}, []
    cb = [step_callback(phases, steps)]
    if spec["algo"] == "dpo":
        from peft import LoraConfig
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(beta=0.1, **common)
        trainer = DPOTrainer(model=spec["model_dir"], args=args, train_dataset=ds, processing_class=tok,
                             peft_config=LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"],
                                                    lora_dropout=LORA["dropout"], target_modules=LORA["targets"],
                                                    task_type="CAUSAL_LM"), callbacks=cb)
    else:
        from trl import RewardConfig, RewardTrainer

        args = RewardConfig(**common)
        model = AutoModelForSequenceClassification.from_pretrained(spec["model_dir"], num_labels=1)
        model.config.pad_token_id = tok.pad_token_id
        trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=cb)
    trainer.train()
    return {"steps": steps, "trl": __import__("trl").__version__,
            "config": {"gradient_checkpointing": args.gradient_checkpointing, "bf16": args.bf16}}


def worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    import torch

    torch.set_num_threads(spec["threads"])
    res = trl_side(spec)
    res["torch_threads"] = torch.get_num_threads()
    Path(spec["out"]).write_text(json.dumps(res))


# ----------------------------------------------------------------------------- rlcustom side (in-process)


def rlcustom_run(algo: str, model_dir: str, pairs: Path, a, tmp: Path) -> dict:
    import rlcustom.trainers  # noqa: F401  (registers the trainers)
    from rlcustom.config import load_config
    from rlcustom.registry import TRAINERS

    out = tmp / f"rlcustom_{algo}_{Path(model_dir).name}_{time.time_ns()}"
    t = a.threads
    ov = [f"trainer={algo}", f"model.path={model_dir}", f"output_dir={out}", f"data.prompts={pairs}",
          "data.split=all", "data.chat_template=false", f"data.max_prompt_tokens={a.prompt_tokens + 8}",
          f"algo.max_completion_tokens={a.completion_tokens + 8}", f"algo.pairs_per_step={a.pairs}",
          f"steps={a.warmup + a.steps}", "save_every=0", "resume=never", f"seed={a.seed}", f"model.dtype={a.dtype}",
          f"optim.lr={a.lr}", f"optim.micro_batch_size={2 * a.pairs}", "tracking.mode=offline",
          "roles.learner.zero_stage=0", "roles.learner.cpus=0.5", f"roles.learner.num_threads={t}"]
    if algo == "dpo":
        ov += ["algo.beta=0.1", f"model.lora.r={LORA['r']}", f"model.lora.alpha={LORA['alpha']}",
               f"model.lora.dropout={LORA['dropout']}", "roles.reference.cpus=0.5",
               f"roles.reference.num_threads={t}"]
    else:
        ov += ["algo.eval_pairs=1"]
    cfg = load_config(None, ov)
    base = TRAINERS.get(cfg.trainer)

    class Timed(base):
        def step(self):
            t0 = time.perf_counter()
            stats = super().step()
            stats["timing/step_wall_s"] = time.perf_counter() - t0
            return stats

    hist = Timed(cfg).fit()["history"]
    return {"steps": [{"wall_s": h["timing/step_wall_s"], **{k[len("timing/"):-2]: v for k, v in h.items()
                                                              if k.startswith("timing/") and k != "timing/step_wall_s"}}
                      for h in hist], "overrides": ov}


def row(model, algo, side, res, a) -> dict:
    if "error" in res:  # the log tail goes with the raw data (not printed in the table)
        return {"model": model, "algo": algo, "side": side, "error": res["error"], "raw_s": {"tail": res.get("tail")}}
    walls = [s["wall_s"] for s in res["steps"][a.warmup:]]
    return {"model": model, "algo": algo, "side": side, "steps": len(walls), "steps_per_s": 1 / median(walls),
            "pairs_per_s": a.pairs / median(walls), "step_median_s": median(walls), "step_min_s": min(walls),
            "step_max_s": max(walls), "spread_pct": spread_pct(walls), "raw_s": res["steps"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="rlcustom bench trl_offline")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--models", default="tiny,smollm2-135m-instruct")
    p.add_argument("--algos", default="dpo,reward")
    p.add_argument("--steps", type=int, default=3, help="measured optimizer steps per side (after --warmup)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--pairs", type=int, default=4, help="preference pairs per optimizer step (the README table: 8)")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--completion-tokens", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"], help="rlcustom's model.dtype")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS or 2)")
    p.add_argument("--quick", action="store_true", help="tiny model only, 2 measured steps")
    p.add_argument("--tag", default="",
                   help="write results/trl_offline_<tag>.json (a variant run) instead of trl_offline.json")
    a = p.parse_args(argv)
    if a.worker:
        return worker(a.worker)
    load_start = prepare_run(a)
    import ray

    rows, ratios, notes = [], {}, []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_trl_offline_") as tmpd:
        tmp = Path(tmpd)
        models = prep_models(tmp, a.models.split(","))
        for model, mdir in models.items():
            pairs = make_pairs(mdir, a.pairs * (a.warmup + a.steps), a.prompt_tokens, a.completion_tokens,
                               tmp / f"pairs_{model}.jsonl")
            for algo in a.algos.split(","):
                spec = {"algo": algo, "model_dir": mdir, "pairs": str(pairs), "warmup": a.warmup, "steps": a.steps,
                        "pairs_per_step": a.pairs, "lr": a.lr, "seed": a.seed, "threads": a.threads}
                try:
                    ours = row(model, algo, "rlcustom", rlcustom_run(algo, mdir, pairs, a, tmp), a)
                except Exception as e:  # noqa: BLE001 - keep the other cases' numbers (a signal still stops the run)
                    if type(e).__name__ == "Interrupted":
                        raise
                    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    ours = {"model": model, "algo": algo, "side": "rlcustom", "error": f"{type(e).__name__}: {msg}"}
                    notes.append(f"rlcustom {algo} on {model} failed: {ours['error']}")
                res = run_worker("trl_offline", TRL_VERSION, spec, a.threads)
                theirs = row(model, algo, f"trl-{TRL_VERSION}", res, a)
                if "config" in res:
                    theirs["trl_config"] = json.dumps(res["config"])
                rows += [ours, theirs]
                if "error" in res:
                    notes.append(f"TRL {algo} on {model} failed: {res['error']}")
                elif "error" not in ours:
                    ratios[f"{algo}@{model}: rlcustom/trl-{TRL_VERSION} (steps/s)"] = (
                        ours["steps_per_s"] / theirs["steps_per_s"])
                print(f"{algo}@{model}: rlcustom {ours.get('steps_per_s', float('nan')):.3f} steps/s, "
                      f"trl {theirs.get('steps_per_s', float('nan')):.3f} steps/s", flush=True)
    if ray.is_initialized():
        ray.shutdown()
    notes += ["steps/s = 1 / median optimizer-step wall time over the measured steps (warm-up dropped)",
              "sides run back to back per (model, algo), in one run, same pairs/seed/settings",
              "load average (1, 5, 15 min) at start %s, at end %s (shared machine)"
              % tuple(", ".join(f"{x:.1f}" for x in la) for la in (load_start, os.getloadavg())),
              f"total wall {time.perf_counter() - t_start:.0f} s"]
    from benchmarks.common import report

    report("trl_offline" + (f"_{a.tag}" if a.tag else ""), {
                           "models": a.models, "algos": a.algos, "steps": a.steps, "warmup": a.warmup,
                           "pairs_per_step": a.pairs, "prompt_tokens": a.prompt_tokens,
                           "completion_tokens": a.completion_tokens, "lr": a.lr, "seed": a.seed,
                           "rlcustom_dtype": a.dtype, "threads": a.threads, "dpo_lora": LORA,
                           "reward_model": "full fine-tuning", "trl": TRL_VERSION}, rows, ratios, notes)


if __name__ == "__main__":
    main(sys.argv[1:])
