"""``rlcustom`` command line: one dispatcher, one function per subcommand.

    rlcustom generate [CONFIG] [key=value ...] --out gens.jsonl
    rlcustom train CONFIG [key=value ...]
    rlcustom prepare-model [ALIAS]
    rlcustom demo

Errors a user can fix (config, data, model paths) print one line and exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

from rlcustom.errors import RLCustomError

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register a subcommand: ``@command("x", "...", configure=add_args)`` on ``def x(args) -> int``."""

    def deco(fn):
        COMMANDS[name] = (help, configure, fn)
        return fn

    return deco


def _config_args(p: argparse.ArgumentParser, config_required: bool = False) -> None:
    p.add_argument("config", nargs="?" if not config_required else None, help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. sampling.temperature=0.7")


def _load(args: argparse.Namespace, extra: list[str] | None = None):
    from rlcustom.config import load_config

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).exists():  # only overrides were given
        overrides.insert(0, config)
        config = None
    return load_config(config, overrides + (extra or []))


# ----------------------------------------------------------------------------- generate


def _generate_configure(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("--model", help="alias, local HF directory or cached hub id (model.path)")
    p.add_argument("--prompts", help="'hh-rlhf' or a .jsonl/.json/.parquet file with a 'prompt' field (data.prompts)")
    p.add_argument("--limit", type=int, help="use the first N prompts (data.limit)")
    p.add_argument("--engine", choices=["auto", "hf", "vllm"])
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("-n", type=int, help="samples per prompt")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", default=None, help="output JSONL (default: OUTPUT_DIR/generations.jsonl)")
    from rlcustom.decoding.registry_cli import add_decoder_args

    add_decoder_args(p)


def _flag_overrides(args: argparse.Namespace, table: dict[str, str]) -> list[str]:
    out = []
    for attr, key in table.items():
        v = getattr(args, attr, None)
        if v is not None:
            out.append(f"{key}={v}")
    return out


GEN_FLAGS = {"model": "model.path", "prompts": "data.prompts", "limit": "data.limit", "engine": "engine",
             "max_new_tokens": "sampling.max_new_tokens", "temperature": "sampling.temperature",
             "top_p": "sampling.top_p", "top_k": "sampling.top_k", "n": "sampling.n", "seed": "seed"}


@command("generate", "batched generation from a model on a prompt set, to JSONL", configure=_generate_configure)
def generate(args: argparse.Namespace) -> int:
    from rlcustom.decoding.registry_cli import decoder_overrides

    cfg = _load(args, _flag_overrides(args, GEN_FLAGS) + decoder_overrides(args))  # flags win over the config
    result = run_generation(cfg, out_path=args.out)
    print(result["summary"])
    return 0




def run_generation(cfg, out_path: str | None = None, batch_size: int = 8) -> dict:
    """The generation job: prompts -> engine -> JSONL + W&B table + summary.

    With ``cfg.decoder.name`` set (``--decoder``), the ``hf`` engine decodes with that guided
    decoder (VAS, DeRa, Q-Adapter; see rlcustom/decoding/registry_cli.py); its settings are
    checked before any model is loaded."""
    from rlcustom.config import to_dict
    from rlcustom.data.prompting import build_prompts
    from rlcustom.decoding.registry_cli import GuidedDecoder, check_decoder
    from rlcustom.engines import make_engine
    from rlcustom.tracking import Tracker, progress

    check_decoder(cfg)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = Path(out_path) if out_path else out_dir / "generations.jsonl"
    from rlcustom.models.loading import load_tokenizer

    # data errors surface before the (slow) model load
    prompts = build_prompts(cfg.data, load_tokenizer(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code),
                            seed=cfg.seed)
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


# ----------------------------------------------------------------------------- prepare-model


def _prepare_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("alias", nargs="?", default="smollm2-135m-instruct")
    p.add_argument("--force", action="store_true", help="convert again even if cached")


@command("prepare-model", "convert the embedded GGUF model to safetensors in the cache (once)", configure=_prepare_configure)
def prepare_model(args: argparse.Namespace) -> int:
    from rlcustom.models.embedded import prepare_embedded

    t = time.perf_counter()
    path = prepare_embedded(args.alias, force=args.force)
    print(f"{args.alias}: ready in {path} ({time.perf_counter() - t:.1f} s)")
    return 0




# ----------------------------------------------------------------------------- demo


def _demo_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="dotted overrides for configs/demo.yaml")
    p.add_argument("--config", default=None, help="default: configs/demo.yaml beside the package, else built-in")


