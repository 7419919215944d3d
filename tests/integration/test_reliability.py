"""Resume cannot load the wrong state, and nothing the user had is lost (issue 24).

One real 2-step LoRA PG run on the tiny model (checkpoints at steps 1 and 2) is the starting point of a
resume matrix run through the CLI: changed model, adapter rank, adapter on/off, learning rate, a missing
optimizer file, a truncated ``trainer_state.json`` or weights file. Each is refused before Ray starts with one
line naming the key or file, exit 2, and the checkpoint directory byte-identical afterwards. Then one real
continued run: a dangling ``latest`` falls back to step 2 and says so, a changed ``optim.lr`` accepted with
``--resume-force`` is the learner's lr of the next step, and ``keep_checkpoints: 1`` does not delete the
checkpoint the run resumed from. Last, a reward that calls ``sys.exit`` stops the run at the first step with
one line naming the reward and the sample (no step retries, no role rebuilds).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from rlcustom.cli import main

# The runs build their roles in this process (cluster.backend: inprocess): `test_reliability:exit_reward` is
# importable as pytest put this folder on sys.path, as a user's own reward module would be on the cluster.


def exit_reward(prompt: str, completion: str, *, response_ids=(), **kw) -> float:
    """A reward with a stray sys.exit() (the worst a user's reward can do to an actor)."""
    raise SystemExit(3)


def tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def write_config(path: Path, tiny_dir: Path, prompts: Path, out: Path) -> Path:
    lines = ["trainer: pg", f"model:\n  path: {tiny_dir}\n  lora: {{r: 4, alpha: 8.0, dropout: 0.0}}",
             f"output_dir: {out}", f"data: {{prompts: {prompts}, split: all}}", "steps: 2", "save_every: 1",
             "keep_checkpoints: 2", "seed: 1", "sampling: {max_new_tokens: 6, n: 2}", "engine: hf",
             "algo: {prompts_per_step: 2}", "reward: {spec: length_tokens}",
             "optim: {lr: 0.001, micro_batch_size: 4}", "tracking: {mode: offline}",
             "roles:\n  learner: {cpus: 0.5}\n  rollout: {cpus: 0.5}\n  reward: {cpus: 0.5}",
             "cluster: {backend: inprocess}"]  # the roles in this process: resume is the trainer's logic
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dir):
    """A finished 2-step run: (config path, its output dir)."""
    from rlcustom.config import load_config
    from rlcustom.trainers import run_trainer

    root = tmp_path_factory.mktemp("rel")
    prompts = root / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in ("Say hi.", "Name a color.", "Count.")))
    cfg_path = write_config(root / "run.yaml", tiny_dir, prompts, root / "run")
    run_trainer(load_config(cfg_path))
    ck = root / "run" / "checkpoints"
    assert sorted(p.name for p in ck.glob("step_*")) == ["step_000001", "step_000002"]
    return cfg_path, root / "run"


@pytest.fixture
def run_copy(trained, tmp_path):
    """The trained run copied (each case may damage its copy), and the config pointing at the copy."""
    cfg_path, out = trained
    dst = tmp_path / "run"
    shutil.copytree(out, dst)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(cfg_path.read_text().replace(f"output_dir: {out}", f"output_dir: {dst}"))
    return cfg, dst


def _truncate(p: Path, n: int) -> None:
    p.write_bytes(p.read_bytes()[:n])


LAST = "checkpoints/step_000002"
MATRIX = {
    # id: (damage to the copy, extra CLI args, text of the one line)
    "changed-model": (None, ["model.path={other}"], "was trained with model.path="),
    "changed-model-same-path": ("swap-model", [], "was trained with model.fingerprint="),
    "changed-adapter-rank": (None, ["model.lora.r=8"], "holds a LoRA adapter of rank 4, model.lora.r is 8"),
    "changed-adapter-rank-forced": (None, ["model.lora.r=8", "--resume-force"], "this cannot be forced"),
    "adapter-removed": (None, ["model.lora=null"], "holds a LoRA adapter but model.lora is not set"),
    "changed-lr": (None, ["optim.lr=0.002"], "was trained with optim.lr=0.001, this config has optim.lr=0.002"),
    "changed-learner-ranks": (None, ["roles.learner.replicas=2"], "written by 1 learner rank(s) with ZeRO-2"),
    "missing-optimizer-file": (lambda d: (d / LAST / "learner" / "optim_rank0.pt").unlink(), [],
                               "optim_rank0.pt is missing"),
    "corrupt-optimizer-file": (lambda d: _truncate(d / LAST / "learner" / "optim_rank0.pt", 500), [],
                               "optim_rank0.pt is corrupt or truncated"),
    "corrupt-trainer-state": (lambda d: _truncate(d / LAST / "trainer_state.json", 40), [],
                              "trainer_state.json is corrupt"),
    "truncated-weights": (lambda d: _truncate(d / LAST / "learner" / "model.safetensors", 2000), [], "truncated"),
    "resume-path-not-a-checkpoint": (None, ["resume={out}"], "is not a checkpoint (no trainer_state.json)"),
}


