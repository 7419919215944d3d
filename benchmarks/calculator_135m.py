"""Does a tool change the outcome on SmolLM2-135M-Instruct? 3-digit x 3-digit products, with and without
the calculator, before training, after an SFT warm start and after RL.

    python -m benchmarks.calculator_135m [--out runs/calculator_135m] [--sft-steps 40] [--rl-steps 20]
                                         (not part of `rlcustom bench all`; ~30 min on 2 CPU cores)

Stages, each skipped when its result exists (delete it to redo); a model is evaluated as soon as it exists
(the untrained one first):

1. ``sft``: ``rlcustom train configs/examples/calculator_sft.yaml`` -> ``OUT/sft/model``: LoRA SFT on
   worked calculator episodes (``task:arithmetic?...&trace=calculator``, seed-1 problems);
2. ``rl``: ``rlcustom train configs/examples/calculator_env.yaml model.path=OUT/sft/model`` -> ``OUT/rl/model``:
   GRPO with ``rollout.env: calculator`` from the warm start (seed-0 problems, train split);
3. ``eval``: held-out accuracy (the RL config's validation split, greedy, ``heldout_accuracy``) of the
   untrained model, the SFT model and the RL model, each **with the tool** (one episode per problem with
   the calculator environment, the RL config as it is) and **without** (the same problems asked with the
   plain instruction "Give the final answer as a number after '####'", one answer of up to
   ``max_turns x max_new_tokens`` tokens, no tool), as ``OUT/eval/<model>_<mode>.json``.

Accuracy p has standard error sqrt(p (1 - p) / n). Writes ``benchmarks/results/calculator_135m.json``
and ``calculator_135m.png`` (the six accuracies with +-2 SE bars; the RL run's reward per step).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IN_BENCH_ALL = False  # tens of minutes: `rlcustom bench all` leaves it out (run it by name)
SFT_CONFIG = ROOT / "configs/examples/calculator_sft.yaml"
RL_CONFIG = ROOT / "configs/examples/calculator_env.yaml"
MODELS = ("base", "sft", "rl")
MODES = ("tool", "plain")


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.calculator_135m", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/calculator_135m", help="OUT/sft, OUT/rl, OUT/eval")
    p.add_argument("--name", default="calculator_135m", help="benchmarks/results/NAME.json and NAME.png")
    p.add_argument("--sft-steps", type=int, default=None, help="default: the SFT config's steps")
    p.add_argument("--rl-steps", type=int, default=None, help="default: the RL config's steps")
    p.add_argument("--limit", type=int, default=None, help="held-out problems evaluated (default: all)")
    p.add_argument("--only", default="", help="comma list of stages to run now (sft, rl, eval, report)")
    return p.parse_args(argv)


def _train(config: Path, out: Path, overrides: list[str]) -> float:
    """``rlcustom train`` in a subprocess (its own Ray); seconds taken."""
    if (out / "model" / "config.json").is_file():
        print(f"[calculator_135m] {out}/model exists: skipped", flush=True)
        return float(json.loads((out / "stage.json").read_text())["seconds"]) if (out / "stage.json").is_file() else 0
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "rlcustom.cli", "train", str(config), f"output_dir={out}", *overrides]
    print("[calculator_135m] $", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    secs = time.perf_counter() - t0
    (out / "stage.json").write_text(json.dumps({"command": cmd, "seconds": secs}))
    return secs


def _configs(out: Path):
    from rlcustom.config import load_config
    from rlcustom.data.loaders import is_validation
    from rlcustom.data.tasks import FORMATS, task_records

    tool = load_config(str(RL_CONFIG), [f"output_dir={out}/eval", "rollout.wall_s=3600"])  # no wall-time cut in eval
    held = [r for _, r in task_records(tool.data.prompts)
            if is_validation(r["prompt"], tool.data.val_fraction, tool.data.split_seed)]
    path = out / "heldout_plain.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"prompt": r["prompt"][: -len(FORMATS["calculator"])] + FORMATS["hash"],
                                        "answer": r["answer"]}) + "\n" for r in held))
    rc = tool.rollout
    plain = load_config(str(RL_CONFIG), [f"output_dir={out}/eval", f"data.prompts={path}", "data.val_fraction=1.0",
                                         "rollout.env=null", "reward.spec=exact_match",
                                         "reward.kwargs={answer_format: any}",
                                         f"sampling.max_new_tokens={rc.max_turns * tool.sampling.max_new_tokens}"])
    return {"tool": tool, "plain": plain}, held


def _evaluate(out: Path, models: dict[str, Path | str], limit: int | None) -> dict:
    import dataclasses

    from rlcustom.eval.heldout import heldout_accuracy

    cfgs, held = _configs(out)
    cells = {}
    for name, path in models.items():
        for mode in MODES:
            f = out / "eval" / f"{name}_{mode}.json"
            if f.is_file():
                cells[f"{name}_{mode}"] = json.loads(f.read_text())
                continue
            cfg = cfgs[mode]  # the tokenizer is the evaluated model's (model.path)
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=str(path)))
            r = heldout_accuracy(cfg, str(path), limit=limit)
            cell = {k: r[k] for k in ("accuracy", "se", "n", "seconds")} | {
                "tool_calls": r.get("env", {}).get("tool_calls"), "turns": r.get("env", {}).get("turns"),
                "failed": r.get("failed"), "samples": [list(s) for s in r["samples"][:3]]}
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(cell, indent=1))
            cells[f"{name}_{mode}"] = cell
            print(f"[calculator_135m] {name:4s} {mode:5s}: {cell['accuracy']:.3f} +- {cell['se']:.3f} (n={cell['n']}"
                  f", tool calls/episode {cell['tool_calls']}) [{cell['seconds']:.0f} s]", flush=True)
    return {"cells": cells, "heldout_problems": len(held), "heldout_in_sft_traces": _overlap(held)}


def _overlap(held: list[dict]) -> int:
    """Held-out problems that are also among the SFT traces' (expected 0: the traces use another seed)."""
    from rlcustom.config import load_config
    from rlcustom.data.tasks import task_records

    sft = load_config(str(SFT_CONFIG), [])
    qs = {r["prompt"] for _, r in task_records(sft.data.prompts) if "prompt" in r}
    return sum(r["prompt"] in qs for r in held)


