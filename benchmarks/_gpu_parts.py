"""Parts (a)-(c) and (e)-(f) of ``rlcustom bench gpu_check``: learner, engine, weight sync, trainer steps.

Each part returns :class:`~benchmarks._gpu_setup.Row` s and checks its own correctness condition;
(d), the guided decoders, is in ``_gpu_decoders.py``.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from benchmarks._gpu_setup import Ctx, Row, finite, fixed_params, fmt, make_learner, make_rollout, timed


def _sft_batch(ctx: Ctx) -> dict:
    """Fixed prompts and seeded random answers of ``new_tokens``: the same batch every step, so SFT's loss must fall."""
    from rlcustom.engines.base import Rollouts
    from rlcustom.engines.hf import encode_prompts

    g = torch.Generator().manual_seed(0)
    prompts = encode_prompts(ctx.tokenizer, ctx.prompts())
    V = len(ctx.tokenizer)
    answers = torch.randint(3, V, (len(prompts), ctx.new_tokens), generator=g).tolist()
    ro = Rollouts(prompts, answers, [[0.0] * len(a) for a in answers], ["length"] * len(prompts),
                  list(range(len(prompts))))
    pad = ctx.tokenizer.pad_token_id
    return ro.padded(pad if pad is not None else ctx.tokenizer.eos_token_id)


# ----------------------------------------------------------------------------- (a) DeepSpeed ZeRO-2 learner


def part_learner(ctx: Ctx) -> list[Row]:
    rows = []
    batch = _sft_batch(ctx)
    for lora in (True, False):
        name = f"a. learner ZeRO-2 {'LoRA' if lora else 'full'}"
        t0 = time.perf_counter()
        learner = make_learner(ctx, lora)
        import torch.distributed as tdist

        losses, step_s = [], []
        for _ in range(ctx.train_steps):
            st, s = timed(ctx, lambda: learner.train_step(batch, "sft"))
            losses.append(st["train/loss"])
            step_s.append(s)
        backend = str(tdist.get_backend())
        dev = learner.device.type
        ok = finite(losses) and losses[-1] < losses[0] and dev == ctx.device and backend == ctx.backend
        ctx.roles["learner_lora" if lora else "learner_full"] = learner
        rows.append(Row(name, "pass" if ok else "fail",
                        f"sft loss {losses[0]:.4f} -> {losses[-1]:.4f} in {len(losses)} steps; {backend} on {dev}; "
                        f"{statistics.median(step_s) * 1e3:.0f} ms/step",
                        time.perf_counter() - t0,
                        {"losses": losses, "step_s": step_s, "backend": backend, "device": dev,
                         "updates": learner.updates, "zero_stage": learner.zero_stage,
                         "trainable": sum(p.numel() for p in learner.engine.module.parameters() if p.requires_grad)}))
    return rows


# ----------------------------------------------------------------------------- (b) hf engine


def part_engine(ctx: Ctx) -> list[Row]:
    t0 = time.perf_counter()
    ro_lora, ro_full = make_rollout(ctx, lora=True), make_rollout(ctx, lora=False)
    ctx.roles.update(rollout_lora=ro_lora, rollout_full=ro_full)
    params = fixed_params(ctx)
    prompts = ctx.prompts()
    ro_full.generate(prompts, params)  # warm-up (kernels, allocator)
    times, outs = [], []
    for r in range(ctx.repeats):
        out, s = timed(ctx, lambda: ro_full.generate(prompts, params.with_(seed=r)))
        times.append(s)
        outs.append(out)
    model = ro_full.engine.model
    dev, dtype = ro_full.engine.device.type, str(next(model.parameters()).dtype).replace("torch.", "")
    lengths = {len(x) for o in outs for x in o.response_ids}
    ok = (dev == ctx.device and dtype == ctx.dtype and lengths == {ctx.new_tokens}
          and all(finite(lp) for o in outs for lp in o.logprobs))
    tok_s = ctx.batch * ctx.new_tokens / statistics.median(times)
    return [Row("b. hf engine generate", "pass" if ok else "fail",
                f"{tok_s:.0f} tokens/s ({ctx.batch} x {ctx.new_tokens} new, EOS ignored; {dtype} on {dev})",
                time.perf_counter() - t0, {"tokens_per_s": tok_s, "times_s": times, "device": dev, "dtype": dtype,
                                           "lengths": sorted(lengths)})]


