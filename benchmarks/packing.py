"""Padded vs packed micro-batches: one training forward+backward of a batch of ragged rollouts.

    rlcustom bench packing [--model tiny|smollm2-135m-instruct] [--rows 16] [--micro-batch-size 8]
                           [--max-tokens 512] [--repeats 3] [--lora]

The batch looks like a PPO/GRPO step's: ``--rows`` rows with prompt lengths uniform in
[``--prompt-min``, ``--prompt-max``] and response lengths uniform in [``--resp-min``,
``--resp-max``] (seeded), laid out as :meth:`Rollouts.padded`. The padded side cuts it into
``--micro-batch-size`` rows (what ``optim.pack: false`` does), the packed side into
``--max-tokens`` packed micro-batches (``optim.pack: true``,
:func:`rlcustom.training.batches.split_packed`); each side runs the ``reinforce``
objective's forward and backward over all its micro-batches, interleaved with the other.
Both give the same gradient (tests/unit/test_packing.py); this measures the time.
"""
from __future__ import annotations

import argparse

import torch

from benchmarks.common import interleaved, report, summarize


def ragged_batch(rows: int, p: tuple[int, int], r: tuple[int, int], vocab: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    pl = torch.randint(p[0], p[1] + 1, (rows,), generator=g).tolist()
    rl = torch.randint(r[0], r[1] + 1, (rows,), generator=g).tolist()
    P, T = max(pl), max(rl)
    ids = torch.full((rows, P + T), 2, dtype=torch.long)
    attn = torch.zeros((rows, P + T), dtype=torch.long)
    rmask = torch.zeros((rows, T))
    for i in range(rows):
        ids[i, P - pl[i] : P + rl[i]] = torch.randint(3, vocab, (pl[i] + rl[i],), generator=g)
        attn[i, P - pl[i] : P + rl[i]] = 1
        rmask[i, : rl[i]] = 1
    return {"input_ids": ids, "attention_mask": attn, "response_mask": rmask, "prompt_len": P,
            "advantages": torch.randn(rows, T, generator=g) * rmask}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--prompt-min", type=int, default=20)
    ap.add_argument("--prompt-max", type=int, default=120)
    ap.add_argument("--resp-min", type=int, default=8)
    ap.add_argument("--resp-max", type=int, default=64)
    ap.add_argument("--micro-batch-size", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lora", action="store_true", help="LoRA r=8 on q,k,v,o (a frozen base)")
    a = ap.parse_args(argv)

    import rlcustom.objectives  # noqa: F401 - registers the objectives
    from rlcustom.registry import OBJECTIVES
    from rlcustom.training.batches import split_micro_batches, split_packed

    if a.model == "tiny":
        from rlcustom.models.tiny import tiny_llama

        model, _ = tiny_llama(0)
    else:
        from rlcustom.models.loading import load_causal_lm

        model = load_causal_lm(a.model)
    if a.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                      "o_proj"]))
    model.train()
    batch = ragged_batch(a.rows, (a.prompt_min, a.prompt_max), (a.resp_min, a.resp_max),
                         int(model.config.vocab_size), seed=0)
    fn = OBJECTIVES.get("reinforce")
    sides = {"padded": split_micro_batches(batch, a.micro_batch_size),
             "packed": split_packed(batch, a.max_tokens)}

    def run(mbs: list[dict]):
        def go() -> None:
            model.zero_grad(set_to_none=True)
            for mb in mbs:
                loss, _ = fn(model, mb)
                loss.backward()
        return go

    times = interleaved({k: run(v) for k, v in sides.items()}, repeats=a.repeats)
    real = int(batch["attention_mask"].sum())
    rows = [{"side": k, "micro_batches": len(sides[k]),
             "positions": (real if k == "packed" else int(batch["input_ids"].numel())),
             **summarize(times[k])} for k in sides]
    ratio = rows[0]["median_s"] / rows[1]["median_s"]
    report(f"packing_{'tiny' if a.model == 'tiny' else '135m'}{'_lora' if a.lora else ''}",
           {**vars(a), "torch_threads": torch.get_num_threads(), "real_tokens": real,
            "padded_positions": int(batch["input_ids"].numel())},
           rows, {"padded_over_packed": ratio},
           [f"packed forward+backward is {ratio:.2f}x the speed of padded (>1: packing is faster)"])


if __name__ == "__main__":
    main()