def _plot(res: dict, rl_rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.38
    for k, mode in enumerate(MODES):
        cells = [res["cells"][f"{m}_{mode}"] for m in MODELS]
        xs = [i + (k - 0.5) * width for i in range(len(MODELS))]
        ax.bar(xs, [c["accuracy"] for c in cells], width, yerr=[2 * c["se"] for c in cells], capsize=4,
               label={"tool": "with the calculator", "plain": "without a tool"}[mode])
        for x, c in zip(xs, cells):
            ax.text(x, c["accuracy"] + 2 * c["se"] + 0.02, f"{c['accuracy']:.2f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(MODELS)), ["untrained", "SFT warm start", "SFT + RL (GRPO)"])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(f"held-out accuracy (n={res['cells']['base_tool']['n']}, bars: +-2 SE)")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("3-digit x 3-digit products, SmolLM2-135M-Instruct", fontsize=9)
    for key in ("reward/mean", "env/tool_calls"):
        pts = [(r["step"], r[key]) for r in rl_rows if isinstance(r.get(key), (int, float))]
        if pts:
            bx.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=key)
    bx.set_xlabel("RL step")
    bx.set_title("RL run (sampled episodes, temperature 1)", fontsize=9)
    bx.grid(alpha=0.3)
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    a = _parse(argv)
    out = (ROOT / a.out) if not Path(a.out).is_absolute() else Path(a.out)
    only = {s.strip() for s in a.only.split(",") if s.strip()} or {"sft", "rl", "eval", "report"}
    models = {"base": "smollm2-135m-instruct", "sft": out / "sft" / "model", "rl": out / "rl" / "model"}
    res: dict = {}
    for stage, config, overrides in (  # each trained model is evaluated as soon as it exists
            ("sft", SFT_CONFIG, [f"steps={a.sft_steps}"] if a.sft_steps else []),
            ("rl", RL_CONFIG, [f"model.path={out / 'sft' / 'model'}"] + ([f"steps={a.rl_steps}"] if a.rl_steps else [])),
            (None, None, [])):
        if "eval" in only or "report" in only:
            res = _evaluate(out, {k: v for k, v in models.items() if k == "base" or Path(v).is_dir()}, a.limit)
        if stage in only:
            _train(config, out / stage, overrides)
    from rlcustom.metrics_record import read_metrics

    if "report" not in only or len(res.get("cells", {})) < len(MODELS) * len(MODES):
        return 0
    rl_rows = read_metrics(out / "rl")
    stage = {s: json.loads((out / s / "stage.json").read_text()) for s in ("sft", "rl") if (out / s / "stage.json").is_file()}
    report = {
        "task": "held-out 3-digit x 3-digit products (configs/examples/calculator_env.yaml, data.split=validation)",
        "command": f"python -m benchmarks.calculator_135m --out {a.out}",
        "date": time.strftime("%Y-%m-%d"),
        "sft_config": str(SFT_CONFIG.relative_to(ROOT)), "rl_config": str(RL_CONFIG.relative_to(ROOT)),
        "stages_seconds": {s: round(v["seconds"], 1) for s, v in stage.items()}
                          | {f"eval_{k}": round(c["seconds"], 1) for k, c in res["cells"].items()},
        "heldout_problems": res["heldout_problems"], "heldout_in_sft_traces": res["heldout_in_sft_traces"],
        "cells": res["cells"],
        "rl_steps": [{k: r.get(k) for k in ("step", "reward/mean", "env/tool_calls", "env/tool_errors", "env/turns",
                                            "env/truncated", "env/failed")} for r in rl_rows],
    }
    dest = ROOT / "benchmarks" / "results"
    (dest / f"{a.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    _plot(res, rl_rows, dest / f"{a.name}.png")
    print(f"[calculator_135m] wrote {dest / a.name}.json and .png")
    for m in MODELS:
        t, p = res["cells"][f"{m}_tool"], res["cells"][f"{m}_plain"]
        print(f"  {m:4s}  with tool {t['accuracy']:.3f} +- {t['se']:.3f}   without {p['accuracy']:.3f} +- {p['se']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
