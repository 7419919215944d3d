"""The demo's config (a verifiable task, GRPO) and its report pieces; the demo itself runs in `make demo`."""
from pathlib import Path

from rlcustom.config import load_config
from rlcustom.data.loaders import load_prompts
from rlcustom.eval.demo import wants_accuracy
from rlcustom.eval.heldout import plot_run

ROOT = Path(__file__).resolve().parents[2]


def test_demo_is_a_verifiable_task_with_a_held_out_split():
    cfg = load_config(str(ROOT / "configs" / "demo.yaml"), [])
    assert cfg.data.prompts.startswith("task:") and cfg.algo.advantage == "grpo" and wants_accuracy(cfg)
    held = load_prompts(cfg.data.prompts, split="validation", val_fraction=cfg.data.val_fraction, seed=cfg.data.split_seed)
    train = load_prompts(cfg.data.prompts, split="train", val_fraction=cfg.data.val_fraction, seed=cfg.data.split_seed)
    assert len(held) >= 40 and not set(held["prompt"]) & set(train["prompt"])
    old = load_config(str(ROOT / "configs" / "examples" / "ppo_length.yaml"), [])
    assert old.trainer == "ppo" and not wants_accuracy(old)


def test_plot_writes_a_png(tmp_path):
    rows = [{"step": k, "reward/mean": k / 10} for k in range(1, 6)]
    png = plot_run(rows, tmp_path / "p.png", marks={"before": (0, 0.1, 0.05), "after": (5, 0.6, 0.05)})
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