@pytest.mark.parametrize("case", list(MATRIX))
def test_resume_matrix_refused_in_one_line_and_checkpoints_unchanged(case, run_copy, stopping_tiny_dir, tiny_dir,
                                                                     capsys, monkeypatch, tmp_path):
    cfg, out = run_copy
    damage, extra, expected = MATRIX[case]
    if damage == "swap-model":  # same path, other weights of the same shapes
        moved = tmp_path / "model"
        shutil.copytree(stopping_tiny_dir, moved)
        cfg.write_text(cfg.read_text().replace(f"path: {tiny_dir}", f"path: {moved}"))
        state = out / LAST / "trainer_state.json"
        s = json.loads(state.read_text())
        s["identity"]["model.path"] = str(moved)  # as if trained from this path before its weights changed
        state.write_text(json.dumps(s))
    elif damage is not None:
        damage(out)
    before = tree_hash(out)
    argv = ["train", str(cfg)] + [a.format(other=stopping_tiny_dir, out=out) for a in extra] + ["steps=3"]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert tree_hash(out) == before


def test_dangling_latest_falls_back_and_forced_lr_is_applied_and_resumed_checkpoint_kept(run_copy, capsys):
    from rlcustom.config import load_config
    from rlcustom.trainers import run_trainer

    cfg, out = run_copy
    ck = out / "checkpoints"
    (ck / "latest").write_text("step_000009\n")  # a pointer to a step that is not there
    step2 = tree_hash(ck / "step_000002")
    res = run_trainer(load_config(cfg, ["steps=3", "keep_checkpoints=1", "optim.lr=0.002", "resume_force=true"]))
    said = capsys.readouterr().out
    assert "points to a missing checkpoint (step_000009); using the newest complete checkpoint" in said
    assert f"resumed from {ck / 'step_000002'} at step 2" in said
    assert "accepting a changed optim.lr: 0.001 -> 0.002" in said
    assert len(res["history"]) == 1 and res["history"][0]["train/lr"] == pytest.approx(0.002, rel=1e-9)
    names = sorted(p.name for p in ck.glob("step_*"))
    assert names == ["step_000002", "step_000003"]  # step 1 pruned; the resumed-from one kept despite keep=1
    assert tree_hash(ck / "step_000002") == step2 and (ck / "latest").read_text().strip() == "step_000003"
    state = json.loads((ck / "step_000003" / "trainer_state.json").read_text())
    assert state["identity"]["optim.lr"] == 0.002 and state["identity"]["model.fingerprint"]


def test_reward_calling_sys_exit_is_one_line_at_the_first_step(trained, tmp_path, capsys):
    cfg_path, _ = trained
    cfg = tmp_path / "x.yaml"
    cfg.write_text(cfg_path.read_text().replace("spec: length_tokens", "spec: 'test_reliability:exit_reward'"))
    rc = main(["train", str(cfg), f"output_dir={tmp_path / 'x'}", "steps=1"])
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.strip().splitlines() if not ln.startswith("pg:")]  # the progress bar is stderr's
    assert rc == 2 and len(lines) == 1, cap.err
    assert lines[0].startswith("rlcustom train: error: reward 'test_reliability:exit_reward' failed on sample 0: "
                               "SystemExit: 3 (prompt '"), lines
    assert "actor died" not in cap.out and "restarting all roles" not in cap.out  # no retries, no rebuilds
