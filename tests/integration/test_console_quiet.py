"""CI log check: a real (tiny) trainer run through the CLI prints no library warnings or actor log lines,
shows named metrics on its progress bar, and ends with the run directory, W&B and the PNG of its curves;
``--verbose`` brings the actors' lines back."""
import json
import os
import re
import subprocess
import sys

import pytest

# lines that only library chatter produces: Ray's logger and actor prefixes, DeepSpeed, pip, transformers
NOISE = re.compile(r"(^|\s)(WARNING|Warning:|UserWarning|FutureWarning|DeprecationWarning)\b"
                   r"|\(\w+ pid=\d+\)|\[WARNING\]|real_accelerator|DeepSpeed|Token authentication"
                   r"|Started a local Ray instance|Location .* is ignored|transformers", re.M)


def run(tiny_dir, tmp_path, *extra):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in ["Say hi.", "Name a color."]))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlcustom.cli", *extra, "train", "--", "trainer=pg", f"model.path={tiny_dir}",
           f"output_dir={out}", f"data.prompts={prompts}", "data.split=all", "steps=2", "engine=hf",
           "sampling.max_new_tokens=4", "algo.prompts_per_step=2", "reward.spec=length_tokens",
           "tracking.mode=offline", "roles.learner.cpus=0.5", "roles.learner.zero_stage=0",
           "roles.rollout.cpus=0.5", "roles.reward.cpus=0.5", "cluster.num_cpus=2"]
    env = {k: v for k, v in os.environ.items() if k not in ("RLCUSTOM_VERBOSE", "PYTHONWARNINGS")}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env | {"PYTHONUNBUFFERED": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return out, r.stdout, r.stderr.replace("\r", "\n")


@pytest.mark.slow
def test_a_run_is_quiet_and_ends_with_its_files(tiny_dir, tmp_path):
    out, stdout, stderr = run(tiny_dir, tmp_path)
    noise = [ln for ln in (stdout + "\n" + stderr).splitlines() if NOISE.search(ln)]
    assert not noise, "library lines on the console:\n" + "\n".join(noise[:20])
    assert re.search(r"pg: .*reward [-\d.e]+ \| .*step [\d.]+ s \(", stderr), stderr[-1500:]  # named metrics
    assert "mean=" not in stderr and "seq_mean=" not in stderr
    assert f"run directory: {out}" in stdout and f"plot: {out / 'curves.png'}" in stdout and "W&B: " in stdout
    assert (out / "curves.png").stat().st_size > 10_000
    log = (out / "console.log").read_text()
    assert "pid=" in log or "worker-" in log  # the actors' output went to the run's log file instead


@pytest.mark.slow
def test_verbose_shows_the_actors_lines(tiny_dir, tmp_path):
    out, stdout, stderr = run(tiny_dir, tmp_path, "--verbose")
    assert re.search(r"\((RolloutActor|SyncedLearner|RewardActor)\w* pid=\d+\)", stdout + stderr), stderr[-2000:]
    assert f"plot: {out / 'curves.png'}" in stdout
