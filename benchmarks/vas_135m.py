"""VAS on the embedded SmolLM2-135M-Instruct: fit a value model, sweep beta, compare with Best-of-N.

    rlcustom bench vas_135m [--train-samples 384 --steps 36 --betas 0,1,2,4,8 --bon 1,2,4,8 ...]

1. ``rlcustom train configs/vas.yaml`` on HH-RLHF train prompts: ``pi_0`` = the embedded 135M
   instruct model (frozen), a rule reward, TD(lambda) fit of a small value model (the first
   ``--value-layers`` decoder layers of ``pi_0`` plus a scalar head). Skipped when
   ``OUT/value`` exists (``--retrain`` to redo).
2. On ``--eval-prompts`` held-out (validation split) prompts, sampling at temperature 1 (the
   distribution ``V^{pi_0}`` was fitted for): VAS with each beta of ``--betas`` (top-k
   ``--topk``), and Best-of-N from ``pi_0`` at each N of ``--bon``, with the same reward.
   Reported per row: mean reward, mean length (tokens, words), stop rate, sequence KL to
   ``pi_0`` (VAS: Monte-Carlo ``E_q[log q - log pi_0]`` from the recorded VAS log-probs and a
   teacher-forced ``pi_0`` pass; BoN: the bound ``log N - (N-1)/N``), wall time, and the
   compute per generated position in ``pi_0``-token forwards (VAS: one ``pi_0`` token plus
   ``k + 1`` value-model tokens, each at the value model's share of ``pi_0``'s multiply-adds; BoN: N).

The machine is shared: the table's wall times are single measurements taken in table order;
the VAS / Best-of-N wall-time ratios come from a separate interleaved timing (VAS at the
largest beta against each N, ``--time-prompts`` prompts, ``--time-repeats`` repeats); the
forward-count column is the machine-independent comparison.
Writes ``benchmarks/results/vas_135m.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _parse(argv):
    p = argparse.ArgumentParser(prog="rlcustom bench vas_135m", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/vas-135m", help="trainer output_dir (value model under OUT/value)")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--reward", default="length_words", help="reward spec (rlcustom.rewards)")
    p.add_argument("--reward-kwargs", default="{scale: -0.1}", help="YAML mapping for reward.kwargs")
    p.add_argument("--train-samples", type=int, default=384, help="pi_0 completions to label (algo.samples)")
    p.add_argument("--samples-per-prompt", type=int, default=4)
    p.add_argument("--steps", type=int, default=36, help="value updates")
    p.add_argument("--batch-size", type=int, default=32, help="samples per value update")
    p.add_argument("--value-layers", type=int, default=8, help="decoder layers of pi_0 kept in the value model")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lam", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--max-prompt-tokens", type=int, default=128)
    p.add_argument("--eval-prompts", type=int, default=32, help="held-out prompts (validation split)")
    p.add_argument("--n", type=int, default=1, help="VAS samples per prompt")
    p.add_argument("--betas", default="0,1,2,4,8")
    p.add_argument("--topk", type=int, default=20)
    p.add_argument("--bon", default="1,2,4,8", help="Best-of-N sizes")
    p.add_argument("--time-prompts", type=int, default=8, help="prompts of the interleaved timing of VAS vs BoN")
    p.add_argument("--time-repeats", type=int, default=2, help="repeats of that timing (0: skip it)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--retrain", action="store_true", help="train even if OUT/value exists")
    p.add_argument("--phase", choices=["all", "bon"], default="all",
                   help="bon: only Best-of-N (no value model needed), saved to OUT/bon_rows.json and reused by a "
                        "later 'all' run with the same settings (so it can run while the value model trains)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def train(a) -> float:
    """The value model, through the CLI as a user runs it; returns the wall time."""
    cmd = [sys.executable, "-m", "rlcustom.cli", "train", str(ROOT / "configs/vas.yaml"),
           f"output_dir={a.out}", f"model.path={a.model}", "resume=never", f"seed={a.seed}",
           "data.split=train", f"data.max_prompt_tokens={a.max_prompt_tokens}",
           f"sampling.max_new_tokens={a.max_new_tokens}", f"reward.spec={a.reward}", f"reward.kwargs={a.reward_kwargs}",
           f"steps={a.steps}", "save_every=0", f"algo.samples={a.train_samples}",
           f"algo.samples_per_prompt={a.samples_per_prompt}", "algo.prompts_per_batch=4", "algo.temperature=1.0",
           f"algo.batch_size={a.batch_size}", f"algo.value_layers={a.value_layers}", f"algo.lr={a.lr}",
           f"algo.lam={a.lam}", "algo.eval_every=12", "optim.micro_batch_size=8", "engine=hf",
           f"roles.rollout.num_threads={a.threads}", f"roles.value.num_threads={a.threads}", "tracking.mode=offline"]
    # 4 prompts x samples_per_prompt rows per generate call: on a loaded machine a 32-row call of 48 tokens
    # outlived the runtime's 600 s per-call timeout
    print("$", " ".join(cmd[2:]), flush=True)
    t = time.perf_counter()
    # on a shared machine Ray's memory monitor kills *our* workers when *other* processes fill memory
    env = os.environ | {"RAY_memory_monitor_refresh_ms": os.environ.get("RAY_memory_monitor_refresh_ms", "0")}
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    return time.perf_counter() - t


def main(argv=None) -> int:
    a = _parse(argv if argv is not None else sys.argv[1:])
    import torch
    import yaml

    from benchmarks.common import interleaved, report, summarize
    from rlcustom.config import DataConfig
    from rlcustom.data.prompting import build_prompts
    from rlcustom.decoding.vas import vas_decoder
    from rlcustom.engines.base import SamplingParams
    from rlcustom.engines.hf import HFEngine
    from rlcustom.eval.metrics import _seq_logprobs
    from rlcustom.models.heads import ValueModel
    from rlcustom.models.loading import load_causal_lm, load_tokenizer
    from rlcustom.rewards import apply_reward

    out = (ROOT / a.out) if not Path(a.out).is_absolute() else Path(a.out)
    train_s = None
    if a.phase == "all" and (a.retrain or not (out / "value").is_dir()):
        train_s = train(a)
    torch.set_num_threads(a.threads)
    tok, model = load_tokenizer(a.model), load_causal_lm(a.model).eval()
    eng = HFEngine(model, tok, batch_size=64)
    data = DataConfig(prompts="hh-rlhf", split="validation", limit=a.eval_prompts,
                      max_prompt_tokens=a.max_prompt_tokens)
    prompts = build_prompts(data, tok, seed=a.seed)
    kwargs = yaml.safe_load(a.reward_kwargs) or {}
    base = SamplingParams(max_new_tokens=a.max_new_tokens, temperature=1.0, seed=a.seed + 1)
    bon_key = {k: getattr(a, k) for k in ("model", "reward", "reward_kwargs", "max_new_tokens", "max_prompt_tokens",
                                          "eval_prompts", "bon", "seed")}
    bon_file = out / "bon_rows.json"
    out.mkdir(parents=True, exist_ok=True)

    def score(ro) -> list[float]:
        return apply_reward(a.reward, [prompts.texts[i] for i in ro.prompt_index], ro.texts, ro.response_ids,
                            kwargs=kwargs)

    def lengths(ro) -> dict:
        n = len(ro)
        return {"len_tokens": sum(map(len, ro.response_ids)) / n, "len_words": sum(len(t.split()) for t in ro.texts) / n,
                "stop_rate": sum(r == "stop" for r in ro.finish_reasons) / n}

    rows: list[dict] = []

    def _progress(rows) -> None:  # rows so far, in case a long run is stopped
        print(rows[-1], flush=True)
        (out / "partial.json").write_text(json.dumps(rows, indent=1))

    sizes = [int(x) for x in a.bon.split(",")]
    big = max(sizes)
    # Best-of-N: one call with n = max N; BoN(N) takes the first N samples of each prompt (samples are
    # i.i.d., so this is Best-of-N), its time is that call's time scaled by N / max N (the rows are
    # independent and batched alike), its compute N pi_0 forwards per position
    saved = json.loads(bon_file.read_text()) if bon_file.is_file() else None
    if a.phase == "all" and saved and saved["settings"] == bon_key:
        for row in saved["rows"]:
            rows.append(row)
            _progress(rows)
    else:
        t = time.perf_counter()
        ro = eng.generate(prompts.ids, base.with_(n=big, seed=a.seed + 2))
        wall_big = time.perf_counter() - t
        r = score(ro)
        for n in sizes:
            best = [max(range(i * big, i * big + n), key=lambda j: r[j]) for i in range(len(prompts.ids))]
            chosen = ro.select(best)
            rows.append({"method": f"BoN N={n}", "reward": sum(r[j] for j in best) / len(best), **lengths(chosen),
                         "kl": math.log(n) - (n - 1) / n, "samples": n * len(prompts.ids), "wall_s": wall_big * n / big,
                         "pi0_fwd_per_pos": float(n)})
            _progress(rows)
        bon_file.write_text(json.dumps({"settings": bon_key, "rows": rows}, indent=1))
    if a.phase == "bon":
        return 0

    vm = ValueModel.load(out / "value").eval()
    L0, Lv = model.config.num_hidden_layers, vm.num_layers
    # compute per generated position in pi_0 token-forwards, by multiply-adds per token: pi_0's
    # weights (its tied embedding counted once, as the LM head); the value model's weights minus its
    # input embedding (a lookup) -- attention over the context is left out for both
    emb = vm.backbone.get_input_embeddings().weight.numel()
    p_pi0 = sum(p.numel() for p in model.parameters())
    p_value = sum(p.numel() for p in vm.parameters()) - emb

    for beta in [float(b) for b in a.betas.split(",")]:
        t = time.perf_counter()
        ro = eng.generate(prompts.ids, base.with_(n=a.n), decoder=vas_decoder(vm, beta, k=a.topk))
        wall = time.perf_counter() - t
        r = score(ro)
        lq = torch.tensor([sum(x) for x in ro.logprobs])  # log q(y) of the VAS distribution (temperature 1)
        l0 = _seq_logprobs(model, ro, eng.pad_id)  # log pi_0(y), teacher-forced
        rows.append({"method": f"VAS beta={beta:g}", "reward": sum(r) / len(r), **lengths(ro),
                     "kl": float((lq - l0).mean()), "samples": len(ro), "wall_s": wall,
                     "pi0_fwd_per_pos": 1 + (a.topk + 1) * p_value / p_pi0})
        _progress(rows)
    # wall-clock ratio measured properly: VAS (the largest beta; beta does not change the cost) against
    # Best-of-N at each N, interleaved, on the first --time-prompts prompts
    timing = {}
    if a.time_repeats > 0:
        ids = prompts.ids[: a.time_prompts]
        beta = float(a.betas.split(",")[-1])
        fns = {"VAS": lambda: eng.generate(ids, base, decoder=vas_decoder(vm, beta, k=a.topk))}
        for n in sizes:
            fns[f"BoN N={n}"] = (lambda n=n: eng.generate(ids, base.with_(n=n)))
        times = interleaved(fns, repeats=a.time_repeats, warmup=0)
        timing = {k: summarize(v) for k, v in times.items()}
        for k, v in timing.items():
            print(f"time {k}: median {v['median_s']:.2f} s (spread {v['spread_pct']:.0f}%)", flush=True)

    vas = [r for r in rows if r["method"].startswith("VAS")]
    bon = [r for r in rows if r["method"].startswith("BoN")]
    ratios, notes = {}, []
    for v in [r for r in vas if r["method"] != "VAS beta=0"]:
        # the smallest N whose Best-of-N reward reaches this beta's reward
        match = next((b for b in bon if b["reward"] >= v["reward"]), None)
        if match is not None:
            key = f"{v['method']} vs {match['method']}"
            ratios[f"{key}: pi0 forwards"] = v["pi0_fwd_per_pos"] / match["pi0_fwd_per_pos"]
        else:
            notes.append(f"{v['method']} (reward {v['reward']:.3f}) beats every Best-of-N tried "
                         f"(best {max(b['reward'] for b in bon):.3f})")
    for k in timing:
        if k != "VAS":
            ratios[f"wall VAS / {k} (interleaved, median)"] = timing["VAS"]["median_s"] / timing[k]["median_s"]
    settings = dict(vars(a)) | {"timing": timing, "pi0_layers": L0, "value_layers": Lv, "train_s": train_s,
                                "pi0_params": p_pi0, "value_params_per_token": p_value,
                                "eval_prompts_used": len(prompts.ids)}
    notes.append("wall_s column: one measurement each on a shared 2-core machine, in table order (not interleaved); "
                 f"BoN N < {big}: the N={big} call's time x N/{big}. The 'wall (interleaved)' ratios time VAS and "
                 f"BoN alternately on {a.time_prompts} prompts, {a.time_repeats} repeats")
    report("vas_135m", settings, rows, ratios, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
