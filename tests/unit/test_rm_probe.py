"""benchmarks/rm_probe_135m.py: the Bradley-Terry fit on frozen features, and that the exported
RewardModel scores texts exactly as the probe scored their features."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's benchmarks/ package
from benchmarks.rm_probe_135m import fit_bt, main, pair_diff  # noqa: E402


def test_fit_bt_meets_its_optimality_condition():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(200, 5, generator=g, dtype=torch.float64) + torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64)
    l2 = 0.1
    w = fit_bt(d, l2)
    # gradient of mean softplus(-d.w) + l2/2 |w|^2 is -mean(sigmoid(-d.w) d) + l2 w = 0 at the optimum
    grad = -(torch.sigmoid(-(d @ w))[:, None] * d).mean(0) + l2 * w
    assert grad.abs().max() < 1e-4  # L-BFGS stops at its default tolerances
    assert w[0] > 0.3 and w[1:].abs().max() < w[0]  # the informative feature gets the weight


def test_pair_diff_is_chosen_minus_rejected():
    f = torch.tensor([[3.0], [1.0], [0.0], [2.0]])  # chosen, rejected, chosen, rejected
    assert pair_diff(f).flatten().tolist() == [2.0, -2.0]


def test_exported_reward_model_reproduces_probe_scores(tiny_dir, tmp_path):
    from rlcustom.data.chat import format_prompt
    from rlcustom.data.loaders import load_preference_pairs
    from rlcustom.models.heads import RewardModel

    res = main(["--model", str(tiny_dir), "--out", str(tmp_path), "--train-pairs", "24", "--val-pairs", "6",
                "--layers", "1,2", "--export-layer", "best", "--export-dir", str(tmp_path / "rm")])
    probe = json.loads((tmp_path / "probe.json").read_text())
    layer = probe["exported"]["layer"]
    row = next(r for r in res["table"] if r["pool"] == "last" and r["layer"] == layer)
    assert row["cv_acc"] == max(r["cv_acc"] for r in res["table"] if r["pool"] == "last")
    rm = RewardModel.load(tmp_path / "rm")
    assert rm.num_layers == layer
    rows = list(load_preference_pairs("hh-rlhf", split="validation", limit=6))
    texts = [format_prompt(rm.tokenizer, r["messages"], use_chat_template=True) for r in rows]
    c = torch.tensor(rm.score_texts(texts, [r["chosen"] for r in rows]))
    j = torch.tensor(rm.score_texts(texts, [r["rejected"] for r in rows]))
    assert float((c > j).float().mean()) == pytest.approx(row["val_acc"])
