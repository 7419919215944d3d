"""Built-in tools and the one tool-call format.

A model calls a tool by writing, anywhere in its turn::

    <tool>calculator</tool><input>12 * (3 + 4)</input>

(whitespace between the two tags is allowed; the first call of a turn is run, the rest of the turn
is ignored). The answer comes back as the next observation, ``<result>84</result>``, or
``<error>...</error>`` for an unknown tool, a malformed call (a ``<tool>`` without its closing tag
or without an ``<input>...</input>`` after it) or a tool that failed. A turn without ``<tool>`` is
not a call.

Tools: ``calculator`` (arithmetic on numbers: ``+ - * / // % **``, unary signs and parentheses,
parsed with :mod:`ast` and evaluated node by node, never ``eval``; bounded operand and result sizes)
and ``python`` (a program run by :func:`rlcustom.rewards.sandbox.run_sandboxed`: separate process,
time, memory and process limits, no network; its stdout is the result).
"""
from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass
from typing import Callable

__all__ = ["TOOLS", "ToolCall", "ToolError", "calculator", "parse_tool_call", "python_tool"]

_OPEN, _CLOSE = "<tool>", "</tool>"
_INPUT = re.compile(r"\s*<input>(.*?)</input>", re.S)


class ToolError(ValueError):
    """A malformed call or a failed tool: its message becomes an ``<error>`` observation."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    input: str


def parse_tool_call(text: str) -> ToolCall | None:
    """The first ``<tool>NAME</tool><input>...</input>`` in ``text``; None if there is no ``<tool>``;
    :class:`ToolError` for a malformed call."""
    start = text.find(_OPEN)
    if start < 0:
        return None
    end = text.find(_CLOSE, start)
    if end < 0:
        raise ToolError("malformed tool call: <tool> without </tool>")
    name = text[start + len(_OPEN):end].strip()
    if not name:
        raise ToolError("malformed tool call: empty tool name")
    m = _INPUT.match(text, end + len(_CLOSE))
    if m is None:
        raise ToolError(f"malformed tool call: <tool>{name[:40]}</tool> must be followed by <input>...</input>")
    return ToolCall(name, m.group(1).strip())


# -- calculator ----------------------------------------------------------------------------------
_BIN: dict[type, Callable] = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                              ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
                              ast.Pow: operator.pow}
_UN: dict[type, Callable] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_EXPR_CHARS = 200
MAX_ABS = 1e100  # larger operands or results are refused (no 10**10**10)
MAX_EXPONENT = 1000


def _num(x: float | int) -> float | int:
    if isinstance(x, complex):
        raise ToolError("calculator: result is not a real number")
    if abs(x) > MAX_ABS:
        raise ToolError("calculator: number out of range")
    if isinstance(x, float) and not math.isfinite(x):
        raise ToolError("calculator: result is not a finite number")
    return x


def _eval(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _num(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UN:
        return _UN[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        a, b = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and (abs(b) > MAX_EXPONENT or (abs(a) > 1 and abs(b) * math.log10(abs(a))
                                                                        > math.log10(MAX_ABS))):
            raise ToolError("calculator: power too large")
        try:
            return _num(_BIN[type(node.op)](a, b))
        except ZeroDivisionError:
            raise ToolError("calculator: division by zero") from None
        except OverflowError:
            raise ToolError("calculator: number out of range") from None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise ToolError("calculator: use ** for powers (^ is not supported)")
    raise ToolError(f"calculator: unsupported expression ({type(node).__name__}); only numbers, + - * / // % ** "
                    "and parentheses")


def calculator(expression: str) -> str:
    """The value of an arithmetic expression, as text (integral floats without ``.0``)."""
    expr = expression.strip().replace("\u00d7", "*").replace("\u00f7", "/")
    if not expr:
        raise ToolError("calculator: empty expression")
    if len(expr) > MAX_EXPR_CHARS:
        raise ToolError(f"calculator: expression longer than {MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise ToolError(f"calculator: cannot parse {expr[:60]!r}") from None
    v = _eval(tree)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e16 else f"{v:.12g}"
    return str(v)


# -- python --------------------------------------------------------------------------------------
def python_tool(code: str, *, timeout_s: float = 5.0, memory_mb: int = 512, max_output: int = 2000) -> str:
    """Run ``code`` in the sandbox; its stdout (the last ``max_output`` characters) is the result."""
    from rlcustom.rewards.sandbox import run_sandboxed

    res = run_sandboxed(code, timeout_s=timeout_s, memory_mb=memory_mb, max_output=max_output)
    if res.ok:
        return res.stdout.strip()
    last = (res.stderr.strip().splitlines() or [""])[-1][:300]
    raise ToolError(f"python: {res.reason}" + (f": {last}" if last else ""))


TOOLS: dict[str, Callable[..., str]] = {"calculator": calculator, "python": python_tool}