@command("demo", "the main job on the embedded model (see README)", configure=_demo_configure)
def demo(args: argparse.Namespace) -> int:
    from rlcustom.config import load_config

    path = args.config or _find_config("demo.yaml")
    cfg = load_config(path, list(args.overrides))
    print(f"rlcustom demo: {path or 'built-in defaults'} -> trainer '{cfg.trainer}' on {cfg.model.path}")
    if cfg.trainer == "generate":
        result = run_generation(cfg)
        for row in result["rows"][:3]:
            print("-" * 72)
            print("PROMPT:", row["prompt"].strip()[-300:])
            print("COMPLETION:", row["completion"].strip())
        print("=" * 72)
        print(result["summary"])
        return 0
    from rlcustom.eval.demo import run_verifiable_demo, wants_accuracy
    from rlcustom.trainers import run_trainer

    if wants_accuracy(cfg):  # a verifiable task: held-out accuracy before/after, a plot
        run_verifiable_demo(cfg)
        return 0
    print(run_trainer(cfg)["summary"])
    return 0




def _find_config(name: str) -> str | None:
    for base in (Path.cwd() / "configs", Path(__file__).resolve().parent.parent / "configs"):
        if (base / name).is_file():
            return str(base / name)
    return None


# ----------------------------------------------------------------------------- train


def _train_configure(p: argparse.ArgumentParser) -> None:
    _config_args(p, config_required=True)


@command("train", "run a trainer from a YAML config (local Ray, started if needed)", configure=_train_configure)
def train(args: argparse.Namespace) -> int:
    from rlcustom.trainers import run_trainer

    cfg = _load(args)
    print(run_trainer(cfg)["summary"])
    return 0




# ----------------------------------------------------------------------------- eval


