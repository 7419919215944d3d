"""The processes of ``rlcustom bench trl_rl`` (not a benchmark itself: leading underscore).

    python -m benchmarks._trl_rl_sides SPEC.json     (started by benchmarks/trl_rl.py, one per side)

Each is one side of :mod:`benchmarks._alternate`: it sets up its trainer, says ``ready`` (with the
threads it runs with), then runs one optimizer step per ``step`` command and answers with the step's
wall time and phase seconds:

* TRL (``spec["side"] == "trl"``, TRL on ``PYTHONPATH``): its own ``trainer.train()`` with a
  ``TrainerCallback`` that blocks in ``on_train_begin`` and ``on_step_end`` until the next command; a
  step's wall time runs from the command to ``on_step_end``.
* rlcustom (``"rlcustom"``): ``Trainer.fit()`` of the configured trainer whose ``step()`` first waits
  for the command; a step's wall time is ``step()``'s (generate, score, train and sync, with the
  overlapped generation of the next step when ``algo.max_staleness: 1``: it ends before ``step()``
  returns, so nothing runs while the other side computes).
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

from benchmarks._alternate import Channel, StopBench
from benchmarks.trl_rl import PHASES, QUESTIONS, _lora, target_length_reward, timed


def threads_info() -> dict:
    """This process's torch threads and the OpenMP/MKL thread variables it started with."""
    import torch

    return {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS")}


# ----------------------------------------------------------------------------- TRL


def stepwise_callback(ch: Channel, phases: dict, finish, ready: dict):
    """Blocks at the start of training and after each step until the parent's next command; sends each step's
    record: ``finish({"wall_s": ..., **phases})``."""
    from transformers import TrainerCallback

    class Stepwise(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            ch.send({"ready": True, **ready})
            self._next()

        def on_step_end(self, args, state, control, **kw):
            ch.send(finish({"wall_s": time.perf_counter() - self.t, **phases}))
            self._next()

        def _next(self) -> None:
            ch.wait()
            phases.clear()
            self.t = time.perf_counter()

    return Stepwise()


def trl_grpo(spec: dict, phases: dict):
    """TRL's GRPOTrainer in its defaults; phases from its generation and scoring calls."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    n_steps = spec["max_steps"]
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
    trainer = GRPOTrainer(model=spec["model_dir"], reward_funcs=target_length_reward, args=args,
                          train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tok,
                          peft_config=_lora())
    trainer._generate = timed(trainer._generate, phases, "generate")
    trainer._generate_and_score_completions = timed(trainer._generate_and_score_completions, phases, "gen_score")
    vg = getattr(trainer, "vllm_generation", None)
    if vg is not None and hasattr(vg, "sync_weights"):
        vg.sync_weights = timed(vg.sync_weights, phases, "sync")

    def finish(s: dict) -> dict:
        g, gs, sy = s.pop("generate", 0.0), s.pop("gen_score", 0.0), s.pop("sync", 0.0)
        return s | {"generate": g - sy, "score": gs - g, "sync": sy, "train": s["wall_s"] - gs}

    config = {"gradient_checkpointing": args.gradient_checkpointing, "bf16": args.bf16, "beta": args.beta,
              "loss_type": args.loss_type, "use_vllm": args.use_vllm, "num_iterations": args.num_iterations}
    return trainer, finish, config


def trl_ppo(spec: dict, phases: dict):
    """TRL 1.12's experimental PPOTrainer; phases from its generation, reward and reference forwards."""
    import torch
    import trl.experimental.ppo.ppo_trainer as pt
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    B, n_steps = spec["completions"], spec["max_steps"]
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
    no_grad = lambda: not torch.is_grad_enabled()  # noqa: E731 - rollout-time calls only
    pt.batch_generation = timed(pt.batch_generation, phases, "generate")
    pt.get_reward = timed(pt.get_reward, phases, "score", no_grad)
    pt.forward = timed(pt.forward, phases, "score", no_grad)  # reference log-probs
    trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=None, reward_model=reward,
                         train_dataset=ds, value_model=value, peft_config=_lora())

    def finish(s: dict) -> dict:
        s |= {"generate": s.get("generate", 0.0), "score": s.get("score", 0.0), "sync": 0.0}
        return s | {"train": s["wall_s"] - s["generate"] - s["score"]}

    config = {"gradient_checkpointing": args.gradient_checkpointing, "bf16": args.bf16,
              "num_ppo_epochs": args.num_ppo_epochs, "kl_coef": args.kl_coef}
    return trainer, finish, config


def trl_side(spec: dict, ch: Channel) -> None:
    import torch

    torch.manual_seed(spec["seed"])
    phases: dict = {}
    trainer, finish, config = {"grpo": trl_grpo, "ppo": trl_ppo}[spec["algo"]](spec, phases)
    ready = {"threads": {"trl": threads_info()}, "trl": __import__("trl").__version__, "config": config}
    trainer.add_callback(stepwise_callback(ch, phases, finish, ready))
    trainer.train()


# ----------------------------------------------------------------------------- rlcustom


def actor_threads(trainer) -> dict:
    """Per role actor (``learner``, ``rollout``, ...; ``rollout0``, ``rollout1`` with replicas): its torch threads and OpenMP/MKL variables, asked
    through Ray's ``__ray_call__`` (no actor method needed)."""
    import ray

    def probe(_actor) -> dict:
        import os as _os

        import torch as _torch

        return {"torch": _torch.get_num_threads(), "OMP_NUM_THREADS": _os.environ.get("OMP_NUM_THREADS"),
                "MKL_NUM_THREADS": _os.environ.get("MKL_NUM_THREADS")}

    out, seen = {}, set()
    for role, group in trainer.groups.items():
        for i, actor in enumerate(group.actors):
            name, key = (f"{role}{i}" if len(group.actors) > 1 else role), actor._actor_id.hex()
            if key in seen:  # a role served by another role's actors (reference on the learner)
                out[name] = "shared"
                continue
            seen.add(key)
            try:
                out[name] = ray.get(actor.__ray_call__.remote(probe), timeout=120)
            except Exception as e:  # noqa: BLE001 - the numbers matter more than this record
                out[name] = f"unknown ({type(e).__name__})"
    return out


def rlcustom_side(spec: dict, ch: Channel) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    import rlcustom.trainers  # noqa: F401  (registers the trainers)
    from rlcustom.config import load_config
    from rlcustom.registry import TRAINERS

    cfg = load_config(None, spec["overrides"])

    class Stepwise(TRAINERS.get(cfg.trainer)):
        bench_ready = False

        def step(self):
            if not self.bench_ready:
                ch.send({"ready": True, "threads": {"driver": threads_info(), **actor_threads(self)}})
                self.bench_ready = True
            ch.wait()
            t0 = time.perf_counter()
            stats = super().step()
            rec = {"wall_s": time.perf_counter() - t0,
                   **{p: float(stats.get(f"timing/{p}_s", 0.0)) for p in (*PHASES, "rollout_wait")}}
            for key, name in (("rollout/response_len", "response_len"), ("rollout/staleness", "staleness")):
                if key in stats:
                    rec[name] = float(stats[key])
            ch.send(rec)
            return stats

    Stepwise(cfg).fit()


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    ch = Channel()
    try:
        (trl_side if spec["side"] == "trl" else rlcustom_side)(spec, ch)
    except StopBench:
        pass
    except BaseException as e:  # noqa: BLE001 - the parent gets one line; the traceback stays in the log
        traceback.print_exc()
        msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        try:
            ch.send({"error": msg[:500]})
        except OSError:
            pass
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1])
