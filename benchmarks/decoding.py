"""Decoding overhead of the multi-model decoders vs plain decoding of the same model (wall time per token).

    rlcustom bench decoding [--model smollm2-135m-instruct] [--batches 1,4] [--new-tokens 32]
                            [--prompt-tokens 128] [--repeats 3] [--threads N] [--quick]

Sides (every one generates exactly ``new_tokens`` per row, EOS ignored, same prompts, same seed,
sampling at temperature 1), interleaved within one run per batch size:

* ``plain`` -- the ``hf`` engine with the model alone (the reference of every ratio);
* ``vas_k20_same_size`` -- VAS (k = 20) with a value model the size of pi_0 (its whole backbone);
* ``vas_k20_same_size_int8`` -- the same value model with its backbone's Linear layers dynamically quantised to
  int8 (``decoder.dtype=int8``; pi_0 stays float32): the 20-child forward is compute-bound and int8 VNNI matmuls
  run ~3x faster than float32 on this CPU (bfloat16 measured slower here: 3.1x vs 2.8x, no AMX);
* ``vas_k20_quarter_layers`` -- VAS with a value model made of pi_0's first quarter of layers (rounded up);
* ``vas_k20_quarter_layers_int8`` -- the quarter value model, int8 as above;
* ``qadapter`` -- Q-Adapter decoding: base and adapter rows in one batched forward (r=8 LoRA on q,k,v,o);
* ``dera_lora`` -- DeRa with the aligned model a LoRA of the SFT model (one batched forward);
* ``dera_two_model`` -- DeRa with a separate aligned model (two forwards per token);
* ``best_of_n_N`` -- plain sampling of N sequences per prompt (generation only, no reward model):
  its ratio is the cost of one final answer; ``per_token_ratio`` = ratio / N.

Weights are freshly initialised (timing does not depend on them): value heads random
(``init_std=0.02``), LoRA ``B`` random (non-zero, so no LoRA work can be skipped).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import time

from benchmarks.common import interleaved, report, summarize


def _peft(model, seed: int = 0):
    import torch
    from peft import LoraConfig, get_peft_model

    pm = get_peft_model(copy.deepcopy(model), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
    return pm.eval()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="rlcustom bench decoding")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--batches", default="1,4", help="comma-separated batch sizes (prompts per call)")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--prompt-tokens", type=int, default=128, help="every prompt is cut to its last N tokens")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--k", type=int, default=20, help="VAS children per step")
    p.add_argument("--best-of", default="2,4,8", help="N values for the best-of-N sides")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--name", default="decoding", help="results file: benchmarks/results/NAME.json")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time, or this process's CPU time (with --threads 1: robust to other load)")
    p.add_argument("--cases", default=None, help="comma-separated subset of sides (plain is always run)")
    p.add_argument("--quick", action="store_true", help="batch 1 only, 16 new tokens, 2 repeats, best-of 4")
    a = p.parse_args(argv)
    if a.quick:
        a.batches, a.new_tokens, a.repeats, a.best_of = "1", 16, 2, "4"

    load_start = os.getloadavg()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from rlcustom.data import load_prompts
    from rlcustom.data.chat import format_prompt
    from rlcustom.decoding.dera import dera_decoder, dera_lora_decoder
    from rlcustom.decoding.qadapter import qadapter_decoder
    from rlcustom.decoding.vas import vas_decoder
    from rlcustom.engines.base import SamplingParams
    from rlcustom.engines.hf import HFEngine, encode_prompts
    from rlcustom.models.heads import ValueModel
    from rlcustom.models.loading import load_causal_lm, load_tokenizer

    torch.manual_seed(0)
    batches = [int(x) for x in a.batches.split(",")]
    best_of = [int(x) for x in a.best_of.split(",") if x]
    tok = load_tokenizer(a.model)
    model = load_causal_lm(a.model).eval()
    n_layers = model.config.num_hidden_layers
    q_layers = math.ceil(n_layers / 4)
    rows_ = list(load_prompts("hh-rlhf", split="validation", limit=max(batches)))
    ids = [x[-a.prompt_tokens:] for x in encode_prompts(tok, [format_prompt(tok, r["messages"]) for r in rows_])]
    short = [len(x) for x in ids if len(x) < a.prompt_tokens]
    params = SamplingParams(max_new_tokens=a.new_tokens, temperature=1.0, seed=0, stop_on_eos=False)

    # the models of every side, built once
    vm_same = ValueModel.from_backbone_of(copy.deepcopy(model), init_std=0.02).eval()
    vm_quarter = ValueModel.from_backbone_of(copy.deepcopy(model), num_layers=q_layers, init_std=0.02).eval()
    peft_model = _peft(model)
    aligned = copy.deepcopy(model).eval()
    plain = HFEngine(model, tok, batch_size=10_000)
    lora_eng = HFEngine(peft_model, tok, batch_size=10_000)
    decoders = {
        "vas_k20_same_size": (plain, vas_decoder(vm_same, 1.0, k=a.k)),
        "vas_k20_same_size_int8": (plain, vas_decoder(vm_same, 1.0, k=a.k, dtype="int8")),
        "vas_k20_quarter_layers": (plain, vas_decoder(vm_quarter, 1.0, k=a.k)),
        "vas_k20_quarter_layers_int8": (plain, vas_decoder(vm_quarter, 1.0, k=a.k, dtype="int8")),
        "qadapter": (lora_eng, qadapter_decoder(alpha=1.0, alpha0=0.01)),
        "dera_lora": (lora_eng, dera_lora_decoder(lam=2.0)),
        "dera_two_model": (plain, dera_decoder(lam=2.0, aligned=[aligned])),
    }
    wanted = set(a.cases.split(",")) if a.cases else None

    def side(eng, dec, batch, n=1):
        sp = dataclasses.replace(params, n=n)
        want = batch * n * a.new_tokens

        def fn():
            out = eng.generate(ids[:batch], sp, decoder=dec)
            got = sum(len(r) for r in out.response_ids)
            assert got == want, f"generated {got} tokens, expected {want}"
        return fn

    rows, ratios, raw = [], {}, {}
    for B in batches:
        fns = {"plain": side(plain, None, B)}
        for name, (eng, dec) in decoders.items():
            if wanted is None or name in wanted:
                fns[name] = side(eng, dec, B)
        for n in best_of:
            if wanted is None or f"best_of_n_{n}" in wanted or "best_of_n" in wanted:
                fns[f"best_of_n_{n}"] = side(plain, None, B, n)
        with torch.inference_mode():
            times = interleaved(fns, repeats=a.repeats, warmup=a.warmup,
                                clock=time.process_time if a.clock == "cpu" else time.perf_counter)
        ref = summarize(times["plain"])["median_s"]
        # per-repeat ratios (each side against the plain run of the same round): a spread for the ratio
        for name, ts in times.items():
            s = summarize(ts)
            n = int(name.rsplit("_", 1)[1]) if name.startswith("best_of_n_") else 1
            per_round = sorted(t / r for t, r in zip(ts, times["plain"]))
            row = {"batch": B, "side": name, **s, "ms_per_token": 1000 * s["median_s"] / (a.new_tokens * n),
                   "ratio": s["median_s"] / ref, "ratio_min": per_round[0], "ratio_max": per_round[-1]}
            if n > 1:
                row["per_token_ratio"] = row["ratio"] / n
            rows.append(row)
            if name != "plain":
                ratios[f"{name}/plain@B{B}"] = row["ratio"]
        raw[B] = times
        print(f"batch {B}: " + ", ".join(f"{r['side']} {r['ratio']:.2f}x" for r in rows if r['batch'] == B),
              flush=True)  # progress: the full table comes at the end
    notes = [f"value model quarter: first {q_layers} of {n_layers} layers",
             "ratio = median time / median plain time of the same batch; ratio_min/max: per interleaved round",
             "best_of_n ratio = cost of one final answer (N samples, no reward scoring); per_token_ratio = ratio/N"]
    notes.append("load average (1, 5, 15 min) at start %s, at end %s (shared machine)"
                 % tuple(", ".join(f"{x:.1f}" for x in la) for la in (load_start, os.getloadavg())))
    if short:
        notes.append(f"prompts shorter than --prompt-tokens: {short}")
    report(a.name, {"model": a.model, "clock": a.clock, "batches": batches, "new_tokens": a.new_tokens,
                        "prompt_tokens": a.prompt_tokens, "repeats": a.repeats, "warmup": a.warmup, "k": a.k,
                        "best_of": best_of, "threads": torch.get_num_threads(),
                        "sampling": "temperature 1, seed 0, EOS ignored", "dtype": "float32",
                        "lora": "r=8, alpha=16 on q,k,v,o; B ~ N(0, 0.01)", "quick": a.quick},
           rows, ratios, notes)


if __name__ == "__main__":
    main()
