"""Q-Adapter training-step cost vs one forward/backward of the adapted model (issue: "about one
forward/backward, not two").

Side by side on the same LoRA model and batch of preference pairs, interleaved, CPU time of
one thread (``time.process_time``: robust to other processes on a shared machine):

- ``sft``: the ``sft`` objective's forward/backward of the adapted model (the unit);
- ``qadapter_cached``: the ``qadapter`` objective with ``pi_1``'s hidden states in the batch
  (``base_forward: cached``, the trainer's default: the reference actor computes them once per
  dataset row, off the learner);
- ``qadapter_separate``: ``log pi_1`` from a no-grad forward with the adapter disabled;
- ``reference_hidden``: the one-off cost per batch of computing the cache (a forward without the
  LM head), paid once per row per run on the reference actor.

    rlcustom bench qadapter_step [--model smollm2-135m-instruct] [--pairs 4] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

from benchmarks.common import report


def _cpu_time(fn, repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        out.append(time.process_time() - t)
    return out


def main(argv: list[str] | None = None) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from rlcustom.actors.reference import ReferenceActor
    import rlcustom.objectives  # noqa: F401  (registers the built-in objectives)
    from rlcustom.registry import OBJECTIVES
    from rlcustom.data.loaders import load_preference_pairs
    from rlcustom.models.loading import load_causal_lm, load_tokenizer
    from rlcustom.trainers.offline import encode_pairs

    ap = argparse.ArgumentParser(prog="rlcustom bench qadapter_step", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--pairs", type=int, default=4, help="pairs per step (rows = 2x)")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--reply-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    tok = load_tokenizer(args.model)
    base = load_causal_lm(args.model, dtype="float32")
    pm = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    pm.train()
    rows = list(load_preference_pairs("hh-rlhf", split="train", limit=args.pairs))
    batch = encode_pairs(tok, [r["prompt"] for r in rows for _ in (0, 1)],
                         [x for r in rows for x in (r["chosen"], r["rejected"])],
                         args.prompt_tokens, args.reply_tokens).padded(tok.pad_token_id)
    ref = ReferenceActor.__new__(ReferenceActor)  # its method, in this process
    ref.micro_batch_size = 2 * args.pairs
    with pm.disable_adapter():
        ref.model = pm.get_base_model()
        hs = ref.response_hidden(batch)
    cached = dict(batch, base_hidden=torch.nn.utils.rnn.pad_sequence(hs, batch_first=True))

    def step(objective, b, **kw):
        def run():
            loss, _ = OBJECTIVES.get(objective)(pm, b, **kw)
            loss.backward()
            pm.zero_grad(set_to_none=True)
        return run

    def reference_hidden():
        with pm.disable_adapter():
            ref.response_hidden(batch)

    fns = {"sft": step("sft", batch), "qadapter_cached": step("qadapter", cached, base_forward="cached"),
           "qadapter_separate": step("qadapter", batch, base_forward="separate"),
           "reference_hidden": reference_hidden}
    times = {k: [] for k in fns}
    for _ in range(args.repeats):  # interleaved
        for k, f in fns.items():
            times[k] += _cpu_time(f, 1, warmup=0 if times[k] else 1)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows_out = [{"case": k, "cpu_s_median": med[k], "cpu_s_min": min(v), "cpu_s_max": max(v),
                 "vs_sft": med[k] / med["sft"], "raw_s": v} for k, v in times.items()]
    ratios = {"qadapter_cached_over_sft": med["qadapter_cached"] / med["sft"],
              "qadapter_separate_over_sft": med["qadapter_separate"] / med["sft"],
              "reference_hidden_over_sft": med["reference_hidden"] / med["sft"]}
    report("qadapter_step", vars(args) | {"rows": 2 * args.pairs, "clock": "process_time"}, rows_out, ratios,
           notes=["target: qadapter step ~1x the sft forward/backward of the adapted model",
                  "reference_hidden is paid once per dataset row per run, on the reference actor"])


if __name__ == "__main__":
    main()
