"""VAS on the embedded SmolLM2-135M-Instruct: value fit (held-out R^2), beta sweep, VAS vs Best-of-N at equal
compute on the same prompts, and composition of two value models.

    python -m benchmarks.vas_135m [--out runs/vas-135m --samples 768 --steps 100 --value-layers 4 ...]

Stages, each skipped when its output under ``OUT`` exists (delete a file to redo that stage):

1. ``OUT/sent/value``: ``rlcustom train configs/vas.yaml`` with the ``vader_sentiment`` reward (VADER
   compound in [-1, 1]) on ``--samples`` ``pi_0`` completions of HH-RLHF train prompts, sampled at
   ``--temperature`` (the temperature every decode below uses, so ``V^{pi_0}`` is the value of the policy
   that is decoded); TD(``--lam``) fit of the first ``--value-layers`` layers of ``pi_0`` plus a head.
2. ``OUT/len/value``: the same samples relabelled with ``--len-reward`` (default ``length_tokens``,
   scale -0.02: shorter is better, 48 tokens = -0.96) and a second value model fitted on them.
3. ``OUT/stages/r2.json``: held-out R^2 of each value model per prefix position (see
   ``benchmarks/vas_135m_stats.py`` for the definition) on the trainer's held-out prompts.
4. On ``--eval-prompts`` validation prompts (the same prompts and seed for every row), each decode cached
   as ``OUT/stages/<name>.json`` (per sample: prompt, both rewards, tokens, stopped):
   ``bon``: a pool of ``--pool`` ``pi_0`` samples per prompt (Best-of-N for every N of ``--bon``);
   ``vas_b<beta>_k<topk>``: VAS with the sentiment value model, ``--n`` samples per prompt, each beta of
   ``--betas`` at top-k ``--topk`` and each k of ``--ks`` at ``--curve-beta``;
   ``len_b<beta>``/``both_b<b1>_<b2>``: the length value model alone and both composed
   (``beta_1 V_sent + beta_2 V_len``, ``--compose``).
5. ``benchmarks/results/vas_135m.json`` and ``.png`` (``benchmarks/vas_135m_report.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x.strip()]


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.vas_135m", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/vas-135m", help="output folder (value models, samples, stage files)")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--temperature", type=float, default=1.0, help="pi_0 sampling temperature = decoding temperature")
    p.add_argument("--samples", type=int, default=768, help="pi_0 completions labelled for the value fit")
    p.add_argument("--samples-per-prompt", type=int, default=4)
    p.add_argument("--val-fraction", type=float, default=0.15, help="share of the fit's prompts held out (R^2)")
    p.add_argument("--steps", type=int, default=100, help="value updates of the sentiment value model")
    p.add_argument("--len-steps", type=int, default=50, help="value updates of the length value model")
    p.add_argument("--batch-size", type=int, default=32, help="samples per value update")
    p.add_argument("--value-layers", type=int, default=4, help="decoder layers of pi_0 kept in the value models")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lam", type=float, default=0.95, help="TD(lambda) (1: Monte-Carlo regression)")
    p.add_argument("--len-reward", default="length_tokens", help="reward of the second value model")
    p.add_argument("--len-kwargs", default="{scale: -0.02}", help="YAML mapping of its kwargs")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--max-prompt-tokens", type=int, default=96)
    p.add_argument("--eval-prompts", type=int, default=32, help="validation prompts every row decodes")
    p.add_argument("--pool", type=int, default=8, help="pi_0 samples per prompt for Best-of-N")
    p.add_argument("--bon", default="1,2,4,8", help="Best-of-N sizes (<= --pool)")
    p.add_argument("--n", type=int, default=2, help="VAS samples per prompt")
    p.add_argument("--betas", default="0,4,8,16", help="beta sweep (sentiment value model)")
    p.add_argument("--topk", type=int, default=20, help="children valued per step in the beta sweep (paper: 20)")
    p.add_argument("--ks", default="2,5", help="further top-k at --curve-beta (cheaper points of the VAS curve)")
    p.add_argument("--curve-beta", type=float, default=None, help="beta of the k points (default: largest beta)")
    p.add_argument("--compose", default="8,8", help="beta_sent,beta_len of the composition rows")
    p.add_argument("--results", default=str(ROOT / "benchmarks/results/vas_135m.json"),
                   help="the JSON written (the PNG beside it)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if max(_ints(a.bon)) > a.pool:
        p.error(f"--bon {a.bon}: every N must be <= --pool {a.pool}")
    if len(_floats(a.compose)) != 2:
        p.error(f"--compose needs two betas (sentiment, length), got {a.compose!r}")
    if a.curve_beta is None:
        a.curve_beta = max(_floats(a.betas))
    return a


def _dir(a) -> Path:
    return Path(a.out) if Path(a.out).is_absolute() else ROOT / a.out


def fit(a, name: str, reward: str, kwargs: str, steps: int, dataset: Path | None = None) -> float | None:
    """A value model through the CLI as a user runs it (``OUT/<name>/value``); None when it exists."""
    out = _dir(a) / name
    if (out / "value").is_dir():
        return None
    import yaml

    # configs/vas.yaml with this reward: a dotted reward.kwargs= override would merge into the file's kwargs
    tree = yaml.safe_load((ROOT / "configs/vas.yaml").read_text())
    tree["reward"] = {"spec": reward, "kwargs": yaml.safe_load(kwargs) or {}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "vas_135m.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    cmd = [sys.executable, "-m", "rlcustom.cli", "train", str(out / "vas_135m.yaml"),
           f"output_dir={out}", f"model.path={a.model}", "resume=auto", f"seed={a.seed}", "data.split=train",
           f"data.max_prompt_tokens={a.max_prompt_tokens}", f"sampling.max_new_tokens={a.max_new_tokens}",
           f"steps={steps}", "save_every=20",
           f"algo.samples={a.samples}", f"algo.samples_per_prompt={a.samples_per_prompt}",
           "algo.prompts_per_batch=8", f"algo.temperature={a.temperature}", f"algo.val_fraction={a.val_fraction}",
           f"algo.batch_size={a.batch_size}", f"algo.value_layers={a.value_layers}", f"algo.lr={a.lr}",
           f"algo.lam={a.lam}", "algo.eval_every=20", "optim.micro_batch_size=16", "engine=hf",
           f"roles.rollout.num_threads={a.threads}", f"roles.value.num_threads={a.threads}", "tracking.mode=offline"]
    if dataset is not None:
        cmd.append(f"algo.dataset={dataset}")
    print("$", " ".join(cmd[2:]), flush=True)
    t = time.perf_counter()
    # on a shared machine Ray's memory monitor kills *our* workers when *other* processes fill memory
    env = os.environ | {"RAY_memory_monitor_refresh_ms": os.environ.get("RAY_memory_monitor_refresh_ms", "0")}
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    return time.perf_counter() - t


def relabel(a, src: Path, dst: Path) -> None:
    """The sentiment fit's samples with the length reward (a JSONL without meta: the trainer uses it as given)."""
    import yaml

    from rlcustom.fsutil import atomic_write_text
    from rlcustom.rewards import apply_reward

    if dst.is_file():
        return
    rows = [json.loads(x) for x in src.read_text().splitlines() if x.strip()]
    r = apply_reward(a.len_reward, [""] * len(rows), [x["completion"] for x in rows],
                     [x["response_ids"] for x in rows], kwargs=yaml.safe_load(a.len_kwargs) or {})
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dst, "".join(json.dumps(x | {"reward": float(v)}) + "\n" for x, v in zip(rows, r)))


