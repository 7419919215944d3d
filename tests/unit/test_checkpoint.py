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


@pytest.mark.parametrize("pointer,why", [("step_000009\n", "points to a missing checkpoint (step_000009)"),
                                         (None, "is missing"), ("\x00\x01garbage/..\n", "is corrupt"),
                                         ("step_000003\n", "points to an incomplete checkpoint (step_000003")])
def test_bad_latest_falls_back_to_newest_complete_and_says_so(tmp_path, pointer, why):
    said = []
    cm = CheckpointManager(tmp_path, keep=5, note=said.append)
    for s in (1, 2):
        cm.save(s, {"step": s}, write_weights(f"v{s}"))
    (tmp_path / "checkpoints" / "step_000003").mkdir()  # a folder without trainer_state.json: never complete
    ptr = tmp_path / "checkpoints" / "latest"
    if pointer is None:
        ptr.unlink()
    else:
        ptr.write_text(pointer)
    assert cm.latest().name == "step_000002"
    assert len(said) == 1 and why in said[0] and said[0].endswith("step_000002"), said


def test_prune_never_deletes_the_resumed_checkpoint_nor_counts_incomplete_ones(tmp_path):
    cm = CheckpointManager(tmp_path, keep=1, note=lambda m: None)
    for s in (1, 2):
        CheckpointManager(tmp_path, keep=5).save(s, {"step": s}, write_weights(f"v{s}"))
    (tmp_path / "checkpoints" / "step_000002" / "trainer_state.json").write_text('{"ste')  # corrupt: incomplete
    (tmp_path / "checkpoints" / "latest").write_text("step_000001\n")
    assert cm.latest().name == "step_000001"
    cm.load_state(cm.latest())  # this run resumes from step 1
    cm.save(3, {"step": 3}, write_weights("v3"))
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert names == ["step_000001", "step_000002", "step_000003"]  # resumed-from kept, incomplete left alone
    cm.save(4, {"step": 4}, write_weights("v4"))
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert names == ["step_000001", "step_000002", "step_000004"]  # keep=1 still prunes what it may
