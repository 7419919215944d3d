"""Verifiable rewards: answer extraction, exact match, format, math-verify, composite, code in the sandbox."""
import pytest

from rlcustom.rewards import apply_reward
from rlcustom.rewards.code import code_tests, extract_code
from rlcustom.rewards.composite import composite
from rlcustom.rewards.details import detail_metrics, score_details
from rlcustom.rewards.sandbox import run_sandboxed
from rlcustom.rewards.signature import required_fields
from rlcustom.rewards.verifiable import exact_match, extract_answer, format_match, gold_answer, normalize_number


@pytest.mark.parametrize("text,fmt,want", [
    ("so 3+4 = 7\n#### 7", "hash", "7"), ("#### 1,234", "hash", "1,234"), ("the answer is 7", "hash", None),
    (r"thus \boxed{\frac{1}{2}}", "boxed", r"\frac{1}{2}"), (r"\boxed{3} then \boxed{4}", "boxed", "4"),
    ("2 apples and 5 pears", "last_number", "5"), (r"#### 9 and \boxed{8}", "any", "9"), ("none", "any", None),
])
def test_extract_answer(text, fmt, want):
    assert extract_answer(text, fmt) == want


def test_normalize_and_gold():
    assert normalize_number("$1,000.50") == "1000.5" and normalize_number("+7") == "7" and normalize_number("3.0") == "3"
    assert gold_answer("Natalia sold 48/2 = 24 clips.\n#### 72") == "72" and gold_answer(5) == "5"


def test_exact_match_strict_format_and_reason():
    assert exact_match("p", "3 + 4 = 7\n#### 7", answer="7", answer_format="hash") == 1.0
    assert exact_match("p", "#### 7.0", answer="#### 7", answer_format="hash") == 1.0
    assert exact_match("p", "#### 8", answer="7", answer_format="hash") == 0.0
    missing = exact_match("p", "it is 7", answer="7", answer_format="hash")
    assert missing == 0.0 and missing.reason == "no_answer"
    assert exact_match("p", "it is 7", answer="7", answer_format="last_number") == 1.0


def test_format_match():
    assert format_match("p", "work\n#### 12") == 1.0 and format_match("p", "12") == 0.0
    assert format_match("p", "<think>a</think>42", pattern=r"<think>.*</think>\d+", full=True) == 1.0


def test_math_verify_equivalent_forms():
    pytest.importorskip("math_verify")
    from rlcustom.rewards.math_answers import math_verify_reward

    assert math_verify_reward("p", r"so \boxed{\frac{1}{2}}", answer="0.5") == 1.0
    assert math_verify_reward("p", r"\boxed{0.5}", answer=r"\frac{1}{2}") == 1.0
    assert math_verify_reward("p", r"\boxed{3}", answer="4") == 0.0
    assert math_verify_reward("p", "a solution\n#### 12", answer="x\n#### 12") == 1.0


def test_composite_weights_and_parts():
    comps = [{"spec": "exact_match", "weight": 1.0, "kwargs": {"answer_format": "hash"}},
             {"spec": "format_match", "weight": 0.5, "name": "format"}]
    v = composite("p", "#### 3", response_ids=[1], components=comps, answer="3")
    assert v == 1.5 and v.parts == {"exact_match": 1.0, "format": 1.0}
    v = composite("p", "#### 4", response_ids=[1], components=comps, answer="3")
    assert v == 0.5 and v.parts == {"exact_match": 0.0, "format": 1.0}
    assert required_fields(composite, {"components": comps}) == ["answer"]
    d = score_details("composite", ["p", "p"], ["#### 3", "x"], [[1], [1]], {"components": comps}, name="composite",
                      fields=[{"answer": "3"}, {"answer": "3"}])
    assert d["scores"] == [1.5, 0.0]
    m = detail_metrics([d])
    assert m["reward/exact_match"] == 0.5 and m["reward/format"] == 0.5 and m["reward/fail/no_answer"] == 0.5


def test_extract_code():
    assert extract_code("text\n```python\ndef f():\n    return 1\n```\nmore") == "def f():\n    return 1\n"
    assert extract_code("def f(): return 1") == "def f(): return 1"


def test_code_tests_fraction_passed():
    code = "```python\ndef add(a, b):\n    return a + b\n```"
    assert code_tests("p", code, tests="assert add(2, 3) == 5") == 1.0
    assert code_tests("p", code, tests=["assert add(1, 1) == 2", "assert add(1, 1) == 3"]) == 0.5


@pytest.mark.parametrize("body,reason", [
    ("while True:\n    pass", "timeout"),
    ("import os\nwhile True:\n    os.fork()", "processes"),
    ("x = bytearray(10 * 1024 ** 3)", "memory"),
    ("import urllib.request\nurllib.request.urlopen('http://example.com', timeout=1)", "network"),
    ("import _socket\n_socket.socket().connect(('1.1.1.1', 80))", "network"),
])
def test_sandbox_hazards_score_the_penalty_with_their_reason(body, reason):
    """An infinite loop, a fork bomb, a 10 GB allocation and a network call: penalty, reason, nothing left running."""
    v = code_tests("p", f"```python\n{body}\n```", tests="assert True", timeout_s=2.0, penalty=-1.0)
    assert v == -1.0 and v.reason == reason
    # ... and through apply_reward, as the reward actor scores them, the batch goes on
    d = score_details("code_tests", ["p", "p"], [f"```python\n{body}\n```", "```python\nx = 1\n```"], [[1], [1]],
                      {"timeout_s": 2.0}, name="code_tests", fields=[{"tests": "assert True"}] * 2)
    assert d["scores"] == [0.0, 1.0] and d["reasons"][0] == reason


def test_sandbox_runs_in_a_child_process():
    import os

    res = run_sandboxed("import os; print(os.getpid())")
    assert res.ok and int(res.stdout) != os.getpid()


def test_apply_reward_info_collects_reasons():
    info = []
    apply_reward("exact_match", ["p"], ["no number"], [[1]], {"answer_format": "hash"}, fields=[{"answer": "1"}],
                 info=info)
    assert info == [("no_answer", {})]