# ----------------------------------------------------------------------------- (c) weight sync + log-prob gap


def _gap(ctx: Ctx, learner, rollout, seed: int) -> tuple[float, float]:
    """Mean and max |engine log-prob - learner log-prob| over the sampled tokens (the engine's numbers are
    the ones it recorded while generating: what PPO uses as behaviour log-probs without a recompute)."""
    ro = rollout.generate(ctx.prompts(), fixed_params(ctx, seed=seed))
    pad = rollout.pad_id()
    lp = learner.forward_logprobs(ro.padded(pad))
    diffs = [abs(a - float(lp[i, t])) for i, row in enumerate(ro.logprobs) for t, a in enumerate(row)]
    return sum(diffs) / len(diffs), max(diffs)


def _weights_equal(learner, rollout, adapter_only: bool) -> float:
    """Max |learner - engine| over the synced tensors (0 when the sync landed bit for bit)."""
    named = learner.named_weights(adapter_only=adapter_only)
    model = rollout.engine.model
    if adapter_only:
        from peft import get_peft_model_state_dict

        have = get_peft_model_state_dict(model)
    else:
        target = model.get_base_model() if hasattr(model, "get_base_model") else model
        have = target.state_dict()
    return max(float((t.float().cpu() - have[n].float().cpu()).abs().max()) for n, t in named)


def sync_over_group(ctx: Ctx, learner, rollout, adapter_only: bool) -> dict:
    """Learner -> engine through :class:`~rlcustom.runtime.weight_sync.SyncGroup`.

    gloo (CPU): a group of 2 with the sender (rank 0) and the receiver (rank 1) in two threads,
    i.e. ``sync_send`` / ``sync_recv`` exactly as the trainer calls them on two actors.
    NCCL: NCCL refuses two ranks on one GPU, so the group has one rank, the learner; its bucketed
    NCCL broadcast hands the received tensors to the engine's ``load_weights`` (what ``sync_recv``
    does with them on a second GPU).
    """
    from benchmarks._gpu_setup import weight_sync_module
    from rlcustom.runtime.runtime import free_port

    meta_of = weight_sync_module().meta_of

    host, port = "127.0.0.1", free_port()
    if ctx.backend == "gloo":
        with ThreadPoolExecutor(2) as ex:
            inits = [ex.submit(learner.init_sync_group, host, port, 2, 0, "gloo"),
                     ex.submit(rollout.init_sync_group, host, port, 2, 1, "gloo")]
            [f.result(timeout=120) for f in inits]
            meta = learner.sync_meta(adapter_only)
            send = ex.submit(learner.sync_send, adapter_only)
            recv = ex.submit(rollout.sync_recv, meta, adapter_only)
            stats = send.result(timeout=300)
            stats |= {"recv_" + k: v for k, v in recv.result(timeout=300).items()}
        return stats | {"ranks": 2}
    learner.init_sync_group(host, port, 1, 0, "nccl")
    named = learner.named_weights(adapter_only=adapter_only)
    meta = meta_of(named)
    received, stats = learner._sync_group.broadcast(meta, [t for _, t in named])
    t = time.perf_counter()
    rollout.load_weights(list(zip([m.name for m in meta], received)), adapter_only=adapter_only)
    return stats | {"sync/load_seconds": time.perf_counter() - t, "ranks": 1}