def held_out_r2(a, value_dir: Path, samples: Path, pad_id: int) -> dict:
    """R^2 by position of ``V`` on the fit's held-out samples (the trainer's own split)."""
    import torch

    from benchmarks.vas_135m_stats import r2_by_position
    from rlcustom.models.heads import ValueModel, response_values
    from rlcustom.trainers.vas import _held_out, td_batch

    rows = [json.loads(x) for x in samples.read_text().splitlines() if x.strip()]
    val = [r for r in rows if r.get("prompt_ids") and _held_out(r["prompt_ids"], a.val_fraction, a.seed)]
    vm = ValueModel.load(value_dir).eval()
    values: list[list[float]] = []
    with torch.inference_mode():
        for s in range(0, len(val), 16):
            chunk = val[s:s + 16]
            batch, _ = td_batch(chunk, pad_id, terminal_state=True)  # T + 1 states per row
            v = response_values(vm, batch)
            values += [v[i, : len(r["response_ids"]) + 1].tolist() for i, r in enumerate(chunk)]
    out = r2_by_position(values, [float(r["reward"]) for r in val], [r.get("finish_reason") == "stop" for r in val])
    return {"held_out_samples": len(val), "held_out_prompts": len({tuple(r["prompt_ids"]) for r in val}),
            "train_samples": len(rows) - len(val), "by_position": out}


class Evaluator:
    """Decodes the same validation prompts with the same seed for every row, scoring both rewards; each decode
    is cached in ``OUT/stages/<name>.json``."""

    def __init__(self, a) -> None:
        import torch
        import yaml

        from rlcustom.config import DataConfig
        from rlcustom.data.prompting import build_prompts
        from rlcustom.engines.base import SamplingParams
        from rlcustom.engines.hf import HFEngine
        from rlcustom.models.loading import load_causal_lm, load_tokenizer

        torch.set_num_threads(a.threads)
        self.a, self.stages = a, _dir(a) / "stages"
        self.stages.mkdir(parents=True, exist_ok=True)
        self.tok = load_tokenizer(a.model)
        self.model = load_causal_lm(a.model).eval()
        self.eng = HFEngine(self.model, self.tok, batch_size=64)
        self.prompts = build_prompts(DataConfig(prompts="hh-rlhf", split="validation", limit=a.eval_prompts,
                                                max_prompt_tokens=a.max_prompt_tokens), self.tok)
        self.base = SamplingParams(max_new_tokens=a.max_new_tokens, temperature=a.temperature, seed=a.seed + 1)
        self.len_kwargs = yaml.safe_load(a.len_kwargs) or {}

    def decode(self, name: str, n: int, decoder=None) -> dict:
        from rlcustom.rewards import apply_reward

        path = self.stages / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
        t = time.perf_counter()
        ro = self.eng.generate(self.prompts.ids, self.base.with_(n=n), decoder=decoder() if decoder else None)
        wall = time.perf_counter() - t
        texts = [self.prompts.texts[i] for i in ro.prompt_index]
        sent = apply_reward("vader_sentiment", texts, ro.texts, ro.response_ids)
        length = apply_reward(self.a.len_reward, texts, ro.texts, ro.response_ids, kwargs=self.len_kwargs)
        rec = {"name": name, "n": n, "wall_s": wall,
               "samples": [{"prompt": int(p), "sent": float(s), "len": float(x), "tokens": len(ids),
                            "stopped": fr == "stop", "text": txt}
                           for p, s, x, ids, fr, txt in zip(ro.prompt_index, sent, length, ro.response_ids,
                                                            ro.finish_reasons, ro.texts)]}
        path.write_text(json.dumps(rec, indent=1))
        print(f"{name}: {len(ro)} samples in {wall:.0f} s, sentiment {sum(sent) / len(sent):+.3f}", flush=True)
        return rec


