"""VAS: TD(lambda) value fitting (the ``vas`` trainer, real Ray) and VAS decoding on tiny models.

(1) child values from the prefix KV cache (one batched forward) equal k separate full forwards;
(2) beta = 0 (and a fresh, all-zero value head) decodes exactly as pi_0 (greedy);
(3) after a short ``vas`` run on a length reward, mean reward rises with beta in {0, 1, 4};
(4) composing two value models (trained in-process on two rewards) moves both rewards;
(5) black-box VAS given pi_0's exact top-k log-probs equals white-box VAS (greedy).
"""
from __future__ import annotations

import json
import random

import pytest
import torch

from rlcustom.algos.td_lambda import td_lambda_targets
from rlcustom.decoding.vas import ValueCache, vas_blackbox_decoder, vas_decoder
from rlcustom.engines.base import SamplingParams
from rlcustom.engines.hf import HFEngine, left_pad
from rlcustom.models.heads import ValueModel
from rlcustom.models.tiny import tiny_llama
from rlcustom.registry import DECODERS
from rlcustom.trainers.vas import td_batch

QS = ["Say hi.", "Name a color.", "Count to three.", "What is rain?", "Tell a story.", "Why is the sky blue?",
      "Name a fruit.", "What is two plus two?"]


def mean(xs):
    return sum(xs) / len(xs)


@pytest.fixture(scope="module")
def lm():
    return tiny_llama(0, initializer_range=0.2)  # peaked (non-degenerate) next-token distributions


@pytest.fixture(scope="module")
def random_value():
    """A value model with a random head (values ~ +-5), so the VAS terms matter."""
    return ValueModel.from_backbone_of(tiny_llama(1, initializer_range=0.2)[0], init_std=0.5).eval()


def _prompts(tok):
    return [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            for q in QS]


@pytest.mark.parametrize("mode", ["tree", "expand"])
def test_child_values_from_prefix_cache_equal_full_forwards(random_value, mode):
    vm = random_value
    torch.manual_seed(0)
    ids, attn = left_pad([[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]], 2)  # left padding included
    vc = ValueCache(vm, mode=mode)
    vc.start(ids, attn)
    seq, sattn = ids, attn
    one = torch.ones(3, 1, dtype=torch.long)
    for step in range(5):
        kids = torch.stack([torch.randperm(3000)[:8] for _ in range(3)])  # k = 8 distinct children per row
        got = vc.children(kids)
        ref = torch.stack([vm(torch.cat([seq, kids[:, j : j + 1]], 1), torch.cat([sattn, one], 1))[:, -1]
                           for j in range(kids.shape[1])], dim=1)
        assert got.shape == (3, 8)
        assert torch.allclose(got, ref, atol=1e-4), (got - ref).abs().max()
        assert ref.std() > 0.1  # non-trivial values
        pick = {0: [0, 3, 7], 2: [3, 7, 0], 4: [0, 0, 0]}.get(step, [3, 3, 3])  # which child each row takes
        tok = kids[torch.arange(3), torch.tensor(pick)]
        if step % 2:  # rows 1, 2 pick a token outside their children (sampling can): it runs with the next children
            tok[1:] = 3000 + step
        vc.advance(tok)
        seq, sattn = torch.cat([seq, tok[:, None]], 1), torch.cat([sattn, one], 1)
        assert vc.length == seq.shape[1]
        # tree mode: a chosen child's K/V are kept (no forward), the others cropped away; a token outside
        # the children is pending (one column short) until the next children() call
        lag = 1 if mode == "tree" and step % 2 else 0
        assert vc.cache.get_seq_length() == seq.shape[1] - lag
        if step == 3:  # two advances in a row (no children in between) are also fine
            tok = torch.tensor([3100, 3101, 3102])
            vc.advance(tok)
            seq, sattn = torch.cat([seq, tok[:, None]], 1), torch.cat([sattn, one], 1)
            assert vc.length == seq.shape[1]


def test_beta_zero_greedy_equals_pi0(lm, random_value):
    model, tok = lm
    prompts = _prompts(tok)[:4]
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0, stop_on_eos=False)
    eng = HFEngine(model, tok)
    base = eng.generate(prompts, greedy).response_ids
    assert eng.generate(prompts, greedy, decoder=vas_decoder(random_value, 0.0, k=20)).response_ids == base
    fresh = ValueModel.from_backbone_of(tiny_llama(2)[0]).eval()  # zero head: V == 0, any beta
    assert eng.generate(prompts, greedy, decoder=vas_decoder(fresh, 5.0, k=20)).response_ids == base
    # a strong random value does change the decoding (the comparisons above are not vacuous)
    assert eng.generate(prompts, greedy, decoder=vas_decoder(random_value, 5.0, k=20)).response_ids != base
    assert DECODERS.get("vas") is vas_decoder


def _topk_fn(model, k):
    """pi_0 behind an API: only the top-k ids and log-probs of the next token (no cache, whole sequence)."""
    @torch.no_grad()
    def fn(ids, attn):
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        lp = torch.log_softmax(model(input_ids=ids, attention_mask=attn, position_ids=pos).logits[:, -1].float(), -1)
        vals, top = torch.topk(lp, k, dim=-1)
        return top, vals
    return fn