def part_sync(ctx: Ctx) -> list[Row]:
    tol_mean = 1e-2 if ctx.bf16 else 1e-4
    rows = []
    for kind in ("lora", "full"):
        t0 = time.perf_counter()
        learner, rollout = ctx.roles[f"learner_{kind}"], ctx.roles[f"rollout_{kind}"]
        adapter_only = kind == "lora"
        before, _ = _gap(ctx, learner, rollout, seed=11)  # the learner trained in (a): the engine is behind
        stats, s = timed(ctx, lambda: sync_over_group(ctx, learner, rollout, adapter_only))
        w_diff = _weights_equal(learner, rollout, adapter_only)
        mean, mx = _gap(ctx, learner, rollout, seed=12)
        ok = w_diff == 0.0 and mean < tol_mean and mean < before
        what = "adapter" if adapter_only else "full weights"
        rows.append(Row(f"c. sync {what} + log-prob gap", "pass" if ok else "fail",
                        f"{ctx.backend} x{stats['ranks']} {stats['sync/bytes'] / 2**20:.2f} MiB in {s * 1e3:.0f} ms; "
                        f"weights max diff {fmt(w_diff)}; gap mean {fmt(mean)} (< {fmt(tol_mean)}), max {fmt(mx)}; "
                        f"before sync {fmt(before)}",
                        time.perf_counter() - t0,
                        {"sync_s": s, "weights_max_diff": w_diff, "gap_mean": mean, "gap_max": mx,
                         "gap_before_sync": before, "tolerance_mean": tol_mean, **stats}))
    return rows


# ----------------------------------------------------------------------------- (e)/(f) trainer steps in one process


def trainer_config(ctx: Ctx, extra: list[str] = ()):
    """configs/demo.yaml's PPO run (LoRA r=8, 4 prompts x 4 answers, <= 32 tokens, 2 epochs, RLOO) on this
    model, device dtype and a ZeRO-2 learner."""
    from benchmarks._trainer_steps import demo_config

    return demo_config([f"model.path={ctx.model_dir}", f"model.dtype={ctx.dtype}", "engine=hf", "cluster.backend=inprocess",
                        f"output_dir={ctx.work / 'run'}", "roles.learner.zero_stage=2", *extra])


def run_trainer_steps(ctx: Ctx, label: str, extra: list[str]) -> Row:
    from benchmarks._trainer_steps import run_step, start
    from rlcustom.trainers.ppo import PPOTrainer

    t0 = time.perf_counter()
    trainer = PPOTrainer(trainer_config(ctx, extra))  # cluster.backend inprocess: the roles live here, no Ray
    try:
        start(trainer)
        engine = trainer.groups["rollout"].actors[0]._obj.engine  # an InProcessActor holds the plain object
        dev = f"{engine.device.type} {str(next(engine.model.parameters()).dtype).replace('torch.', '')}"
        walls, stats = [], []
        for _ in range(ctx.trainer_steps):
            wall, st = run_step(trainer)
            walls.append(wall)
            stats.append(st)
    finally:
        trainer.shutdown()
    keys = ("reward/mean", "train/loss", "kl/seq_mean")
    bad = [f"{k}@{i}" for i, st in enumerate(stats) for k in keys if not math.isfinite(st.get(k, float("nan")))]
    ok = not bad and all("timing/sync_s" in st for st in stats) and dev.startswith(ctx.device)
    last = stats[-1]
    return Row(label, "pass" if ok else "fail",
               f"{len(stats)} steps, {statistics.median(walls):.2f} s/step; reward {fmt(last['reward/mean'])}, "
               f"loss {fmt(last['train/loss'])}, kl {fmt(last['kl/seq_mean'])}; engine {dev}" + (f"; non-finite {bad}" if bad else ""),
               time.perf_counter() - t0,
               {"step_s": walls, "device": dev, "overrides": list(extra),
                "stats": [{k: v for k, v in st.items() if isinstance(v, float)} for st in stats]})


PPO = ("e. PPO step (demo shape, RLOO)", [])
GRPO = ("e. GRPO step (KL as loss)", ["algo.advantage=grpo", "algo.kl_mode=loss"])


def part_trainer(ctx: Ctx) -> list[Row]:
    return [run_trainer_steps(ctx, label, extra) for label, extra in (PPO, GRPO)]


def has_max_staleness(ctx: Ctx) -> bool:
    return "max_staleness" in {f.name for f in dataclasses.fields(type(trainer_config(ctx).algo))}


def part_staleness(ctx: Ctx) -> list[Row]:
    if not has_max_staleness(ctx):
        return [Row("f. PPO step, max_staleness 1", "not available: this version has no algo.max_staleness",
                    "", 0.0)]
    return [run_trainer_steps(ctx, "f. PPO step, max_staleness 1", ["algo.max_staleness=1"])]
