"""Per-sample fields: a prompt record's columns reach the reward as keyword arguments."""
import json

import pytest

from rlcustom.data.fields import PromptBatch, attach_fields, common_columns
from rlcustom.data.loaders import load_prompts
from rlcustom.engines.base import Rollouts
from rlcustom.rewards import RewardSpecError, apply_reward
from rlcustom.rewards.columns import check_reward_columns
from rlcustom.rewards.signature import accepted_fields, required_fields


def needs_answer(prompt, completion, *, response_ids, answer):
    return float(completion.strip() == answer)


def takes_all(prompt, completion, *, response_ids, **kw):
    return float(len(kw))


def test_loader_keeps_other_columns_per_row(tmp_path):
    p = tmp_path / "d.jsonl"
    rows = [{"prompt": f"q{i}", "answer": str(i), "meta": {"id": i}} for i in range(5)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_prompts(str(p), split="all")
    assert ds.column_names == ["prompt", "messages"]
    assert [f["answer"] for f in ds.row_fields] == ["0", "1", "2", "3", "4"]
    assert ds.row_fields[3]["meta"] == {"id": 3}


def test_gsm8k_question_column_is_the_prompt(tmp_path):
    p = tmp_path / "g.jsonl"
    p.write_text(json.dumps({"question": "1+1?", "answer": "one plus one\n#### 2"}) + "\n")
    ds = load_prompts(str(p), split="all")
    assert ds["prompt"] == ["1+1?"] and ds.row_fields == [{"answer": "one plus one\n#### 2"}]


def test_fields_follow_prompt_index_through_select_and_concat():
    batch = PromptBatch([[1], [2]], [{"answer": "a"}, {"answer": "b"}])
    ro = Rollouts([[1], [1], [2], [2]], [[5], [6], [7], [8]], [[0.0]] * 4, ["stop"] * 4, [0, 0, 1, 1])
    attach_fields(ro, batch)
    assert [f["answer"] for f in ro.fields] == ["a", "a", "b", "b"]
    parts = [ro.select([0, 1]), ro.select([2, 3])]
    assert [f["answer"] for f in Rollouts.concat(parts).fields] == ["a", "a", "b", "b"]
    assert [f["answer"] for f in ro.select([3, 0]).fields] == ["b", "a"]


def test_apply_reward_passes_only_named_fields_and_config_wins():
    fields = [{"answer": "4", "other": 1}, {"answer": "5", "other": 2}]
    out = apply_reward(needs_answer, ["p", "p"], ["4", "4"], [[1], [1]], {}, fields=fields)
    assert out == [1.0, 0.0]
    # **kw gets every column (2) plus the config's kwarg (1), the config's value winning on a clash
    assert apply_reward(takes_all, ["p"], ["c"], [[1]], {"other": 9, "x": 1}, fields=fields[:1]) == [3.0]
    # built-ins that do not name a column are not handed it
    assert apply_reward("length_tokens", ["p"], ["c"], [[1, 2]], {}, fields=fields[:1]) == [2.0]


def test_signature_inspection():
    assert accepted_fields(needs_answer) == frozenset({"answer"})
    assert accepted_fields(takes_all) is None
    assert required_fields(needs_answer) == ["answer"]
    assert required_fields(needs_answer, {"answer": "x"}) == []
    assert common_columns([{"answer": 1, "a": 2}, {"answer": 3}]) == {"answer"}


def test_missing_column_is_one_line_naming_reward_and_column():
    with pytest.raises(RewardSpecError) as e:
        check_reward_columns(needs_answer, {}, {"meta"}, "data.prompts=x.jsonl")
    msg = str(e.value)
    assert "'answer'" in msg and "needs_answer" in msg and "x.jsonl" in msg and "\n" not in msg
    check_reward_columns(needs_answer, {}, {"answer"}, "x")  # present: no error
    check_reward_columns("model", {}, set(), "x")  # model rewards read no columns
