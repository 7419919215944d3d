"""Multi-model decoders on tiny models: DeRa (two-model, multi-model, LoRA), Q-Adapter,
the paired base/LoRA forward, and weight-combining DeRa.

Tolerances: logits are compared at ``ATOL = 1e-4`` absolute (float32). The logits of
these models reach |h| ~ 9 (std ~1.6); the paired forward runs 2B rows instead of B and
cached decoding is compared with un-cached full forwards, so the matmuls differ in
blocking and summation order. The measured differences are <= 2e-5, the same as between
the plain ``CausalLMStep`` (cached) and an un-cached forward of one model, i.e. float32
rounding (~2e-6 relative). Weight interpolation at lam = 0/1 is compared exactly.
"""
from __future__ import annotations

import copy

import pytest
import torch

from rlcustom.algos.dera import dera_logits
from rlcustom.algos.qadapter import qadapter_logits
from rlcustom.decoding.dera import (DeRaStep, dera_decoder, dera_lora_decoder, lora_interpolated,
                                    weight_interpolated_model)
from rlcustom.decoding.multi import PairedLoRAStep, TwoModelStep, positions_from_mask
from rlcustom.decoding.qadapter import QAdapterStep, qadapter_decoder
from rlcustom.engines.base import SamplingParams
from rlcustom.engines.hf import CausalLMStep, HFEngine, encode_prompts, left_pad
from rlcustom.models.tiny import tiny_llama
from rlcustom.registry import DECODERS

ATOL = 1e-4
GREEDY = SamplingParams(max_new_tokens=6, temperature=0.0, stop_on_eos=False)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _tiny(seed: int, **kw):
    """A seeded tiny Llama. ``initializer_range=0.2`` (not the default 0.02): with tied
    embeddings a near-zero-initialised network just repeats its input token, so every
    seed would decode the same "\n\n\n..." and the comparisons would be vacuous."""
    return tiny_llama(seed, initializer_range=0.2, **kw)[0]


def _peft(seed: int = 0, *, random_b: bool, dropout: float = 0.0, std: float = 0.2):
    from peft import LoraConfig, get_peft_model

    base = _tiny(seed)
    pm = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=dropout))
    if random_b:
        g = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * std)
    return pm.eval()


@pytest.fixture(scope="module")
def tok(tiny):
    return tiny[1]


@pytest.fixture(scope="module")
def sft():
    return _tiny(0)


@pytest.fixture(scope="module")
def aligned():
    return _tiny(1)


@pytest.fixture(scope="module")
def aligned2():
    return _tiny(2)


@pytest.fixture(scope="module")
def lora_model():
    return _peft(0, random_b=True)


@pytest.fixture(scope="module")
def batch(tok, chat_prompts):
    return left_pad(encode_prompts(tok, chat_prompts), tok.pad_token_id)


def greedy(model, tok, prompts, decoder=None, params=GREEDY):
    return HFEngine(model, tok).generate(prompts, params, decoder=decoder).response_ids


@pytest.fixture(scope="module")
def ref(sft, aligned, lora_model, tok, chat_prompts):
    """Plain greedy outputs, computed once: sft, aligned, LoRA base, LoRA adapted."""
    out = {"sft": greedy(sft, tok, chat_prompts), "aligned": greedy(aligned, tok, chat_prompts)}
    with lora_model.disable_adapter():
        out["lora_base"] = greedy(lora_model, tok, chat_prompts)
    out["lora_aligned"] = greedy(lora_model, tok, chat_prompts)
    return out


def drive(step, ids, attn, n_tokens, pick=0):
    """Run a (multi-)step for ``n_tokens``; feed the argmax of output ``pick`` (or of the
    single output); returns the per-step outputs and the fed tokens [B, n_tokens]."""
    outs, toks = [], []
    out = step.start(ids, attn)
    for t in range(n_tokens):
        outs.append(out)
        logits = out[pick] if isinstance(out, tuple) else out
        tok = logits.argmax(-1)
        toks.append(tok)
        if t < n_tokens - 1:
            out = step.advance(tok)
    return outs, torch.stack(toks, 1)