def _eval_configure(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("--policy", help="model to evaluate (default: OUTPUT_DIR/model if present, else model.path)")
    p.add_argument("--reference", help="reference model for KL / implicit rewards (default: model.path)")
    p.add_argument("--metrics", default="reward,kl,pairs,ppl", help="comma list of: reward, kl, pairs, ppl")
    p.add_argument("--limit", type=int, default=32, help="validation prompts sampled for reward/KL")
    p.add_argument("--pairs", type=int, default=64, help="validation pairs for accuracy/perplexity")
    p.add_argument("--out", help="JSON output (default: OUTPUT_DIR/eval.json; eval dera: OUTPUT_DIR/dera.json)")
    g = p.add_argument_group("DeRa sweep (rlcustom eval dera CONFIG ...)")
    g.add_argument("--aligned", help="dera: the aligned model (a directory, e.g. OUTPUT_DIR/model); SFT = model.path")
    g.add_argument("--adapter", help="dera: a LoRA adapter directory or LoRA run checkpoint over model.path "
                                     "(decoded with one batched forward per step); eval qadapter: the Q-Adapter "
                                     "(a peft directory, e.g. OUTPUT_DIR/adapter)")
    g.add_argument("--lams", default="0,0.5,1,1.5",
                   help="dera: comma list of lambda values, any real numbers (a negative first value: --lams=-0.5,0,1)")
    g.add_argument("--interp", action="store_true", help="dera: also decode the weight-interpolated model "
                                                         "(1-lam)*theta_sft + lam*theta_aligned at each lambda")
    g.add_argument("--samples", type=int, default=4, help="dera: prompts shown in the sample table")
    g.add_argument("--rescore", action="store_true", help="dera: do not decode; score the samples of the sweep "
                                                          "at --out again with this config's reward:")
    q = p.add_argument_group("Q-Adapter comparison (rlcustom eval qadapter CONFIG [--adapter DIR | --policy DIR])")
    q.add_argument("--replayed", type=int, default=8, help="qadapter: the first N neutral prompts are Replay's data; "
                                                           "forgetting is measured on the others (and on those apart)")
    q.add_argument("--new-tokens", type=int, default=48, help="qadapter: length of pi_1's greedy original-task answers")
    q.add_argument("--original", help="qadapter: JSONL cache of those answers "
                                      "(default: OUTPUT_DIR/original_task_N.jsonl)")
    p.epilog = ("rlcustom eval qadapter CONFIG [--adapter DIR | --policy DIR] [--pairs N] [--out F]: held-out "
                "preference accuracy by the method's implicit reward (Q-Adapter: summed residual rewards; a model: "
                "log pi - log pi_1; neither: pi_1 by its log-likelihood) and forgetting (NLL of pi_1's greedy answers "
                "to neutral prompts, relative to pi_1); JSON to --out (default OUTPUT_DIR/eval_qadapter.json). "
                "rlcustom eval dera CONFIG (--aligned PATH | --adapter DIR) --lams 0,0.5,1,1.5 [--interp] "
                "[--limit N] [--out F]: decoding-time realignment sweep (Liu et al. 2024): per lambda, reward "
                "(the config's reward:) and KL to the SFT model (model.path) of samples on validation prompts, "
                "and a sample table; JSON plus a reward/KL-vs-lambda plot next to it.")


def _eval_dera(args: argparse.Namespace) -> int:
    """``rlcustom eval dera CONFIG ...``: the DeRa lambda sweep (rlcustom/eval/dera.py)."""
    from rlcustom.eval.dera import parse_lams, rescore, run

    if args.rescore:
        cfg = _load(args)
        out = args.out or Path(cfg.output_dir) / "dera.json"
        res = rescore(cfg, out, samples=args.samples)
        print(f"wrote {out}" + (f" and {res['plot']}" if res.get("plot") else ""))
        return 0
    lams = parse_lams(args.lams)  # before loading anything
    if not args.aligned and not args.adapter:
        raise RLCustomError("eval dera: needs --aligned PATH (an aligned model directory, e.g. OUTPUT_DIR/model) "
                            "or --adapter DIR (a LoRA adapter or LoRA checkpoint over model.path)")
    cfg = _load(args)
    out = args.out or Path(cfg.output_dir) / "dera.json"
    res = run(cfg, lams=lams, aligned=args.aligned, adapter=args.adapter, interp=args.interp, limit=args.limit,
              samples=args.samples, out=out)
    for r in res["results"]:
        print(f"{r['variant']:6s} lam={r['lam']:<6g} reward {r['reward']:+.4f}  kl {r['kl']:.3f}  "
              f"kl_tokenwise {r['kl_tokenwise']:.3f}")
    print(f"wrote {out}" + (f" and {res['plot']}" if res.get("plot") else ""))
    return 0


def _eval_qadapter(args: argparse.Namespace) -> int:
    """``rlcustom eval qadapter CONFIG ...``: one row of the Q-Adapter comparison (rlcustom/eval/qadapter_run.py)."""
    from rlcustom.eval.qadapter_run import run

    if args.aligned or args.interp:
        raise RLCustomError("--aligned/--interp belong to `rlcustom eval dera CONFIG ...`")
    cfg = _load(args)
    out = args.out or Path(cfg.output_dir) / "eval_qadapter.json"
    res = run(cfg, adapter=args.adapter, policy=args.policy, pairs=args.pairs, replayed=args.replayed,
              new_tokens=args.new_tokens, original=args.original, out=out)
    print(json.dumps(res["metrics"], indent=2))
    print(f"wrote {out}")
    return 0


@command("eval", "reward, KL to a reference, preference accuracy, perplexity of a model; JSON out",
         configure=_eval_configure)
def eval_(args: argparse.Namespace) -> int:
    from rlcustom.eval.metrics import METRICS, evaluate, write

    if args.config == "dera" and not Path("dera").is_file():  # `rlcustom eval dera CONFIG ...`
        args.config = args.overrides.pop(0) if args.overrides else None
        return _eval_dera(args)
    if args.config == "qadapter" and not Path("qadapter").is_file():  # `rlcustom eval qadapter CONFIG ...`
        args.config = args.overrides.pop(0) if args.overrides else None
        return _eval_qadapter(args)
    if args.aligned or args.adapter or args.interp:
        raise RLCustomError("--aligned/--adapter/--interp belong to `rlcustom eval dera CONFIG ...`")
    cfg = _load(args)
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise RLCustomError(f"--metrics: unknown {', '.join(bad)} (choose from {', '.join(METRICS)})")
    trained = Path(cfg.output_dir) / "model"
    policy = args.policy or (str(trained) if trained.is_dir() else cfg.model.path)
    res = evaluate(cfg, policy=policy, reference=args.reference or cfg.model.path, metrics=metrics,
                   limit=args.limit, pairs_limit=args.pairs)
    path = write(res, args.out or Path(cfg.output_dir) / "eval.json")
    print(json.dumps(res["metrics"], indent=2))
    print(f"wrote {path}")
    return 0


# ----------------------------------------------------------------------------- bench


def _bench_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="a script in benchmarks/ (e.g. generation), or 'all': every comparison benchmark at "
                                "its default settings, each in its own process (not the *_135m experiments nor a "
                                "module that sets IN_BENCH_ALL = False); a summary table and "
                                "benchmarks/results/bench_all.json at the end")
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark (see its --help)")


