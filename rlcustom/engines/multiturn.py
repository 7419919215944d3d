"""Token-in-token-out multi-turn episodes: model turns alternate with environment observations.

Each episode keeps one growing list of token ids. A model turn is sampled by the engine from that
list (``generate(contexts, params)`` with token-id prompts, so the ``hf`` and ``vllm`` engines both
serve it) and its sampled ids are appended *as they are*: nothing that came before is ever
re-tokenised, so the ids a learner trains on are the ids that were sampled and the behaviour
log-probs belong to them. An observation is appended as a token delta of the chat template's turn
markup (:class:`~rlcustom.engines.markup.TurnMarkup`) with loss mask 0 and log-prob 0 (placeholders
under the mask). The episode's record holds the per-turn rewards and their sum, the return
:math:`R = \\sum_t r_t` (the sequence score the trainer uses), and why it ended.

Budgets per episode: ``max_turns`` model turns, ``max_tokens`` response tokens (model plus
observation tokens), ``wall_s`` seconds for the episodes of one call. An environment call that fails
(see :mod:`rlcustom.envs.guard`) ends that episode only: its tokens get loss mask 0 (it trains on
nothing) and its return is ``failure_reward``.

The environments are duck-typed: ``env.reset(row)`` and ``env.step(text)`` return a pending call
whose ``result()`` has ``observation``, ``reward``, ``done``, ``info`` (counters), ``failure`` (None
or a reason) and ``message``, as :class:`rlcustom.envs.guard.GuardedEnv` does.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from rlcustom.engines.base import Rollouts, SamplingParams
from rlcustom.engines.markup import TurnMarkup

__all__ = ["EpisodeBudget", "Episode", "run_episodes"]

Generate = Callable[[list[list[int]], SamplingParams], Rollouts]


@dataclass(frozen=True)
class EpisodeBudget:
    max_turns: int = 4  # model turns per episode
    max_tokens: int = 512  # response tokens per episode, model and observation tokens together
    wall_s: float = 120.0  # seconds for all episodes of one call (checked before each model turn)
    failure_reward: float = 0.0  # the return of an episode whose environment failed


@dataclass
class Episode:
    """One episode's token stream and record."""

    prompt_ids: list[int]
    env: Any
    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turn_rewards: list[float] = field(default_factory=list)
    counts: dict[str, float] = field(default_factory=dict)
    turns: int = 0
    turn_start: int = 0  # where the current model turn begins in ``ids``
    end: str | None = None  # done | max_turns | max_tokens | wall_time | the environment's failure reason
    failure: str | None = None
    message: str = ""

    def append(self, ids: Sequence[int], lps: Sequence[float] | None) -> None:
        """Sampled ids (with their log-probs, loss mask 1) or observation ids (``lps`` None, loss mask 0)."""
        self.ids += list(ids)
        self.mask += [1 if lps is not None else 0] * len(ids)
        self.logprobs += list(lps) if lps is not None else [0.0] * len(ids)

    def fail(self, outcome: Any) -> None:
        self.end = self.failure = outcome.failure
        self.message = outcome.message
        self.mask = [0] * len(self.ids)  # a failed episode trains on nothing

    def record(self, budget: EpisodeBudget) -> dict:
        ret = budget.failure_reward if self.failure else float(sum(self.turn_rewards))
        return {"return": ret, "turn_rewards": list(self.turn_rewards), "turns": self.turns, "end": self.end,
                "failure": self.failure, "message": self.message, "counts": dict(self.counts),
                "observation_tokens": self.mask.count(0) if not self.failure else 0}


def _count(ep: Episode, info: dict) -> None:
    for k, v in info.items():
        ep.counts[k] = ep.counts.get(k, 0.0) + float(v)


