"""``algo.objective``: which loss, advantage estimator, aggregation and batch filters a step uses.

=============  ==============================================================================
objective      what it sets (paper defaults; override with ``algo.objective_kwargs.KEY=...``)
=============  ==============================================================================
ppo            PPO clip (Schulman et al. 2017), ``algo.advantage``, ``algo.agg`` (ppo's default)
reinforce      -A log pi, token mean (pg's default)
dapo           clip 0.2/0.28, token-level loss, ``grpo`` advantages, dynamic sampling, overlong penalty
gspo           sequence-level ratio clipped at 3e-4/4e-4, ``grpo`` advantages, sequence mean
dr_grpo        ``grpo`` advantages without std scaling, loss summed / (G * max_new_tokens)
reinforce_pp   ``reinforce_pp`` advantages (returns whitened over the batch), PPO clip, token mean
dual_clip      PPO clip with the dual bound ``c = 3`` for negative advantages, ``algo.advantage``
=============  ==============================================================================

Keys of ``objective_kwargs``: ``clip_eps``, ``clip_eps_high``, ``dual_clip_c``, ``dynamic_sampling``
(bool), ``max_resample_rounds`` (extra generations per step, default 2), ``overlong_buffer`` (tokens,
0 = off), ``overlong_penalty`` (factor). The math is in :mod:`rlcustom.algos.policy_objectives`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import rlcustom.algos.policy_objectives  # noqa: F401  (registers "reinforce_pp"; objectives: rlcustom.objectives)
from rlcustom.errors import ConfigError

__all__ = ["ObjectivePlan", "plan_objective", "OBJECTIVE_NAMES"]

OBJECTIVE_NAMES = ("ppo", "reinforce", "dapo", "gspo", "dr_grpo", "reinforce_pp", "dual_clip")
KWARGS = ("clip_eps", "clip_eps_high", "dual_clip_c", "dynamic_sampling", "max_resample_rounds", "overlong_buffer",
          "overlong_penalty")


@dataclass(frozen=True)
class ObjectivePlan:
    name: str
    loss: str  # a learner objective (rlcustom.registry.OBJECTIVES)
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    weighting: str | None = None  # how micro-batches weigh (None: the objective's own)
    advantage: str | None = None  # None: algo.advantage
    adv_kwargs: dict[str, Any] = field(default_factory=dict)
    dynamic_sampling: bool = False
    max_resample_rounds: int = 2
    overlong_buffer: int = 0
    overlong_penalty: float = 1.0


def plan_objective(name: str, overrides: Mapping[str, Any] | None, *, clip_eps: float, agg: str,
                   max_new_tokens: int) -> ObjectivePlan:
    """The plan for ``algo.objective=name``; unknown names or keys are a one-line :class:`ConfigError`."""
    if name not in OBJECTIVE_NAMES:
        import difflib

        close = difflib.get_close_matches(name, OBJECTIVE_NAMES, n=1)
        raise ConfigError(f"algo.objective: unknown objective {name!r}" + (f"; did you mean {close[0]!r}?" if close
                          else "") + f" (known: {', '.join(OBJECTIVE_NAMES)})")
    kw = dict(overrides or {})
    bad = sorted(set(kw) - set(KWARGS))
    if bad:
        raise ConfigError(f"algo.objective_kwargs.{bad[0]}: unknown key for objective {name!r} "
                          f"(known: {', '.join(KWARGS)})")
    dapo = name == "dapo"
    common: dict[str, Any] = {
        "dynamic_sampling": bool(kw.get("dynamic_sampling", dapo)),
        "max_resample_rounds": int(kw.get("max_resample_rounds", 2)),
        "overlong_buffer": int(kw.get("overlong_buffer", max(1, max_new_tokens // 5) if dapo else 0)),
        "overlong_penalty": float(kw.get("overlong_penalty", 1.0)),
    }
    if common["overlong_buffer"] < 0 or common["overlong_buffer"] > max_new_tokens:
        raise ConfigError(f"algo.objective_kwargs.overlong_buffer: must be in [0, sampling.max_new_tokens="
                          f"{max_new_tokens}], got {common['overlong_buffer']}")
    if common["max_resample_rounds"] < 0:
        raise ConfigError("algo.objective_kwargs.max_resample_rounds: must be >= 0")
    eps = float(kw.get("clip_eps", clip_eps))
    high = kw.get("clip_eps_high")
    if name == "reinforce":
        return ObjectivePlan(name, "reinforce", **common)
    if name in ("ppo", "reinforce_pp"):
        lk = {"clip_eps": eps, "agg": agg if name == "ppo" else "token"}
        if high is not None:
            lk["clip_eps_high"] = float(high)
        return ObjectivePlan(name, "ppo_clip", lk, advantage="reinforce_pp" if name == "reinforce_pp" else None,
                             **common)
    if name == "gspo":
        lk = {"clip_eps": float(kw.get("clip_eps", 3e-4)), "clip_eps_high": float(high if high is not None else 4e-4)}
        return ObjectivePlan(name, "gspo", lk, weighting="rows", advantage="grpo", **common)
    lk = {"clip_eps": eps, "clip_eps_high": float(high) if high is not None else (0.28 if dapo else None),
          "agg": "token" if dapo else agg}
    if name == "dual_clip":
        lk["dual_clip_c"] = float(kw.get("dual_clip_c", 3.0))
        if lk["dual_clip_c"] <= 1:
            raise ConfigError(f"algo.objective_kwargs.dual_clip_c: must be > 1, got {lk['dual_clip_c']}")
        return ObjectivePlan(name, "policy_clip", lk, weighting="rows" if agg != "token" else None, **common)
    if name == "dr_grpo":
        lk |= {"agg": "const", "max_len": int(max_new_tokens)}
        return ObjectivePlan(name, "policy_clip", lk, weighting="rows", advantage="grpo", adv_kwargs={"scale": False},
                             **common)
    return ObjectivePlan(name, "policy_clip", lk, advantage="grpo", **common)  # dapo


def shape_scores(plan: ObjectivePlan, scores, ro, max_new_tokens: int):
    """Scores plus DAPO's overlong penalty (when the plan has a buffer)."""
    if not plan.overlong_buffer:
        return scores
    import torch

    from rlcustom.algos.policy_objectives import overlong_penalty

    lengths = torch.tensor(ro.response_lengths(), dtype=torch.float32)
    return scores + overlong_penalty(lengths, max_new_tokens, plan.overlong_buffer, plan.overlong_penalty)
