"""Environments: the calculator's arithmetic (hand-computed), the tool-call format, the tool environment's
observations and rewards, and every bad-environment behaviour as a bounded failure of one call."""
from __future__ import annotations

import threading

import pytest

from rlcustom.envs import GuardedEnv, ToolCall, ToolEnv, ToolError, calculator, make_env, parse_tool_call, resolve_env
from rlcustom.errors import ConfigError


@pytest.mark.parametrize("expr, want", [
    ("12 * (3 + 4)", "84"), ("7 / 2", "3.5"), ("2 ** 10", "1024"), ("-3 + 5", "2"), ("6 / 3", "2"),
    ("17 // 5", "3"), ("17 % 5", "2"), ("1234 * 5678", "7006652"), ("0.1 + 0.2", "0.3"), ("3 \u00d7 4", "12"),
    ("2 ** -1", "0.5"), ("+(1 - 4) * 2", "-6"),
])
def test_calculator_values(expr, want):
    assert calculator(expr) == want


@pytest.mark.parametrize("expr, msg", [
    ("1 / 0", "division by zero"), ("__import__('os').system('true')", "unsupported expression (Call)"),
    ("2 ** 10 ** 10", "power too large"), ("9 ^ 2", "use ** for powers"), ("x + 1", "unsupported expression (Name)"),
    ("", "empty expression"), ("1 +", "cannot parse"), ("1e99 * 1e99", "out of range"), ("'a' * 3", "unsupported"),
    ("(-8) ** 0.5", "not a real number"), ("1" * 201, "longer than 200"), ("[1, 2]", "unsupported expression (List)"),
])
def test_calculator_refuses_what_is_not_bounded_arithmetic(expr, msg):
    with pytest.raises(ToolError, match=msg.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        calculator(expr)


def test_tool_call_format():
    assert parse_tool_call("plain answer 5") is None
    assert parse_tool_call("so <tool>calculator</tool>\n <input> 2+3 </input> then") == ToolCall("calculator", "2+3")
    first = parse_tool_call("<tool>a</tool><input>1</input><tool>b</tool><input>2</input>")
    assert first == ToolCall("a", "1")  # the first call of a turn is run
    with pytest.raises(ToolError, match="without </tool>"):
        parse_tool_call("<tool>calculator <input>1</input>")
    with pytest.raises(ToolError, match="must be followed by <input>"):
        parse_tool_call("<tool>calculator</tool> 2+3")
    with pytest.raises(ToolError, match="empty tool name"):
        parse_tool_call("<tool> </tool><input>1</input>")


def test_tool_env_results_errors_and_final_answer():
    env = make_env("calculator")
    assert env.reset({"answer": "84", "other": 1}) == ""
    assert env.step("<tool>calculator</tool><input>12*(3+4)</input>") == (
        "<result>84</result>", 0.0, False, {"tool_calls": 1.0, "tool_errors": 0.0})
    obs, r, done, info = env.step("<tool>calculator</tool>2+2")  # malformed: an error observation, no crash
    assert obs.startswith("<error>malformed tool call") and (r, done, info["tool_errors"]) == (0.0, False, 1.0)
    obs, _, _, info = env.step("<tool>python</tool><input>print(1)</input>")  # not among this env's tools
    assert obs == "<error>unknown tool 'python' (available: calculator)</error>" and info["tool_errors"] == 1.0
    assert env.step("The answer is 84.")[1:3] == (1.0, True)
    assert env.step("The answer is 85.")[1:3] == (0.0, True)
    env.reset({})  # no answer column: a final answer scores 0
    assert env.step("84")[1:3] == (0.0, True)


def test_python_tool_runs_in_the_sandbox():
    env = make_env("python", {"python_timeout_s": 2.0})
    env.reset({})
    assert env.step("<tool>python</tool><input>print(sum(range(10)))</input>")[0] == "<result>45</result>"
    obs = env.step("<tool>python</tool><input>raise ValueError('boom')</input>")[0]
    assert obs.startswith("<error>python: error") and "ValueError: boom" in obs


def test_env_specs_resolve_or_fail_in_one_line():
    assert resolve_env("tools") is ToolEnv
    with pytest.raises(ConfigError, match="did you mean 'calculator'"):
        resolve_env("calculater")
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module_xyz'"):
        resolve_env("no_such_module_xyz:Env")
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        resolve_env("rlcustom.envs.tool_env:Nope")
    assert resolve_env("rlcustom.envs.tool_env:ToolEnv") is ToolEnv
    with pytest.raises(ValueError, match="unknown tool"):
        ToolEnv(tools=("calculator", "shell"))


# -- the guard: each bad behaviour ends the call with a reason -------------------------------------------------
class Scripted:
    """An environment whose step returns (or raises) what it is given."""

    def __init__(self, value=None, exc=None, reset_value=""):
        self.value, self.exc, self.reset_value, self.calls = value, exc, reset_value, 0

    def reset(self, row):
        return self.reset_value

    def step(self, action):
        self.calls += 1
        if self.exc is not None:
            raise self.exc
        return self.value


@pytest.mark.parametrize("env, reason, msg", [
    (Scripted(exc=RuntimeError("boom")), "env_error", "RuntimeError: boom"),
    (Scripted(exc=SystemExit(3)), "env_error", "SystemExit: 3"),
    (Scripted(value=("obs", 1.0)), "env_bad_type", "expected (observation, reward, done[, info])"),
    (Scripted(value=["obs", 1.0, True]), "env_bad_type", "step returned list"),
    (Scripted(value=(3, 1.0, True)), "env_bad_type", "int observation"),
    (Scripted(value=("obs", "1", True)), "env_bad_type", "str reward"),
    (Scripted(value=("obs", True, True)), "env_bad_type", "bool reward"),
    (Scripted(value=("obs", 1.0, 1)), "env_bad_type", "int done flag"),
    (Scripted(value=("obs", 1.0, True, {"k": "v"})), "env_bad_type", "info must map str to numbers"),
    (Scripted(value=("obs", float("nan"), True)), "env_bad_reward", "reward nan"),
    (Scripted(value=("x" * 101, 0.0, False)), "env_observation_too_long", "101 characters"),
])
def test_bad_step_is_a_failure_and_the_env_is_not_called_again(env, reason, msg):
    g = GuardedEnv(env, timeout_s=5.0, max_observation_chars=100)
    assert g.reset({}).result().failure is None
    out = g.step("a").result()
    assert out.failure == reason and msg in out.message
    assert g.step("a").result().failure == reason and env.calls == 1  # dead: never called again


def test_bad_reset_and_a_missing_method():
    assert GuardedEnv(Scripted(reset_value=["x"])).reset({}).result().failure == "env_bad_type"
    assert GuardedEnv(Scripted(reset_value=None)).reset({}).result().observation == ""  # None is no text
    out = GuardedEnv(object()).reset({}).result()
    assert out.failure == "env_bad_type" and "has no reset()" in out.message


def test_a_hanging_call_times_out_and_is_abandoned():
    release = threading.Event()

    class Hangs(Scripted):
        def step(self, action):
            release.wait()  # until the test ends: a call that never returns by itself
            return "late", 1.0, True

    g = GuardedEnv(Hangs(), timeout_s=0.2)
    out = g.step("a").result()
    assert out.failure == "env_timeout" and "no answer within 0.2 s" in out.message
    assert g.step("a").result().failure == "env_timeout"
    release.set()


def test_async_methods_and_good_steps():
    class Async:
        async def reset(self, row):
            return f"row {row['k']}"

        async def step(self, action):
            return action.upper(), 0.5, False, {"tool_calls": 1}

    g = GuardedEnv(Async())
    assert g.reset({"k": 7}).result().observation == "row 7"
    out = g.step("hi").result()
    assert (out.observation, out.reward, out.done, out.info, out.failure) == ("HI", 0.5, False, {"tool_calls": 1.0},
                                                                              None)
