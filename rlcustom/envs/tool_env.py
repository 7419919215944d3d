"""The built-in tool-using environments: ``calculator``, ``python`` and ``tools`` (both).

Each model turn either calls a tool (the format of :mod:`rlcustom.envs.tools`), and the next
observation is its ``<result>`` or ``<error>`` (reward 0, the episode goes on), or it does not, and
that turn is the final answer: reward 1 if it matches the record's ``answer`` column
(:func:`rlcustom.rewards.verifiable.exact_match`: the last number, or ``#### N`` / ``\\boxed{}``),
else 0, and the episode ends. A row without ``answer`` scores 0. Counters: ``tool_calls``,
``tool_errors`` (malformed calls, unknown tools, failed tools).
"""
from __future__ import annotations

from typing import Any, Sequence

from rlcustom.envs.tools import TOOLS, ToolError, parse_tool_call
from rlcustom.registry import ENVIRONMENTS
from rlcustom.rewards.verifiable import exact_match

__all__ = ["ToolEnv"]


@ENVIRONMENTS.register("tools")
class ToolEnv:
    """Tools ``tools`` (names in :data:`rlcustom.envs.tools.TOOLS`); ``answer_format`` as exact_match's;
    ``python_timeout_s`` bounds one python call (keep it under ``rollout.env_timeout_s``)."""

    def __init__(self, tools: Sequence[str] = ("calculator", "python"), answer_format: str = "any",
                 python_timeout_s: float = 5.0, max_result_chars: int = 2000) -> None:
        unknown = [t for t in tools if t not in TOOLS]
        if unknown:
            raise ValueError(f"unknown tool(s) {unknown} (known: {', '.join(sorted(TOOLS))})")
        self.tools, self.answer_format = tuple(tools), answer_format
        self.python_timeout_s, self.max_result_chars = python_timeout_s, max_result_chars
        self.answer: Any = None

    def reset(self, row: dict) -> str:
        self.answer = row.get("answer")
        return ""

    def run_tool(self, name: str, arg: str) -> str:
        if name not in self.tools:
            raise ToolError(f"unknown tool {name[:40]!r} (available: {', '.join(self.tools)})")
        if name == "python":
            return TOOLS[name](arg, timeout_s=self.python_timeout_s)
        return TOOLS[name](arg)

    def step(self, action: str) -> tuple[str, float, bool, dict[str, float]]:
        try:
            call = parse_tool_call(action)
            if call is None:  # the final answer
                ok = self.answer is not None and exact_match("", action, answer=self.answer,
                                                             answer_format=self.answer_format) == 1.0
                return "", float(ok), True, {"tool_calls": 0.0, "tool_errors": 0.0}
            result = self.run_tool(call.name, call.input)[-self.max_result_chars:]
            return f"<result>{result}</result>", 0.0, False, {"tool_calls": 1.0, "tool_errors": 0.0}
        except ToolError as e:
            return f"<error>{e}</error>", 0.0, False, {"tool_calls": 1.0, "tool_errors": 1.0}


@ENVIRONMENTS.register("calculator")
def calculator_env(**kw: Any) -> ToolEnv:
    """:class:`ToolEnv` with the calculator only."""
    return ToolEnv(tools=("calculator",), **kw)


@ENVIRONMENTS.register("python")
def python_env(**kw: Any) -> ToolEnv:
    """:class:`ToolEnv` with the sandboxed Python executor only."""
    return ToolEnv(tools=("python",), **kw)