@torch.inference_mode()
def full_logits(model, ids, attn, toks):
    """Un-cached forward on prompt + toks; [B, T, V] logits predicting toks[:, t] (t = 0..T-1)."""
    x = torch.cat([ids, toks], 1)
    m = torch.cat([attn, torch.ones_like(toks)], 1)
    out = model(input_ids=x, attention_mask=m, position_ids=positions_from_mask(m)).logits.float()
    P = ids.shape[1]
    return out[:, P - 1 : P - 1 + toks.shape[1]]


# ------------------------------------------------------------------ (a) DeRa endpoints


def test_dera_two_model_endpoints(sft, aligned, tok, chat_prompts, ref):
    want_sft, want_al = ref["sft"], ref["aligned"]
    assert want_sft != want_al  # the test would be vacuous otherwise
    assert greedy(sft, tok, chat_prompts, dera_decoder(0.0, aligned=[aligned])) == want_sft
    assert greedy(sft, tok, chat_prompts, dera_decoder(1.0, aligned=aligned)) == want_al


def test_dera_lora_endpoints(lora_model, tok, chat_prompts, ref):
    want_base, want_al = ref["lora_base"], ref["lora_aligned"]
    assert want_base != want_al
    for mode in ("slice", "peft"):
        assert greedy(lora_model, tok, chat_prompts, dera_lora_decoder(0.0, mode=mode)) == want_base
        assert greedy(lora_model, tok, chat_prompts, dera_lora_decoder(1.0, mode=mode)) == want_al


# ------------------------------------------------------------------ (b) DeRa step logits


def test_dera_step_logits_match_full_forwards(sft, aligned, tok, batch, chat_prompts, ref):
    ids, attn = batch
    step = DeRaStep(sft, [aligned], 0.5)
    outs, toks = drive(step, ids, attn, 6)
    want = dera_logits(full_logits(sft, ids, attn, toks), full_logits(aligned, ids, attn, toks), 0.5)
    got = torch.stack(outs, 1)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    mid = greedy(sft, tok, chat_prompts, dera_decoder(0.5, aligned=[aligned]))
    assert mid != ref["sft"] and mid != ref["aligned"]


def test_dera_lora_step_logits_match_full_forwards(lora_model, batch, tok, chat_prompts, ref):
    ids, attn = batch
    outs, toks = drive(DeRaStep.from_lora(lora_model, 0.5), ids, attn, 6)
    with lora_model.disable_adapter():
        h_base = full_logits(lora_model, ids, attn, toks)
    h_al = full_logits(lora_model, ids, attn, toks)
    torch.testing.assert_close(torch.stack(outs, 1), dera_logits(h_base, h_al, 0.5), atol=ATOL, rtol=0)
    mid = greedy(lora_model, tok, chat_prompts, dera_lora_decoder(0.5))
    assert mid != ref["lora_base"] and mid != ref["lora_aligned"]


# ------------------------------------------------------------------ (c) several aligned models


def test_dera_multi_model(sft, aligned, aligned2, batch):
    ids, attn = batch
    lam = [0.3, 0.4]
    outs, toks = drive(DeRaStep(sft, [aligned, aligned2], lam), ids, attn, 6)
    want = dera_logits(full_logits(sft, ids, attn, toks),
                       [full_logits(aligned, ids, attn, toks), full_logits(aligned2, ids, attn, toks)], lam)
    torch.testing.assert_close(torch.stack(outs, 1), want, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="list"):
        DeRaStep(sft, [aligned, aligned2], 0.3)
    with pytest.raises(ValueError, match="2 aligned models but 3"):
        DeRaStep(sft, [aligned, aligned2], [0.1, 0.2, 0.3])


