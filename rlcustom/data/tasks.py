"""Verifiable tasks without downloads: seeded generators, and GSM8K-style files.

``data.prompts`` names one as ``task:NAME?key=value&...``:

* ``task:arithmetic?digits=2&terms=2&ops=+-&n=512&seed=0&format=hash`` -- ``"What is 23 + 45?"``,
  answer ``68``. ``digits`` per operand, ``terms`` operands, ``ops`` from ``+-*``.
* ``task:countdown?numbers=3&max_number=20&n=512&seed=0`` -- reach ``target`` from ``numbers`` with
  ``+ - * /``, each number once (reward ``countdown``; the record carries ``numbers`` and ``target``).
* ``task:gsm8k?path=data/gsm8k.jsonl`` -- a user's GSM8K-style JSONL (``{"question", "answer"}`` with the
  answer's worked solution ending ``#### 42``): ``answer`` becomes ``42`` and the solution is kept
  as ``solution``. (The same file given as ``data.prompts=data/gsm8k.jsonl`` works too, with the raw
  answer, which the verifiable rewards reduce to ``42``.)

``trace=calculator`` (arithmetic with ``format=calculator``) turns each problem into supervised
fine-tuning records for the ``sft`` trainer: the worked tool-using episode, in exactly the format
``rollout.env: calculator`` parses. Two records per problem, one per model turn: ``{"prompt": question,
"completion": "<tool>calculator</tool><input>123 * 456</input>"}`` and ``{"messages": [question, that
call, "<result>56088</result>" as the user's turn, "#### 56088"]}`` (the tool's result is computed by the
calculator itself). Their ``messages`` record is split by its whole dialogue, not by the question: give
trace data its own ``seed`` to keep it apart from an RL run's held-out problems.

``format`` (every task) picks the answer instruction appended to the question: ``hash``
("... the final answer after ####"), ``boxed`` (``\\boxed{}``), ``calculator`` (the calculator tool's
call format, then ``####``; for ``rollout.env: calculator``) or ``none``. The records carry
``answer`` for :func:`rlcustom.rewards.verifiable.exact_match` / ``math_verify``. The held-out split is
the loaders' usual one (``data.split=validation``, ``data.val_fraction``, by prompt hash), so a
generated prompt is in exactly one split. Generation is deterministic in ``seed`` and duplicates are
dropped.
"""
from __future__ import annotations

import operator
import random
from typing import Any, Callable
from urllib.parse import unquote

from rlcustom.errors import DataError
from rlcustom.registry import Registry

__all__ = ["TASKS", "task_records", "parse_task_spec", "FORMATS", "TRACES", "calculator_trace"]

TASKS: Registry = Registry("task")

FORMATS = {
    "hash": " Give the final answer as a number after '####', like '#### 7'.",
    "boxed": " Put the final answer in \\boxed{}.",
    "none": "",
    # for rollout.env: calculator (rlcustom.envs): the tool-call format, then the answer after ####
    "calculator": (" You may use a calculator: write <tool>calculator</tool><input>EXPRESSION</input> and you get"
                   " <result>VALUE</result> back. Give the final answer as a number after '####', like '#### 7'."),
}


TRACES = ("none", "calculator")


def calculator_trace(question: str, expression: str, answer: str) -> list[dict]:
    """The two SFT records (one per model turn) of a calculator episode that answers ``question``."""
    from rlcustom.envs.tools import calculator

    call = f"<tool>calculator</tool><input>{expression}</input>"
    result = calculator(expression)
    if result != answer:
        raise DataError(f"calculator trace: {expression!r} gives {result}, the task's answer is {answer}")
    user = {"role": "user", "content": question}
    return [{"prompt": question, "completion": call, "answer": answer, "task": "arithmetic"},
            {"messages": [user, {"role": "assistant", "content": call},
                          {"role": "user", "content": f"<result>{result}</result>"},
                          {"role": "assistant", "content": f"#### {answer}"}], "answer": answer, "task": "arithmetic"}]


def parse_task_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"task:arithmetic?digits=2&n=8"`` -> ``("arithmetic", {"digits": "2", "n": "8"})``."""
    body = spec[len("task:"):] if spec.startswith("task:") else spec
    name, _, query = body.partition("?")
    pairs = [part.partition("=") for part in query.split("&") if part]
    return name.strip(), {unquote(k).strip(): unquote(v) for k, _, v in pairs}  # '+' stays '+' (ops=+-)


class _Params:
    """Typed access to a task's query parameters; unknown or malformed ones fail naming the spec."""

    def __init__(self, spec: str, params: dict[str, str]) -> None:
        self.spec, self.params, self.used = spec, params, set()

    def get(self, key: str, default: Any, kind: Callable = int) -> Any:
        self.used.add(key)
        if key not in self.params:
            return default
        try:
            return kind(self.params[key])
        except ValueError:
            raise DataError(f"{self.spec}: {key}={self.params[key]!r} is not a valid {kind.__name__}") from None

    def done(self) -> None:
        extra = sorted(set(self.params) - self.used)
        if extra:
            raise DataError(f"{self.spec}: unknown parameter {extra[0]!r} (known: {', '.join(sorted(self.used))})")


