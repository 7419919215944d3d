"""``rlcustom eval``: metrics of a model, the DeRa sweep and the Q-Adapter comparison.

    rlcustom eval [metrics] CONFIG [--policy DIR] [--reference DIR] [--metrics reward,kl,pairs,ppl]
    rlcustom eval dera CONFIG (--aligned PATH | --adapter DIR) --lams 0,0.5,1,1.5 [--interp] [--rescore]
    rlcustom eval qadapter CONFIG [--adapter DIR | --policy DIR] [--pairs N]

``metrics`` is the default: ``rlcustom eval CONFIG ...`` (the original form) runs it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from rlcustom.cli.options import ConfigArg, OverridesArg, load
from rlcustom.errors import RLCustomError

DEFAULT = "metrics"


class DefaultGroup(TyperGroup):
    """A group whose first argument, when it is not a subcommand, goes to the ``metrics`` subcommand."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = [DEFAULT, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=DefaultGroup, help="Evaluate a model: metrics (default), the DeRa sweep, the Q-Adapter "
                                         "comparison. JSON out.", no_args_is_help=False)

Out = Annotated[Optional[str], typer.Option(help="JSON output (default: under OUTPUT_DIR)", show_default=False)]


@app.command(DEFAULT)
def metrics(
    config: ConfigArg = None,
    overrides: OverridesArg = None,
    policy: Annotated[Optional[str], typer.Option(
        help="model to evaluate (default: OUTPUT_DIR/model if present, else model.path)")] = None,
    reference: Annotated[Optional[str], typer.Option(
        help="reference model for KL / implicit rewards (default: model.path)")] = None,
    metrics: Annotated[str, typer.Option(help="comma list of: reward, kl, pairs, ppl")] = "reward,kl,pairs,ppl",
    limit: Annotated[int, typer.Option(help="validation prompts sampled for reward/KL")] = 32,
    pairs: Annotated[int, typer.Option(help="validation pairs for accuracy/perplexity")] = 64,
    out: Out = None,
) -> int:
    """Reward, KL to a reference, preference accuracy and perplexity of a model (OUTPUT_DIR/eval.json)."""
    from rlcustom.eval.metrics import METRICS, evaluate, write

    cfg = load(config, overrides, command="eval", out=out, limit=limit, pairs=pairs, policy=policy,
               reference=reference)
    names = tuple(m.strip() for m in metrics.split(",") if m.strip())
    bad = [m for m in names if m not in METRICS]
    if bad:
        raise RLCustomError(f"--metrics: unknown {', '.join(bad)} (choose from {', '.join(METRICS)})")
    trained = Path(cfg.output_dir) / "model"
    pol = policy or (str(trained) if trained.is_dir() else cfg.model.path)
    res = evaluate(cfg, policy=pol, reference=reference or cfg.model.path, metrics=names, limit=limit,
                   pairs_limit=pairs)
    path = write(res, out or Path(cfg.output_dir) / "eval.json")
    print(json.dumps(res["metrics"], indent=2))
    print(f"wrote {path}")
    return 0


@app.command("dera")
def dera(
    config: ConfigArg = None,
    overrides: OverridesArg = None,
    aligned: Annotated[Optional[str], typer.Option(
        help="the aligned model (a directory, e.g. OUTPUT_DIR/model); SFT = model.path")] = None,
    adapter: Annotated[Optional[str], typer.Option(
        help="a LoRA adapter directory or LoRA run checkpoint over model.path (one batched forward per step)")] = None,
    lams: Annotated[str, typer.Option(
        help="comma list of lambda values, any real numbers (e.g. --lams -0.5,0,1)")] = "0,0.5,1,1.5",
    interp: Annotated[bool, typer.Option(
        "--interp", help="also decode the weight-interpolated model (1-lam)*theta_sft + lam*theta_aligned")] = False,
    limit: Annotated[int, typer.Option(help="validation prompts decoded per lambda")] = 32,
    samples: Annotated[int, typer.Option(help="prompts shown in the sample table")] = 4,
    rescore: Annotated[bool, typer.Option(
        "--rescore", help="do not decode; score the samples of the sweep at --out again with this config's reward:")]
    = False,
    out: Out = None,
) -> int:
    """Decoding-time realignment sweep (Liu et al. 2024): reward and KL to SFT per lambda, JSON and a plot."""
    from rlcustom.eval.dera import parse_lams, rescore as rescore_sweep, run

    if rescore:
        cfg = load(config, overrides, command="eval", out=out, rescore=True)
        path = out or Path(cfg.output_dir) / "dera.json"
        res = rescore_sweep(cfg, path, samples=samples)
        print(f"wrote {path}" + (f" and {res['plot']}" if res.get("plot") else ""))
        return 0
    lam_values = parse_lams(lams)  # before loading anything
    if not aligned and not adapter:
        raise RLCustomError("eval dera: needs --aligned PATH (an aligned model directory, e.g. OUTPUT_DIR/model) "
                            "or --adapter DIR (a LoRA adapter or LoRA checkpoint over model.path)")
    cfg = load(config, overrides, command="eval", out=out, limit=limit)
    path = out or Path(cfg.output_dir) / "dera.json"
    res = run(cfg, lams=lam_values, aligned=aligned, adapter=adapter, interp=interp, limit=limit, samples=samples,
              out=path)
    for r in res["results"]:
        print(f"{r['variant']:6s} lam={r['lam']:<6g} reward {r['reward']:+.4f}  kl {r['kl']:.3f}  "
              f"kl_tokenwise {r['kl_tokenwise']:.3f}")
    print(f"wrote {path}" + (f" and {res['plot']}" if res.get("plot") else ""))
    return 0


@app.command("qadapter")
def qadapter(
    config: ConfigArg = None,
    overrides: OverridesArg = None,
    adapter: Annotated[Optional[str], typer.Option(
        help="the Q-Adapter (a peft directory, e.g. OUTPUT_DIR/adapter)")] = None,
    policy: Annotated[Optional[str], typer.Option(help="a fine-tuned model directory to compare instead")] = None,
    pairs: Annotated[int, typer.Option(help="held-out preference pairs")] = 64,
    replayed: Annotated[int, typer.Option(
        help="the first N neutral prompts are Replay's data; forgetting is measured on the others")] = 8,
    new_tokens: Annotated[int, typer.Option(help="length of pi_1's greedy original-task answers")] = 48,
    original: Annotated[Optional[str], typer.Option(
        help="JSONL cache of those answers (default: OUTPUT_DIR/original_task_N.jsonl)")] = None,
    out: Out = None,
) -> int:
    """One row of the Q-Adapter comparison: held-out preference accuracy and forgetting (eval_qadapter.json)."""
    from rlcustom.eval.qadapter_run import run

    cfg = load(config, overrides, command="eval", out=out, pairs=pairs, new_tokens=new_tokens, policy=policy)
    path = out or Path(cfg.output_dir) / "eval_qadapter.json"
    res: dict[str, Any] = run(cfg, adapter=adapter, policy=policy, pairs=pairs, replayed=replayed,
                              new_tokens=new_tokens, original=original, out=path)
    print(json.dumps(res["metrics"], indent=2))
    print(f"wrote {path}")
    return 0
