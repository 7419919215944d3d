"""metrics.jsonl: one JSON object per step, appended as logged, continued on resume."""
import json

from rlcustom.metrics_record import MetricsRecord, read_metrics


def test_appends_one_line_per_step_and_flushes(tmp_path):
    rec = MetricsRecord(tmp_path)
    rec.log({"reward/mean": 0.5, "train/loss": 1.0}, step=1)
    # readable before the run ends (flushed per step)
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "reward/mean": 0.5, "train/loss": 1.0}
    rec.log({"reward/mean": float("nan")}, step=2)
    assert read_metrics(tmp_path) == [{"step": 1, "reward/mean": 0.5, "train/loss": 1.0},
                                      {"step": 2, "reward/mean": "nan"}]


def test_resume_drops_steps_after_the_checkpoint(tmp_path):
    rec = MetricsRecord(tmp_path)
    for k in range(1, 6):
        rec.log({"x": float(k)}, step=k)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "x": ')  # torn by a crash
    resumed = MetricsRecord(tmp_path)  # resumed from the step-3 checkpoint: the next step logged is 4
    resumed.log({"x": 40.0}, step=4)
    assert [(r["step"], r["x"]) for r in read_metrics(tmp_path)] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]


def test_fresh_run_in_old_dir_starts_over(tmp_path):
    MetricsRecord(tmp_path).log({"x": 1.0}, step=1)
    MetricsRecord(tmp_path).log({"x": 2.0}, step=1)
    assert read_metrics(tmp_path) == [{"step": 1, "x": 2.0}]
