"""Part (d) of ``rlcustom bench gpu_check``: VAS, DeRa (LoRA form) and Q-Adapter on the ``hf`` engine.

Time per token of each decoder over plain decoding (same prompts, ``new_tokens`` greedy tokens, EOS
ignored), and each decoder's identity condition:

* VAS (Eq. 5) with ``beta = 0`` scores ``log pi_0``: plain decoding;
* DeRa (Eq. 9) with ``lambda = 0`` is the SFT model, i.e. the LoRA's base (the adapter is random, so
  ``lambda = 1`` differs);
* Q-Adapter (Eq. 4) with a fresh adapter (LoRA ``B = 0``, so ``Q = h``) and ``alpha = 1 + alpha0``
  gives ``log_softmax(h)``: plain decoding.

How the identity is measured: while the decoder decodes greedily, a logits processor runs the plain
model teacher-forced on the decoder's own tokens (the same ``CausalLMStep`` plain decoding uses) and
keeps ``gap`` = max over steps, rows and vocabulary of ``|log_softmax(decoder) - log_softmax(plain)|``
and ``margin`` = max over chosen tokens of plain's best log-prob minus the chosen token's. The
condition: ``gap <= tol`` (rounding only) and ``margin <= 2 gap`` (every token is plain's greedy
choice up to that rounding: an exact tie-break may differ in bf16, nothing more). The same measure at
a non-identity setting (VAS beta 5, DeRa lambda 1, Q-Adapter with the random adapter) must exceed
``8 tol``, so the check can fail (tol: 0.125 in bf16, 1e-4 in fp32).
"""
from __future__ import annotations

import copy
import statistics
import time

import torch

from benchmarks._gpu_setup import Ctx, Row, fixed_params, fmt


