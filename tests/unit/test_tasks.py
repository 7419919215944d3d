"""Generated verifiable tasks and GSM8K-style files (rlcustom.data.tasks), through the prompt loader."""
import json

import pytest

from rlcustom.data.loaders import load_prompts
from rlcustom.data.tasks import parse_task_spec, task_records
from rlcustom.errors import DataError
from rlcustom.rewards.verifiable import countdown_reward, exact_match


def test_arithmetic_is_seeded_correct_and_distinct():
    a = task_records("task:arithmetic?digits=2&terms=3&ops=+-*&n=200&seed=4")
    assert a == task_records("task:arithmetic?digits=2&terms=3&ops=+-*&n=200&seed=4")
    assert a != task_records("task:arithmetic?digits=2&terms=3&ops=+-*&n=200&seed=5")
    prompts = [r["prompt"] for _, r in a]
    assert len(set(prompts)) == 200
    for _, r in a:  # the answer is the expression's value, left to right
        expr = r["prompt"][len("What is "):r["prompt"].index("?")]
        toks = expr.split()
        v = int(toks[0])
        for op, x in zip(toks[1::2], toks[2::2]):
            v = {"+": v + int(x), "-": v - int(x), "*": v * int(x)}[op]
        assert r["answer"] == str(v)
        assert all(10 <= int(t) <= 99 for t in toks[::2])
        assert exact_match(r["prompt"], f"#### {r['answer']}", answer=r["answer"], answer_format="hash") == 1.0


def test_countdown_targets_are_reachable_by_construction():
    for _, r in task_records("task:countdown?numbers=3&n=50&seed=1"):
        assert r["target"] > 0 and len(r["numbers"]) == 3
        assert r["prompt"].startswith(f"Using the numbers {r['numbers']}")
    assert countdown_reward("p", "#### (3 + 5) * 2", numbers=[5, 3, 2], target=16) == 1.0
    assert countdown_reward("p", "#### 3 * 5 + 2", numbers=[5, 3, 2], target=16) == 0.0
    assert countdown_reward("p", "#### 3 * 5", numbers=[5, 3, 2], target=15).reason == "wrong_numbers"
    assert countdown_reward("p", "#### __import__('os')", numbers=[1], target=1).reason == "no_answer"


def test_task_spec_errors_name_the_spec():
    assert parse_task_spec("task:arithmetic?digits=2&n=8") == ("arithmetic", {"digits": "2", "n": "8"})
    with pytest.raises(DataError, match="task:arithmetic\\?digit=2: unknown parameter 'digit'"):
        task_records("task:arithmetic?digit=2")
    with pytest.raises(DataError, match="did you mean 'arithmetic'"):
        task_records("task:arithmetc")
    with pytest.raises(DataError, match="only 100 distinct"):  # 10 x 10 single-digit sums
        task_records("task:arithmetic?digits=1&terms=2&n=200&ops=+&seed=0&format=none")


def test_task_through_the_loader_has_a_held_out_split():
    spec = "task:arithmetic?digits=2&n=300&seed=0"
    train = load_prompts(spec, split="train", val_fraction=0.2)
    val = load_prompts(spec, split="validation", val_fraction=0.2)
    assert len(train) + len(val) == 300 and 30 < len(val) < 90
    assert not set(train["prompt"]) & set(val["prompt"])
    assert all("answer" in f for f in val.row_fields)


def test_gsm8k_file(tmp_path):
    p = tmp_path / "gsm.jsonl"
    rows = [{"question": f"Tom has {k} apples and buys 2. How many?", "answer": f"{k} + 2 = {k + 2}\n#### {k + 2}"}
            for k in range(20)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_prompts(f"task:gsm8k?path={p}&format=boxed", split="all")
    assert ds["prompt"][3].endswith("Put the final answer in \\boxed{}.")
    assert ds.row_fields[3]["answer"] == "5" and ds.row_fields[3]["solution"].endswith("#### 5")
    held = load_prompts(f"task:gsm8k?path={p}", split="validation", val_fraction=0.3)
    assert 0 < len(held) < 20


@pytest.mark.parametrize("spec", ["digits=3&terms=2&ops=*", "digits=2&terms=3&ops=+-*"])
def test_calculator_traces_are_episodes_the_calculator_env_scores_1(spec):
    from rlcustom.data.loaders import load_sft
    from rlcustom.envs.tool_env import calculator_env

    task = f"task:arithmetic?{spec}&n=40&seed=2&format=calculator"
    problems = [r for _, r in task_records(task)]
    traces = [r for _, r in task_records(task + "&trace=calculator")]
    assert len(traces) == 2 * len(problems)
    for prob, call, answer in zip(problems, traces[::2], traces[1::2]):
        assert call["prompt"] == prob["prompt"] == answer["messages"][0]["content"]  # the RL task's own prompts
        assert call["completion"] == answer["messages"][1]["content"]
        env = calculator_env()
        env.reset({"answer": prob["answer"]})
        obs, reward, done, info = env.step(call["completion"])  # the env's own parser runs the call
        assert (obs, reward, done, info["tool_calls"], info["tool_errors"]) == (answer["messages"][2]["content"], 0.0,
                                                                                 False, 1.0, 0.0)
        assert answer["messages"][2]["role"] == "user"  # observations are user turns (rollout.observation_role)
        assert env.step(answer["messages"][3]["content"])[1:3] == (1.0, True)
        assert answer["messages"][3]["content"] == f"#### {prob['answer']}"
    rows = load_sft(task + "&trace=calculator", split="all")  # the sft trainer's loader reads them
    assert len(rows) == len(traces) and rows[1]["completion"] == traces[1]["messages"][3]["content"]
    assert [m["role"] for m in rows[1]["messages"]] == ["user", "assistant", "user"]


def test_trace_needs_the_calculator_format():
    with pytest.raises(DataError, match="trace=calculator needs format=calculator"):
        task_records("task:arithmetic?n=4&trace=calculator")
    with pytest.raises(DataError, match="trace='x'; expected one of none, calculator"):
        task_records("task:arithmetic?n=4&format=calculator&trace=x")
