"""W&B offline runs hold what was logged; secrets never reach a written file; finish() on every exit."""
import os

import pytest

from rlcustom.config import TrackingConfig
from rlcustom.tracking import Tracker, read_offline_run, redact

SECRET = "test-secret-5c2f0d9a1b7e"


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("WANDB_MODE", "offline")


def files_containing(root, needle: str) -> list[str]:
    hits = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                if needle.encode() in fh.read():
                    hits.append(p)
    return hits


def test_offline_run_holds_metrics_table_and_no_secret(tmp_path, secret_env):
    cfg = TrackingConfig(mode="offline", name="t")
    with Tracker(cfg, tmp_path, config={"lr": 0.1, "reward": {"api_key_env": "X", "token": SECRET}}) as tr:
        for step in (1, 2, 3):
            tr.log({"reward/mean": 0.1 * step, "train/loss": 1.0 / step}, step=step)
        tr.log_samples(3, ["p1", f"prompt with {SECRET}"], ["c1", "c2"], [0.5, 0.7])
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    run = read_offline_run(run_dir)
    rows = [h for h in run["history"] if "reward/mean" in h]
    assert [round(h["reward/mean"], 6) for h in rows] == [0.1, 0.2, 0.3]
    assert run["config"]["lr"] == 0.1 and run["config"]["reward"]["token"] == "***"
    assert len(run["tables"]) == 1 and '"c2"' in open(run["tables"][0]).read()
    assert files_containing(tmp_path, SECRET) == []


def test_finish_runs_when_the_body_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    tr = Tracker(TrackingConfig(mode="offline"), tmp_path)
    with pytest.raises(RuntimeError):
        with tr:
            tr.log({"x": 1.0}, step=1)
            raise RuntimeError("boom")
    assert tr.run is None  # finished
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert read_offline_run(run_dir)["history"][0]["x"] == 1.0


def test_redact_scrubs_secret_keys_and_values(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    out = redact({"api_key": "k", "nested": {"password": "p", "note": "uses hf_abcdefghijklmnop"},
                  "tokenizers_parallelism": "false"})
    assert out == {"api_key": "***", "nested": {"password": "***", "note": "uses ***"},
                   "tokenizers_parallelism": "false"}
