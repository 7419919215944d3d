"""Multi-turn episodes on the hf engine with the tiny model (no Ray): the token ids trained on are the ids
sampled across 3 turns, observation tokens are the chat template's delta with loss mask 0, the learner's
log-probs of the episode equal the behaviour log-probs, tools and budgets, and bad environments each cost
only their own episode."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from rlcustom.engines.base import Rollouts, SamplingParams
from rlcustom.engines.hf import HFEngine
from rlcustom.engines.markup import TurnMarkup
from rlcustom.engines.multiturn import EpisodeBudget, run_episodes
from rlcustom.envs import GuardedEnv, make_env
from rlcustom.envs.metrics import episode_metrics
from rlcustom.models.forward import response_logprobs
from rlcustom.models.tiny import tiny_llama


class Countdown:
    """Three turns: observation ``observation t``, reward t, done after the third step."""

    def __init__(self, turns: int = 3) -> None:
        self.turns, self.t = turns, 0

    def reset(self, row):
        self.t = 0
        return ""

    def step(self, action):
        self.t += 1
        return f"observation {self.t}", float(self.t), self.t >= self.turns


@pytest.fixture(scope="module")
def engine():
    model, tok = tiny_llama(seed=0, eos_logit=10.0)  # stops sometimes: turns end by EOS and by length
    return HFEngine(model, tok)


def prompts_of(tok, qs):
    return [tok(tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True),
                add_special_tokens=False)["input_ids"] for q in qs]


def recording(engine):
    calls: list[tuple[list[list[int]], Rollouts]] = []

    def gen(contexts, params):
        ro = engine.generate(contexts, params)
        calls.append(([list(c) for c in contexts], ro))
        return ro

    return gen, calls


def episodes(engine, gen, envs, prompts, budget=None, n=1, max_new=8):
    tok = engine.tokenizer
    return run_episodes(gen, tok, prompts, [{} for _ in prompts], [GuardedEnv(e, timeout_s=5.0) for e in envs],
                        SamplingParams(max_new_tokens=max_new, n=n, seed=3), budget or EpisodeBudget(max_turns=6),
                        TurnMarkup(tok), engine.eos_ids)


def test_trained_ids_are_the_sampled_ids_across_three_turns(engine):
    tok = engine.tokenizer
    prompts = prompts_of(tok, ["Count down.", "What is 2+2?"])
    gen, calls = recording(engine)
    ro = episodes(engine, gen, [Countdown() for _ in range(4)], prompts, n=2, max_new=16)
    assert len(calls) == 3 and len(ro) == 4 and ro.prompt_index == [0, 0, 1, 1]
    closed_seen = set()
    for j in range(4):
        want_ids, want_mask, want_lps = [], [], []
        for k, (contexts, turn) in enumerate(calls):
            # the context of turn k is the prompt plus every earlier token exactly as it was: nothing re-tokenised
            assert contexts[j] == prompts[j // 2] + want_ids
            sampled = turn.response_ids[j]
            want_ids += sampled
            want_mask += [1] * len(sampled)
            want_lps += turn.logprobs[j]
            if k < 2:  # the observation turn after model turns 1 and 2, in the template's markup (hand-written)
                closed = sampled[-1] == tok.eos_token_id
                closed_seen.add(closed)
                text = ("\n" if closed else "<|im_end|>\n") + f"<|im_start|>user\nobservation {k + 1}<|im_end|>\n" \
                    "<|im_start|>assistant\n"
                obs = tok(text, add_special_tokens=False)["input_ids"]
                want_ids += obs
                want_mask += [0] * len(obs)
                want_lps += [0.0] * len(obs)
        assert ro.response_ids[j] == want_ids and ro.loss_mask[j] == want_mask and ro.logprobs[j] == want_lps
        e = ro.episodes[j]
        assert (e["turns"], e["end"], e["turn_rewards"], e["return"]) == (3, "done", [1.0, 2.0, 3.0], 6.0)
        assert e["observation_tokens"] == want_mask.count(0) > 0
    assert closed_seen == {True, False}  # both markup paths: a turn that sampled <|im_end|> and one cut by length

    batch = ro.padded(engine.pad_id)
    T = batch["response_mask"].shape[1]
    for j in range(4):
        m = torch.tensor(ro.loss_mask[j] + [0] * (T - len(ro.loss_mask[j])), dtype=torch.float32)
        assert torch.equal(batch["response_mask"][j], m)  # observation tokens: loss mask 0
    with torch.no_grad():  # what a learner computes for the trained tokens is the behaviour log-prob
        lp = response_logprobs(engine.model, batch)
    mask = batch["response_mask"].bool()
    # fp32 KV-cache sampling vs one full forward: ~1e-6 on most tokens, up to ~1e-4 on the EOS token, whose tied
    # embedding this model scales up (eos_logit); a shifted or re-tokenised context moves log-probs by > 0.1
    assert float((lp[mask] - batch["logprobs"][mask]).abs().max()) < 1e-3


def scripted(tok, script):
    """A stand-in policy: turn k of episode j says ``script[j][k]`` (token ids of that text, log-prob 0)."""
    turn = [0]

    def gen(contexts, params):
        ids = [tok(script[j][turn[0]], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
               for j in range(len(contexts))]
        turn[0] += 1
        return Rollouts([list(c) for c in contexts], ids, [[0.0] * len(i) for i in ids], ["stop"] * len(ids),
                        list(range(len(ids))))

    return gen


def test_calculator_episode_results_errors_and_answer(engine):
    tok = engine.tokenizer
    script = [["<tool>calculator</tool><input>1234*5678</input>", "<tool>calculator<input>2+2</input>",
               "The answer is 7006652."],
              ["<tool>python</tool><input>print(1)</input>", "It is 7006651.", "unused"]]
    envs = [make_env("calculator"), make_env("calculator")]
    ro = run_episodes(scripted(tok, script), tok, prompts_of(tok, ["1234*5678?", "1234*5678?"]),
                      [{"answer": "7006652"}, {"answer": "7006652"}], [GuardedEnv(e) for e in envs],
                      SamplingParams(max_new_tokens=32, seed=0), EpisodeBudget(max_turns=4), TurnMarkup(tok),
                      engine.eos_ids)
    text0 = tok.decode(ro.response_ids[0])
    assert "<|im_start|>user\n<result>7006652</result><|im_end|>" in text0
    assert "<|im_start|>user\n<error>malformed tool call: <tool> without </tool></error><|im_end|>" in text0
    assert "unknown tool 'python'" in tok.decode(ro.response_ids[1])
    a, b = ro.episodes
    assert (a["return"], a["turns"], a["counts"]) == (1.0, 3, {"tool_calls": 2.0, "tool_errors": 1.0})
    assert (b["return"], b["turns"], b["counts"]) == (0.0, 2, {"tool_calls": 1.0, "tool_errors": 1.0})
    m = episode_metrics(ro)
    assert m["env/turns"] == 2.5 and m["env/tool_calls"] == 1.5 and m["env/tool_errors"] == 1.0
    assert m["env/return"] == 0.5 and m["env/truncated"] == 0.0 and m["env/failed"] == 0.0


class Forever(Countdown):
    def step(self, action):
        return super().step(action)[:2] + (False,)


def test_budgets_end_episodes(engine):
    tok = engine.tokenizer
    p = prompts_of(tok, ["Go on."])
    gen, _ = recording(engine)
    ro = episodes(engine, gen, [Forever()], p, EpisodeBudget(max_turns=2))
    assert (ro.episodes[0]["end"], ro.episodes[0]["turns"], ro.finish_reasons) == ("max_turns", 2, ["length"])
    ro = episodes(engine, gen, [Forever()], p, EpisodeBudget(max_turns=50, max_tokens=40))
    assert ro.episodes[0]["end"] == "max_tokens" and len(ro.response_ids[0]) <= 40

    class SlowReset(Forever):
        def reset(self, row):
            time.sleep(0.01)
            return ""

    ro = episodes(engine, gen, [SlowReset()], p, EpisodeBudget(max_turns=50, wall_s=1e-6))
    assert (ro.episodes[0]["end"], ro.episodes[0]["turns"]) == ("wall_time", 0)
    assert episode_metrics(ro)["env/truncated"] == 1.0


def test_bad_environments_each_cost_only_their_episode(engine):
    tok = engine.tokenizer
    release = threading.Event()

    class Raises(Countdown):
        def step(self, action):
            if self.t == 1:
                raise RuntimeError("tool backend down")
            return super().step(action)

    class Hangs(Countdown):
        def step(self, action):
            release.wait()
            return super().step(action)

    class WrongTypes(Countdown):
        def step(self, action):
            return {"observation": "x"}

    class Giant(Countdown):
        def step(self, action):
            return "y" * 100_000, 0.0, False

    envs = [Countdown(), Raises(), Hangs(), WrongTypes(), Giant()]
    ro = run_episodes(recording(engine)[0], tok, prompts_of(tok, ["q"] * 5), [{}] * 5,
                      [GuardedEnv(e, timeout_s=0.5, max_observation_chars=4096) for e in envs],
                      SamplingParams(max_new_tokens=6, seed=1), EpisodeBudget(max_turns=4, failure_reward=-1.0),
                      TurnMarkup(tok), engine.eos_ids)
    release.set()
    good, *bad = ro.episodes
    assert (good["end"], good["return"], good["turns"]) == ("done", 6.0, 3)
    assert [(e["failure"], e["turns"], e["return"]) for e in bad] == [
        ("env_error", 2, -1.0), ("env_timeout", 1, -1.0), ("env_bad_type", 1, -1.0),
        ("env_observation_too_long", 1, -1.0)]
    assert "RuntimeError: tool backend down" in bad[0]["message"]
    batch = ro.padded(engine.pad_id)
    assert batch["response_mask"][0].sum() > 0 and batch["response_mask"][1:].sum() == 0  # failures train nothing
    m = episode_metrics(ro)
    assert m["env/failed"] == 0.8 and m["env/fail/env_timeout"] == 0.2


class RaisesOnStep(Countdown):
    def step(self, action):
        raise RuntimeError("tool backend down")


class RightAway(Countdown):
    """The first turn ends the episode with reward row['k']."""

    def reset(self, row):
        self.k = float(row["k"])
        return ""

    def step(self, action):
        return "", self.k, True


def test_env_episodes_log_the_first_failures_and_count_all(engine, capsys):
    from types import SimpleNamespace

    from rlcustom.envs.rollout import env_episodes

    rc = SimpleNamespace(env=f"{__name__}:RaisesOnStep", env_kwargs={}, env_timeout_s=5.0, max_observation_chars=100,
                         log_failures=2, max_turns=3, max_tokens=64, wall_s=60.0, failure_reward=-1.0,
                         observation_role="user")
    tok = engine.tokenizer
    ro = env_episodes(engine.generate, tok, engine.eos_ids, prompts_of(tok, ["a", "b"]), None,
                      SamplingParams(max_new_tokens=4, n=2, seed=0), rc, who="eval")
    assert [e["failure"] for e in ro.episodes] == ["env_error"] * 4 and {e["return"] for e in ro.episodes} == {-1.0}
    logged = [ln for ln in capsys.readouterr().err.splitlines() if "failed after" in ln]
    assert len(logged) == 2 and "[rlcustom] eval: episode 0 failed after 1 turn(s): env_error: RuntimeError" in logged[0]


def test_heldout_accuracy_runs_greedy_episodes_with_the_env(tiny_dir, tmp_path):
    import json

    from rlcustom.config import load_config
    from rlcustom.eval.heldout import heldout_accuracy

    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}", "k": i % 2}) + "\n" for i in range(8)))
    cfg = load_config(None, ["trainer=pg", f"model.path={tiny_dir}", f"data.prompts={data}", "data.val_fraction=1.0",
                             f"rollout.env={__name__}:RightAway", "sampling.max_new_tokens=4"])
    r = heldout_accuracy(cfg, str(tiny_dir))
    assert (r["n"], r["accuracy"], r["failed"]) == (8, 0.5, 0) and r["se"] == pytest.approx(0.5 / 8 ** 0.5)
    assert r["env"]["turns"] == 1.0 and [s for _, _, s in r["samples"]] == [float(i % 2) for i in range(8)]


def test_sft_traces_are_token_identical_to_the_episode_they_teach(engine):
    """The second trace record's chat-formatted context is the episode's own token stream: the prompt, the
    call as sampled with its end-of-turn token, and the observation delta the rollout loop appends."""
    from rlcustom.data.chat import format_prompt
    from rlcustom.data.loaders import load_sft

    tok = engine.tokenizer
    rows = load_sft("task:arithmetic?digits=3&terms=2&ops=*&n=3&seed=1&format=calculator&trace=calculator",
                    split="all")
    eos = set(engine.eos_ids)
    for call, answer in zip(rows.select(range(0, 6, 2)), rows.select(range(1, 6, 2))):
        prompt = tok(format_prompt(tok, call["messages"]), add_special_tokens=False)["input_ids"]
        sampled = tok(call["completion"], add_special_tokens=False)["input_ids"] + [engine.eos_ids[0]]
        obs = TurnMarkup(tok).ids(answer["messages"][2]["content"], sampled[-1], eos)
        assert tok(format_prompt(tok, answer["messages"]), add_special_tokens=False)["input_ids"] == prompt + sampled + obs
