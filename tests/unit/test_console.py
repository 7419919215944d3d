"""The console's pieces: the progress bar's named metrics, the run footer, ``rlcustom plot``."""
import json

import pytest

from rlcustom.console import run_footer, step_postfix
from rlcustom.errors import RLCustomError


def test_step_postfix_names_metrics_and_phase_times():
    stats = {"reward/mean": 0.41234, "kl/seq_mean": 0.0131, "train/loss": -0.00026, "rollout/response_len": 12.0,
             "timing/generate_s": 1.2, "timing/train_s": 1.5, "timing/sync_s": 0.25, "timing/score_s": 0.05}
    assert step_postfix(stats) == ("reward 0.412 | KL 0.0131 | loss -0.00026 | "
                                   "step 3.0 s (train 1.5, generate 1.2, sync 0.2, score 0.1)")


def test_step_postfix_falls_back_and_uses_a_measured_step_time():
    s = step_postfix({"train/dpo_loss": 0.69, "train/pair_accuracy": 0.5, "timing/step_s": 4.0, "timing/train_s": 3.0})
    assert s == "loss 0.69 | acc 0.5 | step 4.0 s (train 3.0)"
    assert step_postfix({}) == ""


def test_run_footer_names_run_dir_wandb_and_png(tmp_path):
    (tmp_path / "wandb" / "offline-run-20260101_000000-abc").mkdir(parents=True)
    text = run_footer(tmp_path, png=tmp_path / "curves.png")
    assert f"run directory: {tmp_path}" in text and f"plot: {tmp_path / 'curves.png'}" in text
    assert f"W&B: {tmp_path}/wandb/offline-run-20260101_000000-abc" in text
    assert "W&B: online run x" in run_footer(tmp_path, wandb="W&B: online run x (project p)")


def test_plot_command_writes_png_from_metrics_jsonl(tmp_path):
    from PIL import Image

    from rlcustom.cli import main

    rows = [{"step": k, "reward/mean": 0.1 * k, "kl/seq_mean": 0.01 * k, "train/loss": 1.0 / k,
             "timing/generate_s": 1.0, "timing/train_s": 2.0} for k in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(["plot", str(tmp_path)]) == 0
    with Image.open(tmp_path / "curves.png") as im:
        assert im.format == "PNG" and im.size[0] > 500  # 2 x 2 panels


def test_curve_panels_pick_the_logged_metrics():
    from rlcustom.eval.run_plot import curve_panels

    rows = [{"step": 1, "train/dpo_loss": 0.69, "train/pair_accuracy": 0.5},
            {"step": 2, "train/dpo_loss": 0.6, "train/pair_accuracy": float("nan")}]
    panels = curve_panels(rows)
    assert [(p.title, list(p.series)) for p in panels] == [("loss", ["train/dpo_loss"])]  # no reward, KL, timing
    assert panels[0].series["train/dpo_loss"] == [(1.0, 0.69), (2.0, 0.6)]


def test_plot_errors_are_one_line(tmp_path, capsys):
    from rlcustom.cli import main

    assert main(["plot", str(tmp_path)]) == 2
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{broken\n')
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no metrics.jsonl" in err[0] and f"{tmp_path / 'metrics.jsonl'}:2:" in err[1]
    with pytest.raises(RLCustomError, match="none of reward"):
        from rlcustom.eval.run_plot import plot_run

        plot_run(tmp_path, rows=[{"step": 1, "other": 1.0}])


@pytest.fixture
def clean_logging():
    """Give back the environment, loggers and warning filters the console code changes."""
    import logging
    import os
    import warnings

    from rlcustom import console

    env = dict(os.environ)
    state = {n: (logging.getLogger(n).level, logging.getLogger(n).propagate, list(logging.getLogger(n).handlers))
             for n in console.NOISY_LOGGERS}
    root_handlers = list(logging.getLogger().handlers)
    logging.captureWarnings(False)  # from a clean start, whatever ran before
    with warnings.catch_warnings():
        yield
    os.environ.clear()
    os.environ.update(env)
    for n, (level, prop, handlers) in state.items():
        lg = logging.getLogger(n)
        lg.setLevel(level), setattr(lg, "propagate", prop)
        lg.handlers[:] = handlers
    logging.getLogger().handlers[:] = root_handlers
    logging.captureWarnings(False)


def test_library_warnings_go_to_the_run_log_not_the_console(tmp_path, capfd, clean_logging, monkeypatch):
    import logging
    import warnings

    from rlcustom import console

    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    console.quiet_libraries()
    path = console.log_to_file(tmp_path / "console.log")
    logging.getLogger("DeepSpeed").warning("accelerator noise")
    logging.getLogger("ray").warning("token auth noise")
    warnings.warn("python noise", UserWarning)
    err = capfd.readouterr().err
    assert "noise" not in err
    consoles = [h for h in logging.getLogger("ray").handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    assert consoles and all(h.level == logging.ERROR for h in consoles)  # Ray's errors still reach the console
    text = path.read_text()
    assert "accelerator noise" in text and "token auth noise" in text and "python noise" in text
