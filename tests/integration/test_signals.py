"""SIGTERM / SIGINT to a training driver: the step finishes, a checkpoint is written, W&B is finished,
the exit code is non-zero, and the same command resumes from that checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rlcustom.tracking import read_offline_run


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_checkpoints_and_finishes(sig, tiny_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in ["Say hi.", "Name a color."]))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlcustom.cli", "train", "--", "trainer=pg", f"model.path={tiny_dir}",
           f"output_dir={out}", f"data.prompts={prompts}", "data.split=all", "steps=500", "engine=hf",
           "sampling.max_new_tokens=4", "algo.prompts_per_step=2", "reward.spec=length_tokens",
           "tracking.mode=offline", "roles.learner.cpus=0.5", "roles.learner.zero_stage=0",
           "roles.rollout.cpus=0.5", "roles.reward.cpus=0.5", "cluster.num_cpus=2"]
    err = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 240
        while "pg:" not in (tmp_path / "stderr.txt").read_text() or " 2/500" not in (tmp_path / "stderr.txt").read_text():
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-2000:]
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.5)
        proc.send_signal(sig)
        stdout, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode != 0
    assert f"stopped by {sig.name}" in stderr
    latest = (out / "checkpoints" / "latest").read_text().strip()
    state = json.loads((out / "checkpoints" / latest / "trainer_state.json").read_text())
    assert state["step"] >= 2 and (out / "checkpoints" / latest / "learner").is_dir()
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    assert read_offline_run(run_dir)["exit_code"] not in (None, 0)  # finished, as failed
