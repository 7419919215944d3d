"""Atomic checkpoints: a write that fails part-way leaves the previous checkpoint and `latest` intact."""
import pytest

from rlcustom.trainers.checkpoint import CheckpointManager


def write_weights(tag):
    def write(d):
        (d / "learner").mkdir()
        (d / "learner" / "model.safetensors").write_text(tag)
    return write


def test_failed_write_keeps_previous(tmp_path):
    cm = CheckpointManager(tmp_path, keep=2)
    good = cm.save(1, {"step": 1}, write_weights("v1"))

    def crash(d):
        (d / "learner").mkdir()
        (d / "learner" / "model.safetensors").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        cm.save(2, {"step": 2}, crash)
    assert cm.latest() == good and cm.load_state(good)["step"] == 1
    assert (good / "learner" / "model.safetensors").read_text() == "v1"
    assert not list(tmp_path.joinpath("checkpoints").glob(".tmp-*"))  # no half checkpoint left behind


def test_keep_prunes_oldest_and_latest_moves(tmp_path):
    cm = CheckpointManager(tmp_path, keep=2)
    for s in (1, 2, 3):
        cm.save(s, {"step": s}, write_weights(f"v{s}"))
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert names == ["step_000002", "step_000003"] and cm.latest().name == "step_000003"