def _instruction(p: _Params) -> str:
    fmt = p.get("format", "hash", str)
    if fmt not in FORMATS:
        raise DataError(f"{p.spec}: format={fmt!r}; expected one of {', '.join(FORMATS)}")
    return FORMATS[fmt]


def _unique(make: Callable[[random.Random], dict | None], n: int, seed: int, spec: str) -> list[dict]:
    rng, seen, out = random.Random(seed), set(), []
    tries = 0
    while len(out) < n and tries < 50 * n + 1000:
        tries += 1
        rec = make(rng)
        if rec is None or rec["prompt"] in seen:
            continue
        seen.add(rec["prompt"])
        out.append(rec)
    if len(out) < n:
        raise DataError(f"{spec}: only {len(out)} distinct problems exist for these settings (asked n={n})")
    return out


_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


@TASKS.register("arithmetic")
def arithmetic(p: _Params) -> list[dict]:
    """``a op b [op c ...]`` with ``digits``-digit operands, evaluated left to right; answer an integer."""
    digits, terms, n, seed = p.get("digits", 2), p.get("terms", 2), p.get("n", 512), p.get("seed", 0)
    ops = p.get("ops", "+", str)
    suffix = _instruction(p)
    trace = p.get("trace", "none", str)
    if trace not in TRACES:
        raise DataError(f"{p.spec}: trace={trace!r}; expected one of {', '.join(TRACES)}")
    if trace == "calculator" and p.get("format", "hash", str) != "calculator":
        raise DataError(f"{p.spec}: trace=calculator needs format=calculator (the prompt must offer the tool)")
    if not 1 <= digits <= 9 or not 2 <= terms <= 6 or n < 1 or not ops or set(ops) - set(_OPS):
        raise DataError(f"{p.spec}: need 1 <= digits <= 9, 2 <= terms <= 6, n >= 1, ops from '+-*'")
    lo, hi = (0 if digits == 1 else 10 ** (digits - 1)), 10 ** digits - 1

    def make(rng: random.Random) -> dict:
        nums = [rng.randint(lo, hi) for _ in range(terms)]
        chosen = [rng.choice(ops) for _ in range(terms - 1)]
        value, expr, calc = nums[0], str(nums[0]), str(nums[0])
        for op, x in zip(chosen, nums[1:]):
            value, expr = _OPS[op](value, x), f"{expr} {op} {x}"
            calc = f"({calc}) {op} {x}" if op == "*" and ("+" in calc or "-" in calc) else f"{calc} {op} {x}"
        rec = {"prompt": f"What is {expr}?{suffix}", "answer": str(value), "task": "arithmetic"}
        return rec | ({"calc": calc} if trace != "none" else {})  # left to right, as the calculator reads it

    records = _unique(make, n, seed, p.spec)
    if trace == "none":
        return records
    return [t for r in records for t in calculator_trace(r["prompt"], r["calc"], r["answer"])]


@TASKS.register("countdown")
def countdown(p: _Params) -> list[dict]:
    """Numbers and a target reachable from them (a random expression's value), e.g. TinyZero's Countdown."""
    k, max_number, n, seed = p.get("numbers", 3), p.get("max_number", 20), p.get("n", 512), p.get("seed", 0)
    suffix = _instruction(p).replace("a number", "an equation").replace("'#### 7'", "'#### (3 + 5) * 2'")
    if not 2 <= k <= 6 or max_number < 2 or n < 1:
        raise DataError(f"{p.spec}: need 2 <= numbers <= 6, max_number >= 2, n >= 1")

    def make(rng: random.Random) -> dict | None:
        nums = [rng.randint(1, max_number) for _ in range(k)]
        order = nums[:]
        rng.shuffle(order)
        value = order[0]
        for x in order[1:]:
            value = _OPS[rng.choice("+-*")](value, x)
        if value <= 0:
            return None
        return {"prompt": f"Using the numbers {nums}, each exactly once, with + - * / and parentheses, make "
                          f"{value}.{suffix}", "numbers": nums, "target": value, "answer": str(value),
                "task": "countdown"}

    return _unique(make, n, seed, p.spec)


@TASKS.register("gsm8k")
def gsm8k(p: _Params) -> list[dict]:
    """A user's GSM8K-style JSONL: ``question`` + instruction as the prompt, the ``#### N`` as ``answer``."""
    from rlcustom.data.records import read_records
    from rlcustom.rewards.verifiable import gold_answer

    path = p.get("path", None, str)
    suffix = _instruction(p)
    if not path:
        raise DataError(f"{p.spec}: needs path=FILE.jsonl (records with 'question' and 'answer')")
    records, _ = read_records(path, required=("question", "answer"))
    out = []
    for r in records:
        extra = {k: v for k, v in r.items() if k not in ("question", "answer")}
        out.append({**extra, "prompt": r["question"].strip() + suffix, "answer": gold_answer(r["answer"]),
                    "solution": r["answer"]})
    return out


def task_records(spec: str) -> list[tuple[int, dict]]:
    """``[(index, record)]`` of a ``task:`` spec (1-based index where a file has line numbers)."""
    name, params = parse_task_spec(spec)
    try:
        fn = TASKS.get(name)
    except KeyError as e:
        raise DataError(f"{spec}: {e.args[0]}") from None
    p = _Params(spec, params)
    records = fn(p)
    p.done()
    return list(enumerate(records, start=1))
