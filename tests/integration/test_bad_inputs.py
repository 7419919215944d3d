"""A user's mistake costs one clear line (exit code 2), found before Ray starts, and loses nothing
already written. Each case runs the real CLI (`rlcustom train` / `generate`) in-process."""
from __future__ import annotations

import json
import shutil

import pytest

from rlcustom.cli import main

PROMPTS = ["Say hi.", "Name a color."]


@pytest.fixture
def work(tmp_path, tiny_dir):
    """An output dir holding a finished run's checkpoint and generations (must survive every bad input)."""
    out = tmp_path / "run"
    ck = out / "checkpoints" / "step_000002"
    ck.mkdir(parents=True)
    (ck / "trainer_state.json").write_text('{"step": 2}')
    (out / "checkpoints" / "latest").write_text("step_000002\n")
    (out / "generations.jsonl").write_text('{"prompt": "old", "completion": "kept"}\n')
    good = tmp_path / "p.jsonl"
    good.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in PROMPTS))
    return {"tmp": tmp_path, "out": out, "good": good, "model": str(tiny_dir)}


def snapshot(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def no_template_model(tiny_dir, dest):
    """The tiny model with its tokenizer's chat template removed."""
    shutil.copytree(tiny_dir, dest)
    cfg = dest / "tokenizer_config.json"
    data = json.loads(cfg.read_text())
    data.pop("chat_template", None)
    cfg.write_text(json.dumps(data))
    for f in dest.glob("chat_template.*"):
        f.unlink()
    return dest


def write(tmp, name, text):
    p = tmp / name
    p.write_text(text)
    return str(p)


# (id, how to build the inputs, expected text of the one line)
CASES = [
    ("malformed-yaml", lambda w: [write(w["tmp"], "c.yaml", "trainer: pg\nsteps: [1, 2\n")], "c.yaml:3: malformed YAML"),
    ("unknown-key", lambda w: ["optim.lrr=0.1"], "unknown key 'optim.lrr' (did you mean 'optim.lr'?)"),
    ("wrong-type", lambda w: ["steps=ten"], "key 'steps' must be an integer, got 'ten'"),
    ("negative-lr", lambda w: ["optim.lr=-1e-3"], "key 'optim.lr' must be > 0, got -0.001"),
    ("lam-not-a-number", lambda w: ["trainer=ppo", "algo.lam=abc"], "key 'algo.lam' must be a number, got 'abc'"),
    ("missing-config", lambda w: [str(w["tmp"] / "nope.yaml")], "nope.yaml: no such config file"),
    ("missing-model", lambda w: ["model.path=/nonexistent/model"], "/nonexistent/model: no such model directory"),
    ("missing-data", lambda w: [f"data.prompts={w['tmp'] / 'none.jsonl'}"], "none.jsonl"),
    ("corrupt-jsonl", lambda w: [f"data.prompts={write(w['tmp'], 'bad.jsonl', '{}{}'.format(json.dumps({'prompt': 'a'}) + chr(10), '{oops' + chr(10)))}"],
     "bad.jsonl:2: "),
    ("empty-jsonl", lambda w: [f"data.prompts={write(w['tmp'], 'empty.jsonl', '')}"], "empty.jsonl: "),
    ("missing-field", lambda w: [f"data.prompts={write(w['tmp'], 'nf.jsonl', json.dumps({'question': 'x'}) + chr(10))}"],
     "nf.jsonl:1: missing field 'prompt'"),
    ("all-prompts-too-long", lambda w: ["data.max_prompt_tokens=2", "data.long_prompts=skip"],
     "no prompts left (skipped 2 longer than data.max_prompt_tokens=2)"),
    ("no-chat-template", lambda w: [f"model.path={no_template_model(w['model'], w['tmp'] / 'm')}"],
     "has no chat template; set data.chat_template: false"),
]


def base_args(w):
    return ["trainer=pg", f"model.path={w['model']}", f"output_dir={w['out']}", f"data.prompts={w['good']}",
            "data.split=all", "steps=2", "tracking.mode=disabled", "engine=hf"]


@pytest.mark.parametrize("make, expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_before_ray_and_loses_nothing(work, make, expect, capsys):
    import ray

    was_up = ray.is_initialized()
    before = snapshot(work["out"])
    args = make(work)
    if args and args[0].endswith(".yaml"):  # a config file goes first
        argv = ["train", args[0], *base_args(work)[1:]]
    else:
        argv = ["train", "--", *base_args(work), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("rlcustom train: error: ") and expect in err, err
    assert "Traceback" not in err
    assert ray.is_initialized() == was_up  # found before Ray started
    assert snapshot(work["out"]) == before  # nothing already written is lost


def test_bad_input_to_generate_keeps_previous_output(work, capsys):
    before = snapshot(work["out"])
    bad = write(work["tmp"], "bad.jsonl", '{"prompt": "a"}\n{oops\n')
    assert main(["generate", "--", f"model.path={work['model']}", f"output_dir={work['out']}",
                 f"data.prompts={bad}", "data.split=all", "tracking.mode=disabled", "engine=hf"]) == 2
    assert capsys.readouterr().err.strip().startswith(f"rlcustom generate: error: {bad}:2: ")
    assert snapshot(work["out"]) == before


@pytest.mark.parametrize("policy, kept, skipped, truncated", [("truncate", 3, 0, 2), ("skip", 1, 2, 0)])
def test_long_prompts_truncated_or_skipped_and_counted(tiny, tmp_path, policy, kept, skipped, truncated):
    from rlcustom.config import DataConfig
    from rlcustom.data.prompting import build_prompts

    _, tok = tiny
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in ["hi", "word " * 200, "more " * 300]))
    cfg = DataConfig(prompts=str(p), split="all", max_prompt_tokens=64, long_prompts=policy)
    ps = build_prompts(cfg, tok)
    assert (len(ps.ids), ps.skipped_long, ps.truncated_long) == (kept, skipped, truncated)
    assert all(len(ids) <= 64 for ids in ps.ids)


def test_no_chat_template_with_plain_text_prompts(tiny_dir, tmp_path):
    """The documented way out of the no-template error: data.chat_template=false gives raw HH text."""
    from rlcustom.config import DataConfig
    from rlcustom.data.prompting import build_prompts
    from rlcustom.models.loading import load_tokenizer

    tok = load_tokenizer(str(no_template_model(tiny_dir, tmp_path / "m")))
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": "Say hi."}) + "\n")
    ps = build_prompts(DataConfig(prompts=str(p), split="all", chat_template=False), tok)
    assert ps.texts == ["\n\nHuman: Say hi.\n\nAssistant:"]


def test_reward_function_that_raises_names_function_sample_and_prompt(work, capsys):
    """The error comes from the reward actor (a Ray worker) yet prints as the user's one line."""
    import ray

    try:
        code = main(["train", "--", *base_args(work), "reward.spec=target_length", "reward.kwargs.target=0",
                     "cluster.num_cpus=2", "roles.learner.zero_stage=0", "roles.learner.cpus=0.5",
                     "roles.rollout.cpus=0.5", "roles.reward.cpus=0.5", "sampling.max_new_tokens=4",
                     "algo.prompts_per_step=2", f"output_dir={work['tmp'] / 'run2'}"])
    finally:
        ray.shutdown()
    (err,) = [ln for ln in capsys.readouterr().err.splitlines() if "rlcustom train: error:" in ln]  # one line
    assert code == 2
    assert err.startswith("rlcustom train: error: reward 'target_length' failed on sample 0: "
                          "ZeroDivisionError: division by zero (prompt '"), err
    assert "Human" in err or "user" in err or "Say hi." in err or "color" in err