def main(argv: list[str] | None = None) -> int:
    a = parse(argv if argv is not None else sys.argv[1:])
    out = _dir(a)
    t0 = time.perf_counter()
    times: dict[str, float] = json.loads((out / "times.json").read_text()) if (out / "times.json").is_file() else {}

    def timed(key: str, seconds: float | None) -> None:
        if seconds is not None:
            times[key] = seconds
            out.mkdir(parents=True, exist_ok=True)
            (out / "times.json").write_text(json.dumps(times, indent=1))

    timed("fit_sent_s", fit(a, "sent", "vader_sentiment", "{}", a.steps))
    relabel(a, out / "sent" / "vas_samples.jsonl", out / "len" / "samples_len.jsonl")
    timed("fit_len_s", fit(a, "len", a.len_reward, a.len_kwargs, a.len_steps, dataset=out / "len" / "samples_len.jsonl"))

    from benchmarks.vas_135m_report import report
    from benchmarks.vas_135m_stats import vas_cost_per_position
    from rlcustom.decoding.vas import vas_decoder
    from rlcustom.models.heads import ValueModel

    ev = Evaluator(a)
    r2_file = out / "stages" / "r2.json"
    if not r2_file.is_file():
        t = time.perf_counter()
        r2 = {"sentiment": held_out_r2(a, out / "sent" / "value", out / "sent" / "vas_samples.jsonl", ev.eng.pad_id),
              "length": held_out_r2(a, out / "len" / "value", out / "len" / "samples_len.jsonl", ev.eng.pad_id)}
        r2_file.write_text(json.dumps(r2, indent=1))
        timed("r2_s", time.perf_counter() - t)
    r2 = json.loads(r2_file.read_text())

    v_sent, v_len = ValueModel.load(out / "sent" / "value").eval(), ValueModel.load(out / "len" / "value").eval()
    # multiply-adds per token: pi_0's weights (its tied embedding counted once, as the LM head); the value
    # model's weights less its input embedding (a lookup)
    p_pi0 = sum(p.numel() for p in ev.model.parameters())
    p_value = sum(p.numel() for p in v_sent.parameters()) - v_sent.backbone.get_input_embeddings().weight.numel()

    decodes: dict[str, dict] = {"bon": ev.decode("bon", a.pool)}
    bs, bl = _floats(a.compose)
    vas_rows = [(b, a.topk) for b in _floats(a.betas)] + [(a.curve_beta, k) for k in _ints(a.ks) if k != a.topk]
    if (bs, a.topk) not in vas_rows:  # the composition's "V_sent alone" row
        vas_rows.append((bs, a.topk))
    for beta, k in vas_rows:
        name = f"vas_b{beta:g}_k{k}"
        decodes[name] = ev.decode(name, a.n, lambda beta=beta, k=k: vas_decoder(v_sent, beta, k=k))
        decodes[name] |= {"beta": beta, "k": k, "cost_per_pos": vas_cost_per_position(k, p_value, p_pi0)}
    decodes["len"] = ev.decode(f"len_b{bl:g}", a.n, lambda: vas_decoder(v_len, bl, k=a.topk)) | {"beta_len": bl}
    decodes["both"] = ev.decode(f"both_b{bs:g}_{bl:g}", a.n, lambda: vas_decoder([v_sent, v_len], [bs, bl], k=a.topk))
    decodes["both"] |= {"beta_sent": bs, "beta_len": bl}
    decodes["sent_alone_name"] = f"vas_b{bs:g}_k{a.topk}"  # the sentiment-only row of the composition
    timed("total_this_call_s", time.perf_counter() - t0)
    settings = dict(vars(a)) | {"pi0_params": p_pi0, "value_params_per_token": p_value,
                                "value_cost_ratio": p_value / p_pi0, "stage_times_s": times,
                                "eval_prompts_used": len(ev.prompts.ids)}
    report(settings, r2, decodes, Path(a.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
