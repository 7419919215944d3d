"""Composite rewards: a weighted sum of reward specs, each component logged as ``reward/<name>``.

In a config::

    reward:
      spec: composite
      kwargs:
        components:
          - {spec: exact_match, weight: 1.0, kwargs: {answer_format: hash}}
          - {spec: format_match, weight: 0.2, name: format}

``r = sum_k w_k r_k``. A component's ``name`` defaults to its spec; its ``kwargs`` are its own;
row fields (``answer``, ``tests``, ...) reach every component that names them.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from rlcustom.registry import REWARDS
from rlcustom.rewards.verifiable import Scored

__all__ = ["composite", "parse_components"]


def parse_components(components: Any) -> list[tuple[str, Any, float, dict]]:
    """``[(name, fn, weight, kwargs)]`` from the config's list; errors name the component."""
    from rlcustom.rewards.core import RewardSpecError, resolve_reward

    if not isinstance(components, (list, tuple)) or not components:
        raise RewardSpecError("reward 'composite': kwargs.components must be a non-empty list of "
                              "{spec, weight, kwargs, name}")
    out, names = [], set()
    for i, c in enumerate(components):
        c = {"spec": c} if isinstance(c, str) else c
        if not isinstance(c, Mapping) or "spec" not in c:
            raise RewardSpecError(f"reward 'composite': component {i} must be a mapping with 'spec', got {c!r}")
        unknown = sorted(set(c) - {"spec", "weight", "kwargs", "name"})
        if unknown:
            raise RewardSpecError(f"reward 'composite': component {i} has unknown key(s) {', '.join(unknown)}")
        if c["spec"] == "composite":
            raise RewardSpecError(f"reward 'composite': component {i} is itself composite")
        name = str(c.get("name") or c["spec"]).replace("/", "_").replace(":", "_")
        if name in names:
            raise RewardSpecError(f"reward 'composite': two components are named {name!r}; give one a 'name'")
        names.add(name)
        out.append((name, resolve_reward(c["spec"]), float(c.get("weight", 1.0)), dict(c.get("kwargs") or {})))
    return out


def _required(components: Any) -> list[str]:
    from rlcustom.rewards.signature import required_fields

    return sorted({f for _, fn, _, kw in parse_components(components) for f in required_fields(fn, kw)})


@REWARDS.register("composite")
def composite(prompt: str, completion: str, *, response_ids: Sequence[int] = (),
              components: Sequence[Mapping[str, Any]] = (), **row_fields: Any) -> float:
    """``sum_k weight_k * reward_k(prompt, completion, ...)``; the parts travel with the value."""
    from rlcustom.rewards.core import check_reward_value
    from rlcustom.rewards.signature import accepted_fields, call_kwargs

    total, parts, reason = 0.0, {}, None
    for name, fn, w, kw in parse_components(components):
        v = fn(prompt, completion, response_ids=response_ids, **call_kwargs(accepted_fields(fn), row_fields, kw))
        reason = reason or getattr(v, "reason", None)
        parts[name] = check_reward_value(v, name, 0, prompt)
        total += w * parts[name]
    return Scored(total, reason, parts)


# what the preflight column check asks of a composite: its components' required columns
composite.required_fields_for = _required