def test_dera_multi_adapter_lora(batch):
    """Two LoRA adapters of one peft model (3B rows in one forward) = three-model DeRa."""
    from peft import LoraConfig

    pm = _peft(0, random_b=True)
    pm.add_adapter("other", LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B.other" in n:
                p.normal_(0, 0.2)
    ids, attn = batch
    lam = [0.3, 0.4]
    outs, toks = drive(DeRaStep.from_lora(pm, lam, adapters=["default", "other"]), ids, attn, 4)
    with pm.disable_adapter():
        h0 = full_logits(pm, ids, attn, toks)
    hs = []
    for a in ("default", "other"):
        pm.set_adapter(a)
        hs.append(full_logits(pm, ids, attn, toks))
    pm.set_adapter("default")
    torch.testing.assert_close(torch.stack(outs, 1), dera_logits(h0, hs, lam), atol=ATOL, rtol=0)


def test_dera_per_request_lam(sft, aligned, tok, chat_prompts, ref):
    want_sft, want_al = ref["sft"], ref["aligned"]
    lam = torch.tensor([0.0, 1.0, 1.0, 0.0])
    got = greedy(sft, tok, chat_prompts, dera_decoder(lam, aligned=[aligned]))
    assert got == [want_sft[0], want_al[1], want_al[2], want_sft[3]]
    with pytest.raises(ValueError, match="4 entries but the batch has 2"):
        greedy(sft, tok, chat_prompts[:2], dera_decoder(lam, aligned=[aligned]))


# ------------------------------------------------------------------ (d) the paired forward


@pytest.mark.parametrize("mode", ["slice", "peft"])
def test_paired_lora_halves_match_plain(mode, batch):
    pm = _peft(3, random_b=True, dropout=0.1).train()  # dropout on: must be switched off while decoding
    ids, attn = batch
    step = PairedLoRAStep(pm, mode=mode)
    assert step.mode == mode
    outs, toks = drive(step, ids, attn, 6, pick=1)
    assert pm.training and all(m.training for m in pm.modules())  # train mode restored
    pm.eval()
    with pm.disable_adapter():
        base_step = CausalLMStep(pm)
        base = [base_step.start(ids, attn)] + [base_step.advance(toks[:, t]) for t in range(5)]
    ad_step = CausalLMStep(pm)
    adapted = [ad_step.start(ids, attn)] + [ad_step.advance(toks[:, t]) for t in range(5)]
    for t in range(6):
        torch.testing.assert_close(outs[t][0], base[t], atol=ATOL, rtol=0)
        torch.testing.assert_close(outs[t][1], adapted[t], atol=ATOL, rtol=0)
        assert (outs[t][0] - outs[t][1]).abs().max() > 1e-2  # the adapter does something


def test_paired_lora_reorder(lora_model, batch):
    ids, attn = batch
    step = PairedLoRAStep(lora_model)
    base, ad = step.start(ids, attn)
    step.reorder(torch.tensor([0, 2]))
    tok = ad[[0, 2]].argmax(-1)
    got = step.advance(tok)
    ref = PairedLoRAStep(lora_model)
    ref.start(ids[[0, 2]], attn[[0, 2]])
    want = ref.advance(tok)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=ATOL, rtol=0)


def test_paired_lora_rejects_non_peft_and_merged(sft):
    with pytest.raises(ValueError, match="peft model"):
        PairedLoRAStep(sft)
    pm = _peft(0, random_b=True)
    pm.merge_adapter()
    with pytest.raises(ValueError, match="merged"):
        PairedLoRAStep(pm)


def test_two_model_step_vocab_mismatch(sft, batch):
    from transformers import LlamaForCausalLM

    from rlcustom.models.tiny import tiny_config

    small = LlamaForCausalLM(tiny_config(1000)).eval()
    ids, attn = batch
    with pytest.raises(ValueError, match="vocabulary"):
        TwoModelStep([sft, small]).start(ids.clamp(max=999), attn)


# ------------------------------------------------------------------ (e) Q-Adapter


