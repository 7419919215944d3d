"""The docs' extending examples (examples/extending/, one file each) work as written."""
import importlib.util
from pathlib import Path

import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "extending"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_new_estimator_registers_and_computes_the_hand_case():
    load("signed_advantage")
    from rlcustom.registry import ADV_ESTIMATORS

    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1]])
    # group 0: scores 1, 3 (mean 2) -> -1, +1; group 1: 2, 2 -> 0, 0
    adv, ret = ADV_ESTIMATORS.get("signed")(token_rewards=None, values=None, mask=mask,
                                             scores=torch.tensor([1.0, 3.0, 2.0, 2.0]),
                                             group_ids=torch.tensor([0, 0, 1, 1]), gamma=1.0, lam=1.0)
    assert ret is None and adv.tolist() == [[-1.0, -1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]


def test_new_filter_trainer_registers_and_drops_uniform_groups():
    mod = load("drop_uniform_groups")
    from rlcustom.config import load_config
    from rlcustom.engines.base import Rollouts
    from rlcustom.registry import TRAINERS
    from rlcustom.trainers.pipeline import Step

    assert TRAINERS.get("ppo_varied") is mod.VariedPPOTrainer
    cfg = load_config(None, ["trainer=ppo_varied", "algo.advantage=grpo", "tracking.mode=disabled"])
    ro = Rollouts([[1], [1], [2], [2]], [[5], [6], [7], [8]], [[0.0]] * 4, ["stop"] * 4, [0, 0, 1, 1])
    s = Step(ro=ro, batch=ro.padded(0), scores=torch.tensor([1.0, 1.0, 0.0, 4.0]))
    mod.VariedPPOTrainer(cfg).filter(s)
    assert s.ro.response_ids == [[7], [8]] and s.scores.tolist() == [0.0, 4.0]