def test_blackbox_equals_whitebox_greedy(lm, random_value):
    model, tok = lm
    prompts = _prompts(tok)[:4]
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0, stop_on_eos=False)
    eng = HFEngine(model, tok)
    for beta, k in [(0.0, 20), (2.0, 5), (5.0, 20)]:
        white = eng.generate(prompts, greedy, decoder=vas_decoder(random_value, beta, k=k)).response_ids
        black = eng.generate(prompts, greedy, decoder=vas_blackbox_decoder(_topk_fn(model, k), random_value, beta,
                                                                           k=k)).response_ids
        assert white == black, (beta, k)
    # per-request beta ([B] tensor) in both modes, one row per prompt
    betas = torch.tensor([0.0, 5.0, 0.0, 5.0])
    white = eng.generate(prompts, greedy, decoder=vas_decoder([random_value], [betas])).response_ids
    black = eng.generate(prompts, greedy, decoder=vas_blackbox_decoder(_topk_fn(model, 20), random_value,
                                                                       betas)).response_ids
    assert white == black
    base = eng.generate(prompts, greedy).response_ids
    assert white[0] == base[0] and white[2] == base[2]  # beta 0 rows are pi_0


# ----------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("vasdata") / "prompts.jsonl"
    p.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QS))
    return p


def test_vas_trainer_then_reward_rises_with_beta(stopping_tiny_dir, prompts_file, tmp_path):
    from rlcustom.config import load_config
    from rlcustom.models.loading import load_causal_lm, load_tokenizer
    from rlcustom.trainers import run_trainer

    overrides = [
        "trainer=vas", f"model.path={stopping_tiny_dir}", f"output_dir={tmp_path}", f"data.prompts={prompts_file}",
        "data.split=all", "steps=24", "seed=0", "engine=hf", "sampling.max_new_tokens=12",
        "algo.samples=96", "algo.samples_per_prompt=12", "algo.prompts_per_batch=8", "algo.temperature=1.0",
        "algo.batch_size=32", "algo.lr=3e-3", "algo.eval_every=12", "algo.val_fraction=0.25",
        "optim.micro_batch_size=32", "reward.spec=length_tokens", "reward.kwargs.scale=-0.2",
        "roles.rollout.cpus=0.5", "roles.reward.cpus=0.25", "roles.value.cpus=0.5", "tracking.mode=offline", "cluster.backend=inprocess"]
    res = run_trainer(load_config(None, overrides))
    hist = res["history"]
    loss = [h["value/loss"] for h in hist]
    assert mean(loss[-4:]) < 0.5 * mean(loss[:2]), loss
    val = [h["value/val_mse"] for h in hist if "value/val_mse" in h]
    assert len(val) == 2 and val[-1] < 1.0, val
    rows = [json.loads(x) for x in (tmp_path / "vas_samples.jsonl").read_text().splitlines()]
    assert len(rows) == 96 and (tmp_path / "vas_samples.jsonl.meta.json").is_file()
    assert all(r["reward"] == pytest.approx(-0.2 * len(r["response_ids"])) for r in rows)

    vm = ValueModel.load(tmp_path / "value")
    model, tok = load_causal_lm(str(stopping_tiny_dir)), load_tokenizer(str(stopping_tiny_dir))
    eng = HFEngine(model, tok)
    prompts = _prompts(tok)
    params = SamplingParams(max_new_tokens=12, temperature=1.0, n=4, seed=1)
    reward = {}
    for beta in (0.0, 1.0, 4.0):
        out = eng.generate(prompts, params, decoder=vas_decoder(vm, beta, k=20))
        reward[beta] = mean([-0.2 * len(r) for r in out.response_ids])
    assert reward[0.0] < reward[1.0] < reward[4.0], reward


def _boosted_model(tmp_path, token: int):
    """The stopping tiny model (EOS reachable) with a second frequent token ``token`` (logit ~7)."""
    model, tok = tiny_llama(0, eos_logit=6.0)
    g = torch.Generator().manual_seed(0)
    probe = torch.randint(0, len(tok), (8, 32), generator=g)
    with torch.no_grad():
        h = model.model(input_ids=probe).last_hidden_state.reshape(-1, model.config.hidden_size).mean(0)
        model.model.embed_tokens.weight[token] = 7.0 * h / h.norm() ** 2
    model.save_pretrained(tmp_path / "boosted")
    tok.save_pretrained(tmp_path / "boosted")
    return model, tok, tmp_path / "boosted"


def test_composition_of_two_values_moves_both_rewards(tmp_path):
    from rlcustom.actors.value import ValueActor

    T = 1000
    model, tok, path = _boosted_model(tmp_path, T)
    eng = HFEngine(model, tok)
    prompts = _prompts(tok)
    ro = eng.generate(prompts, SamplingParams(max_new_tokens=12, temperature=1.0, n=12, seed=0))
    r_short = lambda ids: -0.2 * len(ids)  # noqa: E731
    r_tok = lambda ids: sum(t == T for t in ids) / max(len(ids), 1)  # noqa: E731  (token_range [T, T+1))
    values = []
    for fn in (r_short, r_tok):
        va = ValueActor(str(path), lr=3e-3, micro_batch_size=32, num_threads=2)
        rows = [{"prompt_ids": p, "response_ids": r, "reward": fn(r)} for p, r in zip(ro.prompt_ids, ro.response_ids)]
        for s in range(16):
            batch, rew = td_batch(random.Random(s).sample(rows, 32), tok.pad_token_id)
            G = td_lambda_targets(va.values(batch), rew, batch["response_mask"], gamma=1.0, lam=0.95)
            va.train_step(batch | {"targets": G}, "value_mse")
        values.append(va.model.eval())
    params = SamplingParams(max_new_tokens=12, temperature=1.0, n=4, seed=1)

    def rewards(betas):
        out = eng.generate(prompts, params, decoder=vas_decoder(values, betas, k=20))
        return mean([r_short(r) for r in out.response_ids]), mean([r_tok(r) for r in out.response_ids])

    base = rewards([0.0, 0.0])
    both = rewards([3.0, 6.0])
    assert both[0] > base[0] and both[1] > base[1], (base, both)
