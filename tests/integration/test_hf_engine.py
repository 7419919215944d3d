"""The hf engine: same greedy tokens as model.generate, raw log-probs, seeds, hooks."""
import pytest
import torch

from rlcustom.engines.base import Rollouts, SamplingParams
from rlcustom.engines.hf import HFEngine, encode_prompts, left_pad


@pytest.fixture(scope="module")
def engine(tiny):
    model, tok = tiny
    return HFEngine(model, tok, batch_size=3)  # 3 < 4 prompts: exercises batching


def test_greedy_equals_model_generate(engine, tiny, chat_prompts):
    model, tok = tiny
    r = engine.generate(chat_prompts, SamplingParams(max_new_tokens=12, temperature=0))
    ids, attn = left_pad(encode_prompts(tok, chat_prompts), tok.pad_token_id)
    ref = model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=12, do_sample=False,
                         pad_token_id=tok.pad_token_id)[:, ids.shape[1]:]
    assert isinstance(r, Rollouts) and len(r) == len(chat_prompts)
    for i, resp in enumerate(r.response_ids):
        assert resp == ref[i, : len(resp)].tolist()
        assert r.finish_reasons[i] in ("stop", "length")


def test_logprobs_are_raw_model_logprobs(engine, tiny, chat_prompts):
    model, tok = tiny
    r = engine.generate(chat_prompts[:2], SamplingParams(max_new_tokens=6, temperature=0.7, top_k=5, seed=1))
    batch = r.padded(tok.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=(batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)).logits
    P = batch["prompt_len"]
    T = batch["response_mask"].shape[1]
    lp = torch.log_softmax(logits[:, P - 1 : P - 1 + T].float(), -1)
    lp = lp.gather(-1, batch["input_ids"][:, P : P + T, None]).squeeze(-1)
    m = batch["response_mask"].bool()
    # same fp32 model, same positions; only the KV-cache path differs -> tight tolerance
    assert torch.allclose(lp[m], batch["logprobs"][m], atol=1e-4)


def test_seeded_sampling_reproducible_and_n(engine, chat_prompts):
    p = SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=7)
    a, b = engine.generate(chat_prompts, p), engine.generate(chat_prompts, p)
    assert a.response_ids == b.response_ids
    assert a.prompt_index == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    c = engine.generate(chat_prompts, p.with_(seed=8))
    assert c.response_ids != a.response_ids


def test_top_k_1_is_greedy(engine, chat_prompts):
    g = engine.generate(chat_prompts, SamplingParams(max_new_tokens=8, temperature=0))
    k1 = engine.generate(chat_prompts, SamplingParams(max_new_tokens=8, temperature=1.3, top_k=1, seed=0))
    assert g.response_ids == k1.response_ids


def test_processor_hook_bans_a_token(engine, chat_prompts):
    g = engine.generate(chat_prompts, SamplingParams(max_new_tokens=8, temperature=0))
    banned = g.response_ids[0][0]

    def ban(generated, logits):
        logits = logits.clone()
        logits[:, banned] = float("-inf")
        return logits

    r = engine.generate(chat_prompts, SamplingParams(max_new_tokens=8, temperature=0), processors=[ban])
    assert all(banned not in ids for ids in r.response_ids)


def test_stops_at_eos(tiny, chat_prompts):
    model, tok = tiny

    def force_eos_at_3(generated, logits):
        if generated.shape[1] == 2:
            logits = torch.full_like(logits, float("-inf"))
            logits[:, tok.eos_token_id] = 0.0
        return logits

    r = HFEngine(model, tok).generate(chat_prompts, SamplingParams(max_new_tokens=10, temperature=0),
                                      processors=[force_eos_at_3])
    assert all(len(ids) == 3 and ids[-1] == tok.eos_token_id for ids in r.response_ids)
    assert set(r.finish_reasons) == {"stop"}


def test_sampling_params_validate():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=float("nan"))
