"""Code rewards: the completion's program run against its record's ``tests`` in the sandbox.

``tests`` (a per-sample field) is a string of Python (asserts) or a list of such strings. The
completion's last fenced code block (or the whole completion when it has none) is run, in a
separate limited process (:mod:`rlcustom.rewards.sandbox`), followed by the tests. The reward is
the fraction of tests that pass (1.0/0.0 for a single string); a program that times out, exhausts
memory or processes, or touches the network scores ``penalty`` and its reason is logged
(``reward/fail/<reason>``).
"""
from __future__ import annotations

import json
import re
from typing import Any, Sequence

from rlcustom.registry import REWARDS
from rlcustom.rewards.sandbox import run_sandboxed
from rlcustom.rewards.verifiable import Scored

__all__ = ["extract_code", "code_tests"]

_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)
_MARK = "__RLCUSTOM_TESTS_PASSED__"

_HARNESS = '''
import json as _json
_code, _tests = _json.loads({payload!r})
try:  # a program that does not compile or raises still gets its tests run (they fail: NameError, ...)
    exec(compile(_code, "<completion>", "exec"), globals())
except (MemoryError, OSError):  # out of memory, processes or network: the run's failure, not a test's
    raise
except (Exception, SystemExit) as _e:
    print("program: " + type(_e).__name__ + ": " + str(_e)[:200])
_passed = 0
for _t in _tests:
    try:
        exec(compile(_t, "<test>", "exec"), globals())
        _passed += 1
    except (MemoryError, OSError):
        raise
    except (Exception, SystemExit) as _e:
        print("test: " + type(_e).__name__ + ": " + str(_e)[:200])
print("{mark}", _passed)
'''


def extract_code(completion: str) -> str:
    """The last fenced code block (```python ... ```), or the whole completion without fences."""
    blocks = _FENCE.findall(completion)
    return blocks[-1] if blocks else completion.replace("```", "")


@REWARDS.register("code_tests")
def code_tests(prompt: str, completion: str, *, response_ids: Sequence[int] = (), tests: Any,
               timeout_s: float = 5.0, memory_mb: int = 512, max_procs: int = 16, penalty: float = 0.0) -> float:
    """Fraction of ``tests`` the completion's code passes, run in the sandbox (never in this process)."""
    cases = [tests] if isinstance(tests, str) else [str(t) for t in tests]
    if not cases:
        raise ValueError("code_tests: the record's 'tests' is empty")
    program = _HARNESS.format(payload=json.dumps([extract_code(completion), cases]), mark=_MARK)
    res = run_sandboxed(program, timeout_s=timeout_s, memory_mb=memory_mb, max_procs=max_procs)
    passed = next((int(line.split()[-1]) for line in res.stdout.splitlines() if line.startswith(_MARK)), None)
    if passed is None:  # the program never reached the tests: killed, crashed or blocked
        return Scored(penalty, res.reason or "error")
    return Scored(passed / len(cases), None if passed == len(cases) else "tests_failed")
