"""``rlcustom generate [CONFIG] [key=value ...] --out gens.jsonl``: batched generation to JSONL.

With ``--decoder NAME`` (or the config's ``decoder:`` section) the ``hf`` engine decodes with a
guided decoder (VAS, DeRa, Q-Adapter; rlcustom/decoding/registry_cli.py)."""
from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, List, Optional

import typer

from rlcustom.cli.options import ConfigArg, OverridesArg, flag_overrides, load
from rlcustom.errors import RLCustomError

GEN_FLAGS = {"model": "model.path", "prompts": "data.prompts", "limit": "data.limit", "engine": "engine",
             "max_new_tokens": "sampling.max_new_tokens", "temperature": "sampling.temperature",
             "top_p": "sampling.top_p", "top_k": "sampling.top_k", "n": "sampling.n", "seed": "seed"}
_DEC = "Guided decoding (hf engine; the config's decoder: keys)"


class Engine(str, Enum):
    auto = "auto"
    hf = "hf"
    vllm = "vllm"


def generate(
    config: ConfigArg = None,
    overrides: OverridesArg = None,
    model: Annotated[Optional[str], typer.Option(help="alias, local HF directory or cached hub id (model.path)")] = None,
    prompts: Annotated[Optional[str], typer.Option(
        help="'hh-rlhf' or a .jsonl/.json/.parquet file with a 'prompt' field (data.prompts)")] = None,
    limit: Annotated[Optional[int], typer.Option(help="use the first N prompts (data.limit)")] = None,
    engine: Annotated[Optional[Engine], typer.Option(help="generation engine (engine)")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(help="sampling.max_new_tokens")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="sampling.temperature")] = None,
    top_p: Annotated[Optional[float], typer.Option(help="sampling.top_p")] = None,
    top_k: Annotated[Optional[int], typer.Option(help="sampling.top_k")] = None,
    n: Annotated[Optional[int], typer.Option("-n", help="samples per prompt (sampling.n)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="seed")] = None,
    out: Annotated[Optional[str], typer.Option(help="output JSONL (default: OUTPUT_DIR/generations.jsonl)")] = None,
    decoder: Annotated[Optional[str], typer.Option(
        help="decode with several models per step (decoder.name: vas, dera, dera_lora, qadapter or a plugin's; "
             "any decoder's keys as decoder.KEY=VALUE)", rich_help_panel=_DEC)] = None,
    value: Annotated[Optional[List[str]], typer.Option(
        help="vas: a ValueModel directory; repeat to compose (decoder.value)", rich_help_panel=_DEC)] = None,
    beta: Annotated[Optional[List[str]], typer.Option(
        help="vas: weight of each --value, one per --value (decoder.beta)", rich_help_panel=_DEC)] = None,
    topk: Annotated[Optional[int], typer.Option(
        help="vas: children of pi_0's top-k valued per step, default 20 (decoder.topk; not --top-k)",
        rich_help_panel=_DEC)] = None,
    aligned: Annotated[Optional[List[str]], typer.Option(
        help="dera: aligned model path; repeat for several (decoder.aligned)", rich_help_panel=_DEC)] = None,
    adapter: Annotated[Optional[str], typer.Option(
        help="dera_lora/qadapter: LoRA adapter directory over --model (decoder.adapter)", rich_help_panel=_DEC)] = None,
    lam: Annotated[Optional[List[str]], typer.Option(
        help="dera/dera_lora: lambda per aligned model/adapter (decoder.lam)", rich_help_panel=_DEC)] = None,
    alpha: Annotated[Optional[str], typer.Option(help="qadapter: alpha, default 1.0 (decoder.alpha)",
                                                 rich_help_panel=_DEC)] = None,
    alpha0: Annotated[Optional[str], typer.Option(help="qadapter: alpha0, default 0.01 (decoder.alpha0)",
                                                  rich_help_panel=_DEC)] = None,
) -> int:
    """Batched generation from a model on a prompt set, to JSONL."""
    from rlcustom.decoding.registry_cli import decoder_overrides

    flags = {"model": model, "prompts": prompts, "limit": limit, "engine": engine and engine.value,
             "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "top_k": top_k,
             "n": n, "seed": seed}
    dec = SimpleNamespace(decoder=decoder, value=value or None, beta=beta or None, topk=topk,
                          aligned=aligned or None, adapter=adapter, lam=lam or None, alpha=alpha, alpha0=alpha0)
    cfg = load(config, overrides, flag_overrides(flags, GEN_FLAGS) + decoder_overrides(dec),  # flags win
               command="generate", out=out, limit=limit, n=n)
    result = run_generation(cfg, out_path=out)
    print(result["summary"])
    return 0


def run_generation(cfg, out_path: str | None = None, batch_size: int = 8) -> dict:
    """The generation job: prompts -> engine -> JSONL + W&B table + summary.

    With ``cfg.decoder.name`` set (``--decoder``), the ``hf`` engine decodes with that guided
    decoder; its settings are checked before any model is loaded."""
    from rlcustom.config import to_dict
    from rlcustom.data.prompting import build_prompts
    from rlcustom.decoding.registry_cli import GuidedDecoder, check_decoder
    from rlcustom.engines import make_engine
    from rlcustom.models.loading import load_tokenizer
    from rlcustom.tracking import Tracker, progress

    check_decoder(cfg)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = Path(out_path) if out_path else out_dir / "generations.jsonl"
    # data errors surface before the (slow) model load
    prompts = build_prompts(cfg.data, load_tokenizer(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code))
    t0 = time.perf_counter()
    guided = None
    if cfg.decoder.name:  # guided decoders run on the hf engine; one chunk per batch (per-row state)
        engine = make_engine("hf", cfg.model.path, dtype=cfg.model.dtype, seed=cfg.seed,
                             trust_remote_code=cfg.model.trust_remote_code, batch_size=batch_size * cfg.sampling.n)
        try:
            guided = GuidedDecoder.from_config(cfg.decoder, engine.model, engine.tokenizer)
        except ValueError as e:
            raise RLCustomError(f"decoder: {e}") from None
    else:
        engine = make_engine(cfg.engine, cfg.model.path, dtype=cfg.model.dtype, seed=cfg.seed,
                             trust_remote_code=cfg.model.trust_remote_code)
    t_load = time.perf_counter() - t0
    params = cfg.sampling.params(seed=cfg.seed)
    gen_kw = {"decoder": guided.factory()} if guided else {}
    n_tokens, rows, t_gen = 0, [], 0.0
    with Tracker(cfg.tracking, out_dir, config=to_dict(cfg)) as tracker:
        tmp = out.with_suffix(out.suffix + ".tmp")
        with tmp.open("w") as f:
            for s in progress(range(0, len(prompts.ids), batch_size), desc="generate", unit="batch"):
                t = time.perf_counter()
                r = engine.generate(prompts.ids[s : s + batch_size], params.with_(seed=cfg.seed + s), **gen_kw)
                t_gen += time.perf_counter() - t
                for i in range(len(r)):
                    row = {"prompt": prompts.raw[s + r.prompt_index[i]], "completion": r.texts[i],
                           "finish_reason": r.finish_reasons[i], "num_tokens": len(r.response_ids[i]),
                           "prompt_index": s + r.prompt_index[i]}
                    f.write(json.dumps(row) + "\n")
                    rows.append(row)
                n_tokens += sum(r.response_lengths())
        tmp.replace(out)  # the JSONL appears whole or not at all
        tok_s = n_tokens / max(t_gen, 1e-9)
        tracker.log({"rollout/tokens_per_s": tok_s, "rollout/mean_len": n_tokens / max(len(rows), 1),
                     "timing/generate_s": t_gen, "timing/load_s": t_load}, step=0)
        tracker.log_samples(0, [r["prompt"] for r in rows[:32]], [r["completion"] for r in rows[:32]])
        lines = [
            f"generated {len(rows)} completions for {len(prompts.ids)} prompts with {engine.name} "
            f"({cfg.model.path}): {n_tokens} tokens in {t_gen:.1f} s = {tok_s:.1f} tokens/s "
            f"(model load {t_load:.1f} s)" + (f"; decoder: {guided.describe()}" if guided else ""),
            f"prompts skipped as too long: {prompts.skipped_long}, truncated: {prompts.truncated_long}, "
            f"bad records skipped: {prompts.bad_records}",
            f"output: {out}",
            tracker.summary_line(),
        ]
    return {"rows": rows, "tokens_per_s": tok_s, "summary": "\n".join(lines), "out": str(out)}