class TeacherForcedGap:
    """A logits processor: compares the decoder's scores with the plain model's on the same prefix."""

    def __init__(self, base, prompt_ids: list[list[int]], pad_id: int) -> None:
        from rlcustom.engines.hf import CausalLMStep

        self.plain, self.prompt_ids, self.pad_id = CausalLMStep(base), prompt_ids, pad_id
        self.prev: torch.Tensor | None = None
        self.gap = 0.0
        self.margin = 0.0

    def _margin(self, chosen: torch.Tensor) -> None:
        lp = self.prev
        assert lp is not None
        m = lp.max(-1).values - lp.gather(-1, chosen.reshape(-1, 1).to(lp.device)).squeeze(-1)
        self.margin = max(self.margin, float(m.max()))

    def __call__(self, generated: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        from rlcustom.engines.hf import left_pad

        if generated.shape[1] == 0:
            plain = self.plain.start(*left_pad(self.prompt_ids, self.pad_id))
        else:
            self._margin(generated[:, -1])
            plain = self.plain.advance(generated[:, -1])
        plain_lp = torch.log_softmax(plain.float(), -1)
        dec_lp = torch.log_softmax(scores.float().to(plain_lp.device), -1)
        self.gap = max(self.gap, float((dec_lp - plain_lp).abs().max()))
        self.prev = plain_lp
        return scores

    def finish(self, response_ids: list[list[int]]) -> None:
        self._margin(torch.tensor([r[-1] for r in response_ids]))


def _models(ctx: Ctx):
    """The base model, a value model, a peft model with a random LoRA and one with a fresh (B = 0) LoRA."""
    from peft import LoraConfig, get_peft_model

    from rlcustom.models.heads import ValueModel
    from rlcustom.models.loading import DTYPES, load_causal_lm

    dev, dt = torch.device(ctx.device), DTYPES[ctx.dtype]
    base = load_causal_lm(ctx.model_dir, dtype=ctx.dtype).to(dev).eval()
    torch.manual_seed(0)
    value = ValueModel.from_backbone_of(copy.deepcopy(base), init_std=0.5).to(dev, dt).eval()
    lcfg = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    rand = get_peft_model(copy.deepcopy(base), LoraConfig(init_lora_weights=False, **lcfg)).eval()
    fresh = get_peft_model(copy.deepcopy(base), LoraConfig(**lcfg)).eval()
    return base, value, rand, fresh


def part_decoders(ctx: Ctx) -> list[Row]:
    from benchmarks.common import interleaved
    from rlcustom.decoding.dera import dera_lora_decoder
    from rlcustom.decoding.qadapter import qadapter_decoder
    from rlcustom.decoding.vas import vas_decoder
    from rlcustom.engines.hf import HFEngine, encode_prompts

    t_setup = time.perf_counter()
    tok = ctx.tokenizer
    base, value, rand, fresh = _models(ctx)
    a0 = 0.01  # Q-Adapter's alpha0 (paper default); alpha = 1 + alpha0 is its identity
    B = ctx.batch
    decoders = {  # name -> (model, identity decoder, non-identity decoder, what)
        "VAS k=20": (base, vas_decoder([value], 0.0, k=20), vas_decoder([value], 5.0, k=20), "beta 0 (vs beta 5)"),
        "DeRa-LoRA": (rand, dera_lora_decoder(0.0), dera_lora_decoder(1.0), "lambda 0 (vs lambda 1)"),
        "Q-Adapter": (fresh, qadapter_decoder(1.0 + a0, a0), None, "fresh adapter, alpha 1+alpha0 (vs random adapter)"),
    }
    prompts = ctx.prompts()
    prompt_ids = encode_prompts(tok, prompts)
    plain = HFEngine(base, tok, batch_size=B)
    greedy = fixed_params(ctx, greedy=True)
    plain_tokens = plain.generate(prompts, greedy).response_ids
    setup_s = time.perf_counter() - t_setup

    def measure(model, factory) -> tuple[float, float, list[list[int]]]:
        rec = TeacherForcedGap(base, prompt_ids, plain.pad_id)
        ro = HFEngine(model, tok, batch_size=B, decoder=factory).generate(prompts, greedy, processors=[rec])
        rec.finish(ro.response_ids)
        return rec.gap, rec.margin, ro.response_ids

    # time per token: each decoder at its identity setting (the cost does not depend on beta/lambda/alpha)
    engines = {"plain": plain, **{k: HFEngine(m, tok, batch_size=B, decoder=f) for k, (m, f, _, _) in decoders.items()}}
    t = time.perf_counter()
    times = interleaved({k: (lambda e=e: e.generate(prompts, greedy)) for k, e in engines.items()},
                        repeats=ctx.repeats, warmup=1)
    timing_s = time.perf_counter() - t
    ms_tok = {k: 1e3 * statistics.median(v) / ctx.new_tokens for k, v in times.items()}

    # bf16: measured 0.029 for DeRa-LoRA / Q-Adapter on CPU with the 135M architecture (batching 2B rows
    # rounds differently), 0 for VAS; fp32: ~2e-6. A wrong combination is O(1): the non-identity settings
    # measured 3.2 (bf16, 135M) and 1.0 (fp32, tiny).
    tol = 0.125 if ctx.bf16 else 1e-4
    rows = [Row("d. plain decoding", "pass", f"{ms_tok['plain']:.2f} ms/token at batch {B} ({ctx.new_tokens} tokens)",
                setup_s + timing_s / len(engines), {"ms_per_token": ms_tok["plain"], "times_s": times["plain"]})]
    for name, (model, ident, other, what) in decoders.items():
        t0 = time.perf_counter()
        gap, margin, toks = measure(model, ident)
        if other is not None:
            sens, _, _ = measure(model, other)
        else:  # Q-Adapter's non-identity: the same decoder over the random adapter
            sens, _, _ = measure(rand, qadapter_decoder(1.0 + a0, a0))
        same = sum(a == b for a, b in zip(toks, plain_tokens))
        ok = gap <= tol and margin <= 2 * gap + 1e-6 and sens > 8 * tol
        ratio = ms_tok[name] / ms_tok["plain"]
        rows.append(Row(f"d. {name} identity + speed", "pass" if ok else "fail",
                        f"{ms_tok[name]:.2f} ms/token = x{ratio:.2f} plain; {what}: gap {fmt(gap)} (<= {fmt(tol)}), "
                        f"margin {fmt(margin)}, {same}/{len(toks)} rows = plain tokens; non-identity gap {fmt(sens)}",
                        time.perf_counter() - t0 + timing_s / len(engines),
                        {"ms_per_token": ms_tok[name], "ratio_over_plain": ratio, "times_s": times[name],
                         "identity_gap": gap, "identity_margin": margin, "rows_equal_plain": same,
                         "non_identity_gap": sens, "tolerance": tol}))
    return rows
