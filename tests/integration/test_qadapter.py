"""Q-Adapter: the learner objective against a hand computation, the trainer on HH pairs with real
Ray (loss falls, preference accuracy rises, the adapter decodes through HFEngine), the Replay
baseline and the forgetting metric."""
import json

import pytest
import torch

from rlcustom.algos.qadapter import qadapter_logits, qadapter_loss, residual_rewards
from rlcustom.config import load_config
from rlcustom.trainers import run_trainer

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]




@pytest.fixture(scope="module")
def qa_dir(tmp_path_factory):
    """A tiny model whose logits have some scale (initializer_range=0.2): with the default 0.02 the
    LoRA on attention can barely move the logits, and the summed residual rewards hardly change in 12 steps."""
    from rlcustom.models.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("qa") / "model", seed=0, initializer_range=0.2)


def mean(xs):
    return sum(xs) / len(xs)


def _pair_batch(tok, n_pairs=3):
    from rlcustom.data.loaders import load_preference_pairs
    from rlcustom.trainers.offline import encode_pairs

    rows = list(load_preference_pairs("hh-rlhf", split="train", limit=n_pairs))
    prompts = [r["prompt"] for r in rows for _ in (0, 1)]
    answers = [x for r in rows for x in (r["chosen"], r["rejected"])]
    return encode_pairs(tok, prompts, answers, 24, 12).padded(tok.pad_token_id)


@pytest.mark.parametrize("base_forward", ["cached", "separate", "paired"])
def test_objective_matches_hand_computation(base_forward):
    """The objective (one call) == qadapter_loss(residual_rewards(...)) from two separate full forwards
    (adapter disabled -> log pi_1, adapter on -> Q), and so do the gradients.
    Tolerance: 1e-5 abs on the loss/stats (float32; 'paired' runs a 2B-row batched forward)."""
    from peft import LoraConfig, get_peft_model

    from rlcustom.objectives.qadapter import qadapter
    from rlcustom.models.tiny import tiny_llama

    base, tok = tiny_llama(0, initializer_range=0.2)
    pm = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.05))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a non-trivial adapter (peft starts with B = 0)
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    pm.eval()  # no LoRA dropout: the two computations must see the same network
    batch = _pair_batch(tok)
    kw = dict(alpha=0.7, alpha0=0.05, gamma=0.9, beta=0.1)
    params = [p for p in pm.parameters() if p.requires_grad]

    if base_forward == "cached":  # pi_1's hidden states, as the reference actor computes them
        from rlcustom.actors.reference import ReferenceActor

        ref = ReferenceActor.__new__(ReferenceActor)
        with pm.disable_adapter():
            ref.model, ref.micro_batch_size = pm.get_base_model(), 3
            hs = ref.response_hidden(batch)
        assert [h.shape[0] for h in hs] == batch["response_mask"].sum(1).tolist()
        batch = dict(batch, base_hidden=torch.nn.utils.rnn.pad_sequence(hs, batch_first=True))
    loss, stats = qadapter(pm, batch, base_forward=base_forward, **kw)
    loss.backward()
    got_grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None

    P, mask = int(batch["prompt_len"]), batch["response_mask"]
    T = mask.shape[1]
    ids, attn = batch["input_ids"], batch["attention_mask"]
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    with pm.disable_adapter(), torch.no_grad():
        base_lp = torch.log_softmax(pm(input_ids=ids, attention_mask=attn, position_ids=pos).logits[:, P - 1 : P - 1 + T], -1)
    q = pm(input_ids=ids, attention_mask=attn, position_ids=pos).logits[:, P - 1 : P - 1 + T]
    r = residual_rewards(q, base_lp, ids[:, P : P + T], mask, alpha=0.7, alpha0=0.05, gamma=0.9)
    want, wst = qadapter_loss(r[0::2], mask[0::2], r[1::2], mask[1::2], beta=0.1)
    want.backward()
    assert abs(float(loss.detach()) - float(want.detach())) < 1e-5, (float(loss), float(want))
    assert stats["train/reward_accuracy"] == pytest.approx(float(wst["accuracy"]))
    assert stats["train/margin"] == pytest.approx(float(wst["margin"]), abs=1e-4)
    for gg, p in zip(got_grads, params):
        torch.testing.assert_close(gg, p.grad, atol=1e-5, rtol=1e-4)
    assert any(float(gg.abs().sum()) > 0 for gg in got_grads)
    with pytest.raises(ValueError, match="odd number of rows"):
        qadapter(pm, {k: (v[:3] if torch.is_tensor(v) and v.dim() else v) for k, v in batch.items()})


