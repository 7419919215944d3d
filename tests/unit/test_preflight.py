"""Mistakes caught before anything starts (rlcustom/preflight.py) and the one error boundary (rlcustom/boundary.py).

Every CLI case runs the real `rlcustom` main in-process and checks: exit 2, exactly one line on stderr naming the
problem, and every file the user had byte-identical afterwards (no Ray starts: each case takes well under a second
after the imports)."""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest

from rlcustom.cli import main

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "demo.yaml")


def tree_hash(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        out.update({str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files})
    return out


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


@pytest.fixture
def ws(tmp_path, tiny_dir):
    """A user's workspace: a prompts file, a finished run's output dir and a copy of the tiny model."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Say hi."}\n{"prompt": "Name a color."}\n')
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "generations.jsonl").write_text('{"prompt": "old", "completion": "kept"}\n')
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    return {"tmp": tmp_path, "prompts": prompts, "out": out, "model": model}


def cases(w):
    m, p, o, t = w["model"], w["prompts"], w["out"], w["tmp"]
    gen = ["generate", f"model.path={m}", f"output_dir={o}", "--prompts", str(p)]
    train = ["train", DEMO, f"model.path={m}", f"output_dir={o}", f"data.prompts={p}"]
    return {
        "unknown-trainer": (["train", DEMO, "trainer=ppp"], "unknown trainer 'ppp' (did you mean 'ppo'?)"),
        "misspelt-role": (train + ["roles.rollot.gpus=1"], "no role 'rollot' (did you mean 'roles.rollout'?"),
        "colocate-typo": (train + ["roles.rollout.colocate_with=lerner"], "no role 'lerner' (did you mean 'learner'?"),
        "share-not-reference": (train + ["roles.rollout.share=learner"],
                                "key 'roles.rollout.share': only the reference role can be shared"),
        "out-is-prompts": (gen + ["--out", str(p)], "is the prompts file (data.prompts) this command reads"),
        "out-is-config": (gen[:1] + [str(t / "c.yaml"), f"model.path={m}", f"output_dir={o}", "--prompts", str(p),
                                     "--out", str(t / "c.yaml")], "is the config file this command reads"),
        "out-is-a-directory": (gen + ["--out", str(o)], "is a directory; give a file path"),
        "output-dir-under-a-file": (["generate", f"model.path={m}", f"output_dir={p}/sub", "--prompts", str(p)],
                                    f"{p} is a file, not a directory"),
        "eval-out-unwritable": (["eval", DEMO, f"model.path={m}", f"output_dir={o}", "--out", "/proc/rl/eval.json"],
                                "--out /proc/rl/eval.json"),
        "eval-limit-0": (["eval", DEMO, f"model.path={m}", f"output_dir={o}", "--limit", "0"],
                         "--limit must be at least 1, got 0"),
        "generate-limit-0": (gen + ["--limit", "0"], "key 'data.limit' must be > 0, got 0"),
        "advantage-typo": (train + ["algo.advantage=rlooo"], "unknown advantage estimator 'rlooo' (did you mean 'rloo'?)"),
        "reward-module-missing": (train + ["reward.spec=no_such_module:fn"], "cannot import module 'no_such_module'"),
        "reward-fn-missing": (train + ["reward.spec=rlcustom.rewards:no_fn"], "has no attribute 'no_fn'"),
        "reward-name-typo": (train + ["reward.spec=length_tokns"], "did you mean 'length_tokens'?"),
        "reward-model-no-path": (train + ["reward.spec=model"], "reward 'model' needs reward.model_path"),
        "resume-typo": (train + ["resume=atuo"], "resume: atuo is not auto, never or a checkpoint directory (did you mean 'auto'?)"),
        "wandb-online-no-key": (train + ["tracking.mode=online"], "tracking.mode=online but no W&B key"),
        "cluster-unreachable": (train + ["cluster.address=127.0.0.1:1"], "cluster.address=127.0.0.1:1: not reachable"),
        "cluster-auto-none": (train + ["cluster.address=auto"], "cluster.address=auto: no running Ray cluster"),
        "lora-target-matches-nothing": (train + ["model.lora.r=4", "model.lora.target_modules=[q_prj]"],
                                        "'q_prj' matches no module"),
        "empty-yaml": (["train", str(t / "empty.yaml")], "empty.yaml sets no trainer"),
        "duplicate-yaml-key": (["train", str(t / "dup.yaml")], "dup.yaml:4: duplicate key 'optim' (first at line 2)"),
        "missing-model": (gen[:1] + ["model.path=/nonexistent/model", f"output_dir={o}", "--prompts", str(p)],
                          "/nonexistent/model: no such model directory"),
        "submit-bad-reward": (["submit", DEMO, "steps=2", "reward.spec=no_such_module:fn", "--dry-run"],
                              "cannot import module 'no_such_module'"),
    }


@pytest.mark.parametrize("case", list(cases({"model": "", "prompts": "", "out": "", "tmp": Path()})))
def test_mistake_is_one_line_exit_2_and_nothing_changes(case, ws, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc W&B login
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # no /tmp/ray/ray_current_cluster
    (ws["tmp"] / "empty.yaml").write_text("")
    (ws["tmp"] / "c.yaml").write_text("seed: 1\n")
    (ws["tmp"] / "dup.yaml").write_text("trainer: pg\noptim:\n  lr: 0.1\noptim:\n  lr: 0.2\n")
    argv, expected = cases(ws)[case]
    before = tree_hash(ws["tmp"])
    rc, err = run_cli(capsys, argv)
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert expected in err, err
    assert tree_hash(ws["tmp"]) == before  # no file made, changed or removed
    assert not list(ws["tmp"].rglob("*.tmp"))


# ----------------------------------------------------------------------------- model directories


def _rewrite_config(model: Path, **changes) -> None:
    cfg = json.loads((model / "config.json").read_text())
    cfg.update(changes)
    (model / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("damage,expected", [
    (lambda m: _rewrite_config(m, num_hidden_layers=4), "num_hidden_layers=4 but the weights have 2 layers"),
    (lambda m: _rewrite_config(m, hidden_size=128), "hidden_size=128 but the weights' embed_tokens is 64 wide"),
    (lambda m: _rewrite_config(m, vocab_size=1000), "vocab_size=1000 but the weights' embed_tokens has 49152 rows"),
    (lambda m: (m / "model.safetensors").write_bytes((m / "model.safetensors").read_bytes()[:100_000]), "truncated"),
    (lambda m: [(m / f).unlink() for f in ("tokenizer.json", "tokenizer_config.json") if (m / f).exists()],
     "has no tokenizer"),
    (lambda m: (m / "model.safetensors").unlink(), "has no weights (*.safetensors)"),
    (lambda m: (m / "config.json").write_text("{"), "config.json: invalid JSON"),
])
def test_broken_model_directory_is_one_line(ws, capsys, damage, expected):
    damage(ws["model"])
    before = tree_hash(ws["tmp"])
    rc, err = run_cli(capsys, ["generate", f"model.path={ws['model']}", f"output_dir={ws['out']}",
                               "--prompts", str(ws["prompts"])])
    assert rc == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert tree_hash(ws["tmp"]) == before


def test_fingerprint_tells_same_shaped_models_apart(tiny_dir, stopping_tiny_dir, tmp_path):
    from rlcustom.models.files import fingerprint

    copy = shutil.copytree(tiny_dir, tmp_path / "copy")
    assert fingerprint(copy) == fingerprint(tiny_dir)  # content, not path
    assert fingerprint(stopping_tiny_dir) != fingerprint(tiny_dir)  # same shapes, other weights


def test_header_reader_on_a_hand_written_file(tmp_path):
    from rlcustom.errors import ModelLoadError
    from rlcustom.models.files import read_header

    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    f = tmp_path / "x.safetensors"
    f.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    assert read_header(f)["w"]["shape"] == [2, 2]
    f.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 15)  # one byte short
    with pytest.raises(ModelLoadError, match="truncated"):
        read_header(f)


# ----------------------------------------------------------------------------- config and rewards


def test_dict_override_merges_into_the_section(tmp_path):
    from rlcustom.config import load_config

    c = tmp_path / "c.yaml"
    c.write_text("data:\n  limit: 3\n  split: validation\n")
    cfg = load_config(c, ["data={prompts: other.jsonl}"])
    assert (cfg.data.prompts, cfg.data.limit, cfg.data.split) == ("other.jsonl", 3, "validation")


def test_numeric_string_reward_is_rejected():
    from rlcustom.rewards import RewardFunctionError, apply_reward, check_reward_value

    assert check_reward_value(1, "r", 0) == 1.0 and check_reward_value(True, "r", 0) == 1.0
    with pytest.raises(RewardFunctionError, match=r"reward 'r' failed on sample 0: returned '0.5' \(str\)"):
        check_reward_value("0.5", "r", 0)
    with pytest.raises(RewardFunctionError, match="returned '1'"):
        apply_reward(lambda p, c, **k: "1", ["p"], ["c"], [[1]], name="r")


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt()])
def test_reward_raising_systemexit_or_keyboardinterrupt_is_a_reward_failure(exc):
    from rlcustom.rewards import RewardFunctionError, apply_reward

    def bad(prompt, completion, **kw):
        if completion == "second":
            raise exc
        return 1.0

    with pytest.raises(RewardFunctionError) as ei:
        apply_reward(bad, ["a", "b"], ["first", "second"], [[1], [2]], name="my_reward")
    msg = str(ei.value)
    assert msg.startswith("reward 'my_reward' failed on sample 1: " + type(exc).__name__), msg


# ----------------------------------------------------------------------------- the boundary


def test_boundary_unwraps_ray_actor_start_up_errors(capsys):
    from ray.exceptions import ActorDiedError, RayTaskError

    from rlcustom.boundary import describe, run_guarded

    try:
        raise ValueError("LoRA target modules {'q_prj'} not found in the base model")
    except ValueError as e:
        tb = ('Traceback (most recent call last):\n  File "actors/learner.py", line 290, in __init__\n'
              "ValueError: LoRA target modules {'q_prj'} not found in the base model")
        task = RayTaskError("LearnerActor.__init__", tb, e, actor_id="a1")
    assert describe(task) == ("ValueError: LoRA target modules {'q_prj'} not found in the base model", 2)
    died = ActorDiedError(task)  # what a call on an actor whose __init__ raised gives
    line, code = describe(died)
    assert code == 2 and line.startswith("ValueError: LoRA target modules"), line
    assert run_guarded("train", lambda: (_ for _ in ()).throw(died)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"rlcustom train: error: {line}"]


def test_boundary_lines_and_exit_codes(capsys):
    from rlcustom.boundary import run_guarded, split_flags
    from rlcustom.errors import DataError

    def raise_(e):
        def f():
            raise e
        return f

    assert run_guarded("x", raise_(DataError("p.jsonl:2: invalid JSON"))) == 2
    assert run_guarded("x", raise_(PermissionError(13, "Permission denied", "/root/out.json"))) == 2
    assert run_guarded("x", raise_(KeyError("unknown decoder 'vsa'"))) == 2
    assert run_guarded("x", raise_(AttributeError("'NoneType' object has no attribute 'x'"))) == 1
    assert run_guarded("x", raise_(KeyboardInterrupt())) == 130
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "rlcustom x: error: p.jsonl:2: invalid JSON"
    assert lines[1] == "rlcustom x: error: /root/out.json: Permission denied (--verbose for details)"
    assert lines[2] == "rlcustom x: error: unknown decoder 'vsa' (--verbose for details)"
    assert "probably a bug in rlcustom" in lines[3] and lines[4] == "rlcustom x: interrupted"
    assert run_guarded("x", raise_(DataError("bad")), verbose=True) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    assert split_flags(["train", "c.yaml", "--verbose", "--resume-force"]) == (["train", "c.yaml", "resume_force=true"], True)


def test_joining_a_cluster_passes_no_local_only_settings(monkeypatch):
    """A submitted job (RAY_ADDRESS set by Ray) with the demo config's cluster.num_cpus must not pass it to ray.init."""
    import ray

    from rlcustom.config import load_config
    from rlcustom.runtime.runtime import init_ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    cfg = load_config(DEMO)
    assert cfg.cluster.num_cpus is not None  # the case of the issue
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    init_ray(cfg.cluster)
    assert calls[-1]["address"] == "127.0.0.1:6379"
    assert not {"num_cpus", "num_gpus", "include_dashboard", "_node_ip_address"} & set(calls[-1])
    monkeypatch.delenv("RAY_ADDRESS")
    init_ray(cfg.cluster)
    assert calls[-1]["num_cpus"] == cfg.cluster.num_cpus  # a local Ray still gets it


def test_submit_dry_run_of_the_demo_config_passes_preflight(capsys):
    rc = main(["submit", DEMO, "steps=2", "--dry-run"])
    assert rc == 0, capsys.readouterr().err


def test_prepare_model_into_an_uncreatable_cache_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("RLCUSTOM_CACHE", str(tmp_path / "afile" / "cache"))
    rc, err = run_cli(capsys, ["prepare-model"])
    assert rc == 2 and err.splitlines() == [f"rlcustom prepare-model: error: model cache (RLCUSTOM_CACHE): "
                                            f"{tmp_path}/afile/cache cannot be created: {tmp_path}/afile is a file, "
                                            "not a directory"], err
    assert (tmp_path / "afile").read_text() == "x"
