"""Metrics and log lines of a step's episodes (``Rollouts.episodes``, one record per sample)."""
from __future__ import annotations

from typing import Any

__all__ = ["episode_metrics", "failure_lines"]

TRUNCATIONS = ("max_turns", "max_tokens", "wall_time")


def episode_metrics(ro: Any) -> dict[str, float]:
    """Means over the step's episodes: ``env/turns``, ``env/return``, ``env/turn_reward``, ``env/<counter>``
    (the environment's info counters, e.g. ``env/tool_calls``, ``env/tool_errors``), ``env/observation_tokens``;
    fractions: ``env/truncated`` (ended by a budget), ``env/failed`` and ``env/fail/<reason>``."""
    eps = [e for e in ro.episodes if e]
    if not eps:
        return {}
    n = len(eps)
    out = {"env/turns": sum(e["turns"] for e in eps) / n, "env/return": sum(e["return"] for e in eps) / n,
           "env/observation_tokens": sum(e["observation_tokens"] for e in eps) / n,
           "env/truncated": sum(e["end"] in TRUNCATIONS for e in eps) / n,
           "env/failed": sum(e["failure"] is not None for e in eps) / n}
    turn_rewards = [r for e in eps for r in e["turn_rewards"]]
    if turn_rewards:
        out["env/turn_reward"] = sum(turn_rewards) / len(turn_rewards)
    for k in sorted({k for e in eps for k in e["counts"]}):
        out[f"env/{k}"] = sum(e["counts"].get(k, 0.0) for e in eps) / n
    for reason in sorted({e["failure"] for e in eps if e["failure"]}):
        out[f"env/fail/{reason}"] = sum(e["failure"] == reason for e in eps) / n
    return out


def failure_lines(ro: Any, limit: int) -> list[str]:
    """One line per failed episode (the first ``limit``), and a count of the rest."""
    bad = [(i, e) for i, e in enumerate(ro.episodes) if e and e.get("failure")]
    lines = [f"episode {i} failed after {e['turns']} turn(s): {e['failure']}: {e['message']}" for i, e in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"{len(bad) - limit} more episode(s) failed")
    return lines
