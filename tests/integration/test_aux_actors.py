"""Reference, value and reward actors in-process on the tiny model (no Ray needed)."""
from __future__ import annotations

import pytest
import torch

from rlcustom.engines.base import Rollouts
from rlcustom.models.forward import response_logprobs

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from 2 threads, and lose ~8x when other jobs share the 2 cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ragged on purpose: prompts of different lengths (left padding), responses of different lengths (right padding)
RESPONSES = [[450, 1135, 30, 2], [17, 98], [5, 6, 7, 8, 9, 10], [771]]


@pytest.fixture(scope="module")
def rollouts(tiny, chat_prompts):
    _, tok = tiny
    p_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in chat_prompts]
    p_ids[1] = p_ids[1][-5:]  # much shorter prompt
    texts = tok.batch_decode(RESPONSES, skip_special_tokens=True)
    return Rollouts(p_ids, [list(r) for r in RESPONSES], [[0.0] * len(r) for r in RESPONSES],
                    ["stop", "length", "length", "length"], list(range(4)), texts=texts)


def _row_logprobs(model, prompt, response):
    """log p(y_t | x, y_<t) of one unpadded sequence, by hand."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)[0]
    P = len(prompt)
    return torch.stack([logp[P - 1 + t, y] for t, y in enumerate(response)])


# --------------------------------------------------------------------------- reference


def test_reference_logprobs_equal_direct_forward(tiny, tiny_dir, rollouts):
    from rlcustom.actors.reference import ReferenceActor

    model, tok = tiny
    ref = ReferenceActor(str(tiny_dir), micro_batch_size=3)  # 3 < 4 rows: two micro-batches, trimmed differently
    assert ref.ready()["role"] == "reference"
    batch = rollouts.padded(tok.pad_token_id)
    lp = ref.logprobs(batch)
    with torch.no_grad():
        direct = response_logprobs(model, batch)
    assert lp.shape == direct.shape == batch["response_mask"].shape
    torch.testing.assert_close(lp, direct, atol=1e-4, rtol=1e-4)
    assert (lp[batch["response_mask"] == 0] == 0).all()
    ragged = ref.logprobs_rollouts(rollouts, tok.pad_token_id)
    for i, (p, r) in enumerate(zip(rollouts.prompt_ids, rollouts.response_ids)):
        assert len(ragged[i]) == len(r)
        torch.testing.assert_close(torch.tensor(ragged[i]), _row_logprobs(model, p, r), atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- value


@pytest.fixture(scope="module")
def value_batch(tiny, rollouts):
    _, tok = tiny
    b = rollouts.padded(tok.pad_token_id)
    b["returns"] = torch.full_like(b["response_mask"], 1.0)
    return b


def test_value_columns_are_states_before_each_token(tiny_dir, rollouts, value_batch):
    from rlcustom.actors.value import ValueActor

    actor = ValueActor(str(tiny_dir), init_std=0.05, micro_batch_size=3)
    v = actor.values(value_batch)
    assert v.shape == value_batch["response_mask"].shape
    assert (v[value_batch["response_mask"] == 0] == 0).all()
    with torch.no_grad():
        for i, (p, r) in enumerate(zip(rollouts.prompt_ids, rollouts.response_ids)):
            full = actor.model(torch.tensor([p + r]), torch.ones(1, len(p) + len(r), dtype=torch.long))[0]
            # V(x, y_<t) is read at column len(p) - 1 + t of the unpadded sequence
            torch.testing.assert_close(v[i, : len(r)], full[len(p) - 1 : len(p) - 1 + len(r)], atol=1e-4, rtol=1e-4)


def test_value_mse_falls_toward_constant_targets(tiny_dir, value_batch):
    from rlcustom.actors.value import ValueActor
    from rlcustom.registry import OBJECTIVES

    assert "value_mse" in OBJECTIVES and "value_clip" in OBJECTIVES
    actor = ValueActor(str(tiny_dir), lr=1e-2, micro_batch_size=4)
    assert float(actor.values(value_batch).abs().max()) == 0.0  # zero-initialised head
    losses = [actor.train_step(value_batch, "value_mse")["value/loss"] for _ in range(20)]
    assert losses[0] == pytest.approx(1.0, abs=1e-5)  # V = 0, R = 1
    assert losses[-1] < 0.2 * losses[0], losses
    assert actor.eval_loss(value_batch) < 0.2
    assert actor.step_count == 20


def test_value_clip_uses_old_values(tiny_dir, value_batch):
    from rlcustom.actors.value import ValueActor

    actor = ValueActor(str(tiny_dir), lr=1e-2, micro_batch_size=4)
    b = dict(value_batch, old_values=torch.zeros_like(value_batch["returns"]))
    s = actor.train_step(b, loss="value_clip", clip_eps=0.2)
    assert s["value/loss"] == pytest.approx(0.5, abs=1e-5)  # 0.5 * (0 - 1)^2, V = V_old = 0
    # make V = 0.5 everywhere: V_old = 0, R = 1, eps = 0.2 -> V_clip = 0.2
    with torch.no_grad():
        actor.model.head.weight.zero_()
        actor.model.head.bias.fill_(0.5)
    s = actor.train_step(b, "value_clip", clip_eps=0.2)
    assert s["value/loss"] == pytest.approx(0.5 * 0.8 ** 2, abs=1e-5)  # the clipped error dominates
    assert s["value/vf_clipfrac"] == pytest.approx(1.0) and s["value/grad_norm"] == 0.0  # and cuts the gradient
    with torch.no_grad():
        actor.model.head.weight.zero_()
        actor.model.head.bias.fill_(0.5)
    s = actor.train_step(b, "value_clip", clip_eps=1.0)  # wide clip: plain 0.5 * (V - R)^2
    assert s["value/loss"] == pytest.approx(0.5 * 0.5 ** 2, abs=1e-5) and s["value/vf_clipfrac"] == 0.0
    no_old = dict(value_batch)
    with torch.no_grad():
        actor.model.head.weight.zero_()
        actor.model.head.bias.fill_(0.5)
    assert actor.eval_loss(no_old, "value_clip") == pytest.approx(0.125, abs=1e-5)  # no old_values: 0.5 * MSE
    assert actor.eval_loss(no_old, "value_mse") == pytest.approx(0.25, abs=1e-5)


def test_value_save_load_roundtrip(tiny_dir, value_batch, tmp_path):
    from rlcustom.actors.value import ValueActor

    a = ValueActor(str(tiny_dir), lr=1e-2, num_layers=1, micro_batch_size=4)
    assert a.model.num_layers == 1 and a.model.config.num_hidden_layers == 1
    for _ in range(3):
        a.train_step(value_batch)
    a.save(str(tmp_path / "v"))
    b = ValueActor(str(tmp_path / "v"), lr=1e-2)  # a saved directory loads as a value model
    assert b.model.num_layers == 1
    torch.testing.assert_close(a.values(value_batch), b.values(value_batch))
    assert b.load(str(tmp_path / "v")) == 3  # step count + optimizer state
    sa, sb = a.train_step(value_batch), b.train_step(value_batch)
    assert sa["value/loss"] == pytest.approx(sb["value/loss"], rel=1e-5)
    torch.testing.assert_close(a.values(value_batch), b.values(value_batch), atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- reward


def test_reward_model_scores_one_per_sample_padding_invariant(tiny, tiny_dir, rollouts, tmp_path):
    from rlcustom.actors.reward import RewardActor
    from rlcustom.models.heads import RewardModel

    _, tok = tiny
    rm = RewardModel.from_pretrained(str(tiny_dir))
    rm.save(tmp_path / "rm", tokenizer=tok)
    actor = RewardActor("model", model_path=str(tmp_path / "rm"), micro_batch_size=3)
    scores = actor.score(rollouts)
    assert len(scores) == len(rollouts) and all(isinstance(s, float) for s in scores)
    assert len(set(scores)) == len(scores)  # a random head tells sequences apart
    with torch.no_grad():
        for i, (p, r) in enumerate(zip(rollouts.prompt_ids, rollouts.response_ids)):
            ids = torch.tensor([p + r])
            assert scores[i] == pytest.approx(float(rm(ids, torch.ones_like(ids))[0]), abs=1e-4)
        out = rm(*[rollouts.padded(tok.pad_token_id)[k] for k in ("input_ids", "attention_mask")])
    assert out.shape == (len(rollouts),)
    loaded = RewardModel.load(tmp_path / "rm")
    assert loaded.tokenizer is not None
    assert len(loaded.score_texts(["Hello", "Hi"], [" there", "!"])) == 2


def test_score_texts_reads_the_reward_where_the_trainer_did(tiny, tiny_dir):
    """A reply text is scored as the reward trainer's row (prompt ids + reply ids + EOS): the head is read at
    EOS, the position it was trained at (without EOS a held-out evaluation scores another position)."""
    from rlcustom.models.forward import position_ids
    from rlcustom.models.heads import RewardModel
    from rlcustom.trainers.offline import encode_pairs

    _, tok = tiny
    rm = RewardModel.from_pretrained(str(tiny_dir))
    prompts, replies = ["Hello there, how", "Hi"], [" are you?", " friend and foe"]
    b = encode_pairs(tok, prompts, replies, 64, 64).padded(tok.pad_token_id)
    with torch.no_grad():
        want = rm(b["input_ids"], b["attention_mask"], position_ids(b["attention_mask"]))
    got = rm.score_texts(prompts, replies, tokenizer=tok)
    assert got == pytest.approx(want.tolist(), abs=1e-5)
    assert rm.score_texts(prompts, replies, tokenizer=tok, append_eos=False) != pytest.approx(want.tolist(), abs=1e-5)


def test_loglik_reward_is_mean_token_logprob(tiny, tiny_dir, rollouts):
    from rlcustom.actors.reward import RewardActor

    model, _ = tiny
    actor = RewardActor("loglik", model_path=str(tiny_dir), micro_batch_size=3)
    scores = actor.score(rollouts)
    for i, (p, r) in enumerate(zip(rollouts.prompt_ids, rollouts.response_ids)):
        assert scores[i] == pytest.approx(float(_row_logprobs(model, p, r).mean()), abs=1e-4)


def test_python_reward_actor_decodes_and_names_failures(tiny, tiny_dir, rollouts):
    from rlcustom.actors.reward import RewardActor
    from rlcustom.rewards import RewardFunctionError, RewardSpecError

    _, tok = tiny
    # as a trainer builds it: HTTP options it passes to every kind are accepted and ignored
    a = RewardActor("count_token", kwargs={"token_id": 2}, tokenizer_path=str(tiny_dir), timeout_s=30.0,
                    max_retries=3, api_key_env=None)
    assert a.score(rollouts) == [1.0, 0.0, 0.0, 0.0]
    bare = Rollouts(rollouts.prompt_ids, rollouts.response_ids, rollouts.logprobs, rollouts.finish_reasons,
                    rollouts.prompt_index)  # no texts: decoded with tokenizer_path
    w = RewardActor("length_words", tokenizer_path=str(tiny_dir))
    assert w.score(bare) == [float(len(t.split())) for t in rollouts.texts]
    assert w.texts(bare)[0][0] == tok.decode(rollouts.prompt_ids[0])
    with pytest.raises(ValueError, match="no tokenizer_path"):
        RewardActor("length_words").score(bare)
    from rlcustom.registry import REWARDS

    REWARDS.register("_test_fails_on_short", override=True)(_fails_on_short)
    bad = RewardActor("_test_fails_on_short", tokenizer_path=str(tiny_dir))
    with pytest.raises(RewardFunctionError,
                       match=r"reward '_test_fails_on_short' failed on sample 3: ValueError: too short"):
        bad.score(rollouts)
    with pytest.raises(RewardSpecError, match="nope_reward"):
        RewardActor("nope_reward")
    with pytest.raises(TypeError, match="bogus"):
        RewardActor("length_tokens", bogus=1)


def _fails_on_short(prompt, completion, *, response_ids):
    if len(response_ids) < 2:
        raise ValueError("too short")
    return 0.0