def test_qadapter_fresh_adapter_keeps_base_greedy(tok, chat_prompts, batch):
    pm = _peft(0, random_b=False)  # peft initialises LoRA B = 0
    assert all(bool((p == 0).all()) for n, p in pm.named_parameters() if "lora_B" in n)
    with pm.disable_adapter():
        want = greedy(pm, tok, chat_prompts, params=GREEDY.with_(max_new_tokens=8))
    for alpha, alpha0 in ((1.0, 0.01), (0.5, 0.3)):
        got = greedy(pm, tok, chat_prompts, qadapter_decoder(alpha, alpha0), params=GREEDY.with_(max_new_tokens=8))
        assert got == want
    # the maths: with Q = h the output is ((1 + a0) h - a0 logsumexp h) / alpha, increasing in h
    ids, attn = batch
    step = QAdapterStep(pm, alpha=0.5, alpha0=0.3)
    out = step.start(ids, attn)
    h = step.last[0]
    torch.testing.assert_close(step.last[1], h, atol=ATOL, rtol=0)
    affine = ((1 + 0.3) * h - 0.3 * torch.logsumexp(h, -1, keepdim=True)) / 0.5
    torch.testing.assert_close(out, affine, atol=1e-4, rtol=1e-5)
    assert torch.equal(out.argmax(-1), h.argmax(-1))


def test_qadapter_step_logits_match_full_forwards(lora_model, batch):
    ids, attn = batch
    outs, toks = drive(QAdapterStep(lora_model, alpha=1.0, alpha0=0.01), ids, attn, 6)
    with lora_model.disable_adapter():
        h_base = full_logits(lora_model, ids, attn, toks)
    q = full_logits(lora_model, ids, attn, toks)
    torch.testing.assert_close(torch.stack(outs, 1), qadapter_logits(q, h_base, 1.0, 0.01), atol=ATOL, rtol=0)


# ------------------------------------------------------------------ (f) weight combining


def test_weight_interpolation_endpoints(sft, aligned):
    sd_s, sd_a = sft.state_dict(), aligned.state_dict()
    for lam, want in ((0.0, sd_s), (1.0, sd_a)):
        m = weight_interpolated_model(sft, aligned, lam)
        assert m is not sft and m is not aligned
        got = m.state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    half = weight_interpolated_model(sft, aligned, 0.5).state_dict()
    k = "model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(half[k], 0.5 * sd_s[k] + 0.5 * sd_a[k])
    assert torch.equal(sft.state_dict()[k], sd_s[k])  # inputs untouched


def test_lora_interpolation(lora_model):
    base_sd = {k: v.clone() for k, v in lora_model.get_base_model().state_dict().items()}
    base_sd = {k.replace(".base_layer", ""): v for k, v in base_sd.items() if "lora_" not in k}
    merged = lora_interpolated(lora_model, 1.0)
    zero = lora_interpolated(lora_model, 0.0)
    full = copy.deepcopy(lora_model).merge_and_unload().state_dict()
    sd0, sd1 = zero.state_dict(), merged.state_dict()
    assert sd0.keys() == base_sd.keys() == sd1.keys()
    assert all(torch.equal(sd0[k], base_sd[k]) for k in base_sd)
    assert all(torch.equal(sd1[k], full[k]) for k in full)
    # lam * delta == weight interpolation between base and merged model
    half = lora_interpolated(lora_model, 0.5).state_dict()
    interp = weight_interpolated_model(zero, merged, 0.5).state_dict()
    for k in half:
        torch.testing.assert_close(half[k], interp[k], atol=1e-6, rtol=0)
    k = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(half[k], sd0[k]) and not torch.equal(half[k], sd1[k])
    # the peft model itself is unchanged (still an unmerged LoRA with its scaling)
    from rlcustom.models.lora import lora_layers

    assert all(m.scaling["default"] == 2.0 and not m.merged for m in lora_layers(lora_model))


# ------------------------------------------------------------------ registry


def test_registered_decoders(sft, aligned, lora_model, batch):
    assert {"dera", "dera_lora", "qadapter"} <= set(DECODERS.names())
    ids, attn = batch
    assert isinstance(DECODERS.get("dera")(lam=0.5, aligned=[aligned])(sft), DeRaStep)
    assert isinstance(DECODERS.get("dera_lora")(lam=0.5)(lora_model), DeRaStep)
    assert isinstance(DECODERS.get("qadapter")(alpha=1.0, alpha0=0.01)(lora_model), QAdapterStep)
