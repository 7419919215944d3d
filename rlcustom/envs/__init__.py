"""Environments for multi-turn, tool-using rollouts (:mod:`rlcustom.envs.base` for the interface).

Layer: beside rewards and decoding (it imports algos, models, data, engines, rewards; nothing above).
The rollout loop is :mod:`rlcustom.engines.multiturn`; ``rollout.env`` in a run config turns it on.
"""
from rlcustom.envs import tool_env  # noqa: F401  (registers calculator, python, tools)
from rlcustom.envs.base import Environment, make_env, resolve_env
from rlcustom.envs.guard import FAILURES, GuardedEnv, Outcome
from rlcustom.envs.tool_env import ToolEnv
from rlcustom.envs.tools import TOOLS, ToolCall, ToolError, calculator, parse_tool_call, python_tool

__all__ = ["FAILURES", "TOOLS", "Environment", "GuardedEnv", "Outcome", "ToolCall", "ToolEnv", "ToolError",
           "calculator", "make_env", "parse_tool_call", "python_tool", "resolve_env"]
