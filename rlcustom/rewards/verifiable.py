"""Verifiable rewards: a completion checked against its record's ``answer`` (exact match, a format).

Each reads the gold answer from the prompt record's ``answer`` column (a per-sample field, see
:mod:`rlcustom.data.fields`), so ``{"prompt": "What is 3+4?", "answer": "7"}`` needs no code. The
answer a completion gives is extracted by :func:`extract_answer` under a strict ``answer_format``:

* ``"hash"``: the number after ``####`` (the GSM8K convention: ``... #### 42``);
* ``"boxed"``: the content of the last ``\\boxed{...}``;
* ``"last_number"``: the last number in the completion (lenient);
* ``"any"``: ``####``, then ``\\boxed{}``, then the last number.

A gold answer in GSM8K form (a worked solution ending ``#### 42``) is reduced to ``42`` first.
"""
from __future__ import annotations

import operator
import re
from typing import Any, Sequence

from rlcustom.registry import REWARDS

__all__ = ["Scored", "extract_answer", "gold_answer", "normalize_number", "exact_match", "format_match",
           "ANSWER_FORMATS"]

ANSWER_FORMATS = ("hash", "boxed", "last_number", "any")
_NUM = r"[-+]?\$?\d[\d,]*(?:\.\d+)?"
_HASH_RE = re.compile(r"####\s*(" + _NUM + r")")
_NUM_RE = re.compile(_NUM)


class Scored(float):
    """A reward value with why it is what it is: ``reason`` (e.g. ``"timeout"`` for sandboxed code) and
    ``parts`` (a composite reward's components). Behaves as the float; the reward actor reads the
    extras and logs them as ``reward/<name>`` and ``reward/fail/<reason>``."""

    reason: str | None
    parts: dict[str, float]

    def __new__(cls, value: float, reason: str | None = None, parts: dict[str, float] | None = None) -> "Scored":
        obj = super().__new__(cls, float(value))
        obj.reason, obj.parts = reason, dict(parts or {})
        return obj

    def __reduce__(self):  # pickles (Ray) with its extras
        return (Scored, (float(self), self.reason, self.parts))


def _boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (nested braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def normalize_number(s: str) -> str:
    """``"$1,234.50"`` -> ``"1234.5"``, ``"+7"`` -> ``"7"``, ``"3.0"`` -> ``"3"``; other text stripped as is."""
    t = s.strip().replace(",", "").replace("$", "").rstrip(".")
    if re.fullmatch(r"[-+]?\d+(?:\.\d+)?", t):
        t = t.lstrip("+")
        if "." in t:
            t = t.rstrip("0").rstrip(".")
        return "0" if t in ("-0", "") else t
    return s.strip()


def extract_answer(completion: str, answer_format: str = "any") -> str | None:
    """The answer a completion gives under ``answer_format`` (see the module docstring), or None."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {', '.join(ANSWER_FORMATS)}, got {answer_format!r}")
    if answer_format in ("hash", "any"):
        m = _HASH_RE.findall(completion)
        if m:
            return m[-1]
        if answer_format == "hash":
            return None
    if answer_format in ("boxed", "any"):
        b = _boxed(completion)
        if b is not None or answer_format == "boxed":
            return b
    nums = _NUM_RE.findall(completion)
    return nums[-1] if nums else None


def gold_answer(answer: Any) -> str:
    """The reference answer: a GSM8K worked solution ``"... #### 42"`` gives ``"42"``; else ``str(answer)``."""
    text = str(answer)
    m = _HASH_RE.findall(text)
    return m[-1] if m else text.strip()


@REWARDS.register("exact_match")
def exact_match(prompt: str, completion: str, *, response_ids: Sequence[int] = (), answer: Any,
                answer_format: str = "any", numeric: bool = True, case_sensitive: bool = False) -> float:
    """1.0 if the answer extracted from the completion (``answer_format``) equals the record's ``answer``.

    Numbers compare after :func:`normalize_number` (``1,000`` == ``1000``, ``3.0`` == ``3``) when
    ``numeric``; text compares stripped and, unless ``case_sensitive``, case-folded.
    """
    got = extract_answer(completion, answer_format)
    if got is None:
        return Scored(0.0, "no_answer")
    gold = gold_answer(answer)
    if numeric:
        got, gold = normalize_number(got), normalize_number(gold)
    if not case_sensitive:
        got, gold = got.casefold(), gold.casefold()
    return float(got == gold)


@REWARDS.register("format_match")
def format_match(prompt: str, completion: str, *, response_ids: Sequence[int] = (), pattern: str = r"####\s*-?\d",
                 full: bool = False, flags: str = "s") -> float:
    """1.0 if the regex ``pattern`` is found in (``full``: matches all of) the stripped completion, else 0.0.

    ``flags``: letters of ``re`` flags (``i`` ignorecase, ``m`` multiline, ``s`` dotall). The default
    pattern asks for a GSM8K-style ``#### N`` answer line.
    """
    f = 0
    for ch in flags:
        f |= {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}[ch]
    text = completion.strip()
    m = re.fullmatch(pattern, text, f) if full else re.search(pattern, text, f)
    return float(m is not None)


@REWARDS.register("countdown")
def countdown_reward(prompt: str, completion: str, *, response_ids: Sequence[int] = (), numbers: Sequence[int],
                     target: float, answer_format: str = "hash", format_score: float = 0.0) -> float:
    """1.0 if the equation after ``####`` (or in ``\\boxed{}``) uses each of ``numbers`` exactly once with
    ``+ - * /`` and parentheses and equals ``target``; ``format_score`` for a well-formed but wrong one.
    Evaluated with a whitelist parse (``ast``), never ``eval`` of arbitrary text."""
    import ast

    m = re.findall(r"####\s*([^\n]+)", completion) if answer_format != "boxed" else []
    expr = m[-1].strip() if m else _boxed(completion)
    if not expr:
        return Scored(0.0, "no_answer")
    expr = expr.split("=")[0].strip()
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return Scored(0.0, "no_answer")
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
    used: list[int] = []

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            used.append(node.value)
            return float(node.value)
        raise ValueError("not an arithmetic expression")

    try:
        value = ev(tree.body)
    except (ValueError, ZeroDivisionError):
        return Scored(0.0, "no_answer")
    if sorted(used) != sorted(int(x) for x in numbers):
        return Scored(format_score, "wrong_numbers")
    return 1.0 if abs(value - float(target)) < 1e-6 else Scored(format_score, "wrong_value")