def _greedy_reference(pm, tok, prompt, n, alpha, alpha0):
    """Greedy decoding of pi~ by full forwards without a KV cache (adapter on / off)."""
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = []
    with torch.no_grad():
        for _ in range(n):
            q = pm(input_ids=ids).logits[:, -1]
            with pm.disable_adapter():
                h = pm(input_ids=ids).logits[:, -1]
            nxt = int(qadapter_logits(q, h, alpha, alpha0).argmax(-1))
            out.append(nxt)
            if nxt == tok.eos_token_id:
                break
            ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    return out


def test_qadapter_trainer_learns_and_adapter_decodes(qa_dir, chat_prompts, tmp_path):
    from peft import PeftModel

    from rlcustom.data.loaders import load_preference_pairs
    from rlcustom.decoding.qadapter import qadapter_decoder
    from rlcustom.engines.base import SamplingParams
    from rlcustom.engines.hf import HFEngine
    from rlcustom.eval.qadapter import preference_accuracy_qadapter
    from rlcustom.models.loading import load_causal_lm, load_tokenizer

    alpha, alpha0 = 1.0, 0.01
    cfg = load_config(None, [
        "trainer=qadapter", f"model.path={qa_dir}", f"output_dir={tmp_path}", "data.prompts=hh-rlhf",
        "data.split=train", "data.limit=32", "data.max_prompt_tokens=48", "algo.max_completion_tokens=24",
        "algo.pairs_per_step=8", f"algo.alpha={alpha}", f"algo.alpha0={alpha0}", "algo.beta=0.1", "steps=12",
        "seed=0", "optim.lr=1e-2", "optim.micro_batch_size=8", "model.lora.r=8", "model.lora.alpha=16",
        "roles.learner.zero_stage=0", "roles.learner.cpus=1", "tracking.mode=offline", "cluster.backend=inprocess"])
    res = run_trainer(cfg)
    hist = res["history"]
    loss = [h["train/qadapter_loss"] for h in hist]
    acc = [h["train/reward_accuracy"] for h in hist]
    assert mean(loss[-4:]) < 0.85 * mean(loss[:4]), loss  # epoch 3 vs epoch 1 (same 32 pairs)
    assert mean(acc[-4:]) > mean(acc[:4]) and mean(acc[-4:]) > 0.6, acc
    adapter = tmp_path / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()

    # implicit reward (summed residual rewards) ranks the training pairs
    tok = load_tokenizer(qa_dir)
    pairs = list(load_preference_pairs("hh-rlhf", split="train", limit=32))
    ev = preference_accuracy_qadapter(qa_dir, str(adapter), pairs, tokenizer=tok, alpha=alpha, alpha0=alpha0,
                                      max_prompt_tokens=48, max_completion_tokens=24)
    assert ev["pairs"] == 32 and ev["accuracy"] > 0.6, ev

    # the saved adapter, loaded with peft, decodes through HFEngine with QAdapterStep
    pm = PeftModel.from_pretrained(load_causal_lm(qa_dir), str(adapter)).eval()
    assert any(float(p.abs().sum()) > 0 for n, p in pm.named_parameters() if "lora_B" in n)  # trained
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0, seed=0)
    ro = HFEngine(pm, tok).generate(chat_prompts[:2], greedy, decoder=qadapter_decoder(alpha=alpha, alpha0=alpha0))
    for prompt, got in zip(chat_prompts[:2], ro.response_ids):
        assert got == _greedy_reference(pm, tok, prompt, len(got), alpha, alpha0)


def test_replay_trainer_and_forgetting(qa_dir, tmp_path):
    from rlcustom.eval.qadapter import forgetting
    from rlcustom.models.loading import load_causal_lm, load_tokenizer

    cfg = load_config(None, [
        "trainer=replay", f"model.path={qa_dir}", f"output_dir={tmp_path}", "data.prompts=hh-rlhf",
        "data.split=train", "data.limit=16", "data.max_prompt_tokens=48", "algo.max_completion_tokens=24",
        "algo.batch_size=8", "algo.replay_fraction=0.5", "algo.replay_examples=4", "algo.replay_max_new_tokens=8",
        "steps=3", "seed=0", "optim.lr=5e-3", "optim.micro_batch_size=8", "model.lora.r=8",
        "roles.learner.zero_stage=0", "roles.learner.cpus=1", "tracking.mode=offline", "cluster.backend=inprocess"])
    hist = run_trainer(cfg)["history"]
    assert len(hist) == 3 and all(h["train/replay_rows"] == 4 for h in hist)
    rows = [json.loads(x) for x in (tmp_path / "replay.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["completion"] is not None for r in rows)

    tok = load_tokenizer(qa_dir)
    base = load_causal_lm(qa_dir)
    texts = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
    same = forgetting(base, base, texts, tokenizer=tok)
    assert same["forgetting"] == pytest.approx(0.0, abs=1e-6) and same["nll_base"] > 0
    moved = forgetting(base, load_causal_lm(tmp_path / "model"), texts, tokenizer=tok)
    assert moved["nll_model"] > 0 and abs(moved["forgetting"]) > 1e-4, moved
