"""Math answers checked by Hugging Face's ``math-verify`` (parses LaTeX and plain expressions with sympy).

As TRL's ``accuracy_reward``: ``parse(gold)``, ``parse(completion)``, ``verify(gold, answer)``, so
``\\frac{1}{2}``, ``0.5`` and ``1/2`` agree. The gold answer comes from the record's ``answer`` column;
a GSM8K-style solution is reduced to its ``#### N`` first. A gold answer that does not parse scores
by exact match instead (TRL skips such samples).
"""
from __future__ import annotations

import threading
from typing import Any, Sequence

from rlcustom.registry import REWARDS
from rlcustom.rewards.verifiable import Scored, exact_match, gold_answer

__all__ = ["math_verify_reward"]

_MISSING = ("reward 'math_verify' needs the math-verify package (pip install 'math-verify==0.9.0'; it is in "
            "cluster/requirements-cpu.txt), or use reward 'exact_match'")


def _lib():
    try:
        import math_verify
    except ImportError:
        raise ImportError(_MISSING) from None
    return math_verify


@REWARDS.register("math_verify")
def math_verify_reward(prompt: str, completion: str, *, response_ids: Sequence[int] = (), answer: Any,
                       boxed_only: bool = False) -> float:
    """1.0 if ``math_verify.verify(parse(gold), parse(completion))``; ``boxed_only`` demands a ``\\boxed{}``.

    math-verify's own timeouts use SIGALRM, which works only on a process's main thread: off the main
    thread (a threaded actor) they are disabled.
    """
    mv = _lib()
    main = threading.current_thread() is threading.main_thread()
    tkw = {} if main else {"parsing_timeout": None}
    gold = mv.parse(gold_answer(answer), **tkw)
    if not gold:
        return exact_match(prompt, completion, answer=answer)
    if boxed_only and "\\boxed{" not in completion:
        return Scored(0.0, "no_answer")
    cfg = [mv.LatexExtractionConfig(boxed_match_priority=0), mv.ExprExtractionConfig()]
    got = mv.parse(completion, extraction_config=cfg, **tkw)
    if not got:
        return Scored(0.0, "no_answer")
    return float(mv.verify(gold, got, **({} if main else {"timeout_seconds": None})))