def run_episodes(generate: Generate, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], rows: Sequence[dict],
                 envs: Sequence[Any], params: SamplingParams, budget: EpisodeBudget, markup: TurnMarkup,
                 eos_ids: Sequence[int], on_failure: Callable[[int, Episode], None] | None = None) -> Rollouts:
    """``params.n`` episodes per prompt (``envs`` has one environment per episode, episode ``k`` of
    prompt ``i`` at ``i * n + k``); each model turn samples at most ``params.max_new_tokens``."""
    n, start = params.n, time.monotonic()
    eos = set(int(e) for e in eos_ids)
    if len(envs) != len(prompt_ids) * n:
        raise ValueError(f"run_episodes: {len(envs)} environments for {len(prompt_ids)} prompts x n={n}")
    eps = [Episode(list(map(int, prompt_ids[i])), envs[i * n + k]) for i in range(len(prompt_ids)) for k in range(n)]
    row_of = [i for i in range(len(prompt_ids)) for _ in range(n)]

    def failed(j: int, ep: Episode, outcome: Any) -> None:
        ep.fail(outcome)
        if on_failure is not None:
            on_failure(j, ep)

    pending = [(ep, ep.env.reset(rows[row_of[j]])) for j, ep in enumerate(eps)]  # concurrent calls
    for j, (ep, call) in enumerate(pending):
        out = call.result()
        if out.failure:
            failed(j, ep, out)
        elif out.observation:  # text the environment puts before the first turn: context, not trained
            ep.prompt_ids += list(tokenizer(out.observation, add_special_tokens=False)["input_ids"])
    turn = 0
    while True:
        active = [j for j, ep in enumerate(eps) if ep.end is None]
        if not active:
            break
        if time.monotonic() - start > budget.wall_s:
            for j in active:
                eps[j].end = "wall_time"
            break
        groups: dict[int, list[int]] = {}  # episodes with the same token allowance share one engine call
        for j in active:
            room = budget.max_tokens - len(eps[j].ids)
            groups.setdefault(min(params.max_new_tokens, room), []).append(j)
        for room, js in groups.items():
            sub = params.with_(n=1, max_new_tokens=room, seed=None if params.seed is None
                               else params.seed + 1_000_003 * turn)
            ro = generate([eps[j].prompt_ids + eps[j].ids for j in js], sub)
            for j, ids, lps in zip(js, ro.response_ids, ro.logprobs):
                eps[j].append(ids, lps)
                eps[j].turns += 1
        turn += 1
        calls = [(j, eps[j].env.step(tokenizer.decode(eps[j].ids[eps[j].turn_start:], skip_special_tokens=True)))
                 for j in active]
        for j, call in calls:
            ep, out = eps[j], call.result()
            if out.failure:
                failed(j, ep, out)
                continue
            ep.turn_rewards.append(out.reward)
            _count(ep, out.info)
            if out.done:
                ep.end = "done"
            elif ep.turns >= budget.max_turns:
                ep.end = "max_turns"
            elif len(ep.ids) >= budget.max_tokens:
                ep.end = "max_tokens"
            else:
                obs = markup.ids(out.observation, ep.ids[-1] if ep.ids else None, eos)
                if len(ep.ids) + len(obs) >= budget.max_tokens:  # no room for the observation and a reply
                    ep.end = "max_tokens"
                else:
                    ep.append(obs, None)
                    ep.turn_start = len(ep.ids)
    return _to_rollouts(tokenizer, eps, row_of, budget)


def _to_rollouts(tokenizer: Any, eps: list[Episode], row_of: list[int], budget: EpisodeBudget) -> Rollouts:
    out = Rollouts([ep.prompt_ids for ep in eps], [ep.ids for ep in eps], [ep.logprobs for ep in eps],
                   ["stop" if ep.end == "done" or ep.failure else "length" for ep in eps], list(row_of))
    out.texts = tokenizer.batch_decode(out.response_ids, skip_special_tokens=True)
    out.loss_mask = [ep.mask for ep in eps]
    out.episodes = [ep.record(budget) for ep in eps]
    return out
