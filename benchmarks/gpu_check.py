"""One prepared check of rlcustom's device paths, in one process and without Ray (docs/gpu-check.md).

    rlcustom bench gpu_check [--device cuda|cpu] [--model auto|tiny|smollm2-135m-config|DIR] [--out FILE]

Parts (each checks a correctness condition and reports pass / fail / skipped: reason):

a. a DeepSpeed ZeRO-2 learner rank (world size 1; NCCL on cuda, gloo on cpu) trains a LoRA and the full
   model for ``--train-steps`` SFT steps on one fixed batch: finite losses that fall;
b. the ``hf`` engine (rollout actor) generates in bf16 on cuda, fp32 on cpu, ``--new-tokens`` per answer
   with EOS ignored: every answer that long, finite log-probs, model on the device;
c. learner -> engine weight sync over the sync group (adapter for the LoRA learner, full weights for the
   other): the engine's tensors equal the learner's, and the engine-vs-learner log-prob gap of the same
   tokens is small (mean < 1e-2 in bf16, < 1e-4 in fp32) and smaller than before the sync;
d. VAS, DeRa (LoRA form) and Q-Adapter on the ``hf`` engine: time per token over plain decoding, and each
   decoder's identity setting equal to plain decoding (see ``_gpu_decoders.py``);
e. PPO (the demo's run: RLOO, 2 epochs) and GRPO (KL as a loss) trainer steps through the actor classes in
   this process (every ``.remote()`` a plain call, as ``bench runtime_overhead``'s one-process side): finite
   rewards, losses and KL, weights synced;
f. the same PPO step with ``algo.max_staleness: 1`` when the config has that key, else "not available".

Ray and vLLM are made unimportable for the whole run (``sys.modules[name] = None``), as on the GPU machine
that lacks them. Prints one table, writes JSON (versions, device, settings, rows) to
``benchmarks/results/gpu_check.json`` (cuda) / ``gpu_check_cpu.json`` (cpu) or ``--out``; exits 1 when a
part fails. Not in ``bench all``: it is a correctness check of one device, not a side-by-side comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

IN_BENCH_ALL = False  # a pass/fail check for one device, not a comparison (run it by name)


def versions() -> dict:
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "nccl": None, "platform": platform.platform()}
    if torch.cuda.is_available():
        try:
            out["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:  # noqa: BLE001 - a build without NCCL
            pass
    for mod in ("transformers", "peft", "accelerate", "deepspeed", "safetensors", "numpy", "ray", "vllm"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - absent (ray and vllm are blocked on purpose)
            out[mod] = None
    return out


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def table(rows) -> str:
    cells = [("part", "status", "seconds", "metric")]
    cells += [(r.part, r.status, f"{r.seconds:.1f}", r.metric) for r in rows]
    w = [max(len(c[i]) for c in cells) for i in range(3)]
    return "\n".join(f"{c[0].ljust(w[0])}  {c[1].ljust(w[1])}  {c[2].rjust(w[2])}  {c[3]}" for c in cells)


def run_parts(ctx, deepspeed_missing: str | None, parts: str = "abcdef") -> list:
    from benchmarks import _gpu_decoders, _gpu_parts
    from benchmarks._gpu_setup import Row

    plan = [("a. learner ZeRO-2", _gpu_parts.part_learner, True), ("b. hf engine", _gpu_parts.part_engine, False),
            ("c. weight sync", _gpu_parts.part_sync, True), ("d. decoders", _gpu_decoders.part_decoders, False),
            ("e. trainer steps", _gpu_parts.part_trainer, True), ("f. max_staleness 1", _gpu_parts.part_staleness, True)]
    rows = []
    for label, fn, needs_ds in plan:
        if label[0] not in parts:
            continue
        if needs_ds and deepspeed_missing:
            rows.append(Row(label, f"skipped: {deepspeed_missing}", "", 0.0))
            continue
        if label.startswith("c.") and not {"learner_lora", "rollout_lora"} <= set(ctx.roles):
            rows.append(Row(label, "skipped: parts a and b did not build the learner and engine", "", 0.0))
            continue
        t0 = time.perf_counter()
        print(f"-- {label} ...", flush=True)
        try:
            got = fn(ctx)
        except Exception as e:  # noqa: BLE001 - one broken part must not hide the others
            tb = traceback.format_exc(limit=-4)
            print(tb, file=sys.stderr, flush=True)
            got = [Row(label, "fail", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
                       time.perf_counter() - t0, {"traceback": tb})]
        for r in got:
            print(f"   {r.part}: {r.status} ({r.seconds:.1f} s) {r.metric}", flush=True)
        rows += got
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="rlcustom bench gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--model", default="auto", help="auto (smollm2-135m-config on cuda, tiny on cpu), tiny, "
                   "smollm2-135m-config (SmolLM2-135M's architecture, random weights) or a model directory")
    p.add_argument("--batch", type=int, default=None, help="prompts per generate call (default 8 cuda, 4 cpu)")
    p.add_argument("--new-tokens", type=int, default=None, help="tokens per answer (default 64 cuda, 16 cpu)")
    p.add_argument("--train-steps", type=int, default=4, help="learner steps in part a")
    p.add_argument("--trainer-steps", type=int, default=2, help="PPO/GRPO steps in parts e and f")
    p.add_argument("--repeats", type=int, default=3, help="timed generate calls per engine/decoder")
    p.add_argument("--dtype", default=None, choices=["bfloat16", "float32"],
                   help="model dtype (default bfloat16 on cuda, float32 on cpu); the tolerances follow it")
    p.add_argument("--parts", default="abcdef", help="which parts to run, e.g. 'abd' (c brings a and b along)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/gpu_check[_cpu].json)")
    a = p.parse_args(argv)
    cuda = a.device == "cuda"
    a.batch = a.batch or (8 if cuda else 4)
    a.new_tokens = a.new_tokens or (64 if cuda else 16)
    if "c" in a.parts:  # the sync needs the learners of a and the engines of b
        a.parts = "".join(sorted(set(a.parts) | {"a", "b"}))
    t_start = time.perf_counter()

    from benchmarks._gpu_setup import block_imports, ensure_actors_package, make_ctx, optional

    preloaded = block_imports()
    actors_from = ensure_actors_package()
    import torch

    from rlcustom.errors import RLCustomError

    if cuda and not torch.cuda.is_available():
        raise RLCustomError("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False); "
                            "use --device cpu to run the check on CPU")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ctx = make_ctx(a)
    print(f"gpu_check: {device_name(a.device)}, model {ctx.model_name} ({ctx.dtype}), batch {ctx.batch} x "
          f"{ctx.new_tokens} new tokens", flush=True)
    try:
        rows = run_parts(ctx, optional("deepspeed"), a.parts)
    finally:
        shutil.rmtree(ctx.work, ignore_errors=True)
    from benchmarks._gpu_setup import Row, as_dict

    rows.append(Row("ray/vllm not imported", "fail" if preloaded or sys.modules.get("ray") else "pass",
                    f"imported before the check: {preloaded}" if preloaded else "blocked for the whole run", 0.0))
    total = time.perf_counter() - t_start
    print("\n" + table(rows))
    print(f"total: {total:.0f} s")
    results = Path(__file__).resolve().parent / "results"
    out = Path(a.out) if a.out else results / ("gpu_check.json" if cuda else f"gpu_check_{a.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(a, k) for k in ("device", "batch", "new_tokens", "train_steps", "trainer_steps", "repeats")}
    settings |= {"actors_package": actors_from, "parts": a.parts, "model": ctx.model_name, "dtype": ctx.dtype, "backend": ctx.backend}
    out.write_text(json.dumps({"benchmark": "gpu_check", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "device_name": device_name(a.device), "versions": versions(), "settings": settings,
                               "total_s": total, "rows": [as_dict(r) for r in rows]}, indent=2))
    print(f"wrote {out}")
    failed = [r.part for r in rows if r.status == "fail"]
    if failed:
        print(f"gpu_check: FAILED: {', '.join(failed)}", flush=True)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