@command("bench", "run a side-by-side benchmark from benchmarks/ (prints a table, writes JSON)",
         configure=_bench_configure)
def bench(args: argparse.Namespace) -> int:
    import importlib

    from rlcustom import bench_runner as br

    root = next((b for b in (Path.cwd(), Path(__file__).resolve().parent.parent) if (b / "benchmarks").is_dir()), None)
    if root is None:
        raise RLCustomError("benchmarks/ not found: run from a checkout of the repository")
    sys.path.insert(0, str(root))
    if args.name == "all":
        rows = br.run_all(root)
        return 1 if any(r.status.startswith("failed") for r in rows) else 0
    names = br.benchmark_names(root / "benchmarks")
    if args.name not in names:
        raise RLCustomError(f"no benchmark '{args.name}' (have: {', '.join(names)})")
    try:
        importlib.import_module(f"benchmarks.{args.name}").main(list(args.args))
    except Exception as e:  # noqa: BLE001 - a missing optional dependency is a skip, anything else is raised
        reason = br.skip_reason(e)
        if reason is None:
            raise
        print(f"{br.SKIP_MARK}{reason}", flush=True)
        return br.SKIP_RC
    return 0


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    import rlcustom.cluster.commands  # noqa: F401  (registers submit, jobs)

    parser = argparse.ArgumentParser(prog="rlcustom", description="Distributed RL for language models on Ray.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, configure, fn) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        configure(p)
        p.set_defaults(func=fn)
    return parser


def _quiet_libraries() -> None:
    """Our own progress bars and one-line errors are the output; keep library chatter out of it."""
    import logging
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as tlog

        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
    except ImportError:
        pass
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may also come after options: `rlcustom generate cfg.yaml --out x.jsonl seed=3`
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RLCustomError as e:
        print(f"rlcustom {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rlcustom {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # run through the imported module, so commands registered by other modules land in the same table
    from rlcustom.cli import main as _main

    sys.exit(_main())
