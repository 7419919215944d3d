"""The pipeline trainer's stages, its Step, a one-override batch filter, and the prompt sampler, without Ray."""
import random
from types import SimpleNamespace

import torch

from rlcustom.config import load_config
from rlcustom.data.sampler import PromptSampler
from rlcustom.engines.base import Rollouts
from rlcustom.trainers.pipeline import PipelineTrainer, Step, varied_groups


def rollouts(scores_by_prompt):
    """Samples of each prompt (prompt i answered len(scores_by_prompt[i]) times); response j has j+1 tokens."""
    p_ids, r_ids, idx = [], [], []
    for i, group in enumerate(scores_by_prompt):
        for _ in group:
            p_ids.append([10 + i, 11])
            r_ids.append(list(range(1, len(r_ids) % 3 + 2)))
            idx.append(i)
    scores = torch.tensor([s for g in scores_by_prompt for s in g], dtype=torch.float32)
    return Rollouts(p_ids, r_ids, [[0.0] * len(r) for r in r_ids], ["stop"] * len(r_ids), idx), scores


def test_varied_groups_keeps_groups_whose_scores_differ():
    # prompt 0: 1, 1 (all equal: no signal); prompt 1: 0, 2; prompt 2: 5 (singleton: equal); prompt 3: 3, 3, 4
    scores = torch.tensor([1.0, 1.0, 0.0, 2.0, 5.0, 3.0, 3.0, 4.0])
    assert varied_groups(scores, [0, 0, 1, 1, 2, 3, 3, 3]) == [2, 3, 5, 6, 7]


def test_step_select_subsets_every_per_row_field():
    ro, scores = rollouts([[1.0, 1.0], [0.0, 2.0]])
    s = Step(ro=ro, batch=ro.padded(0), scores=scores)
    s.values = torch.arange(4.0)[:, None].expand(4, 3).clone()
    s.rows.append("values")
    s.select([2, 3])
    assert s.ro.prompt_index == [1, 1] and s.ro.response_ids == ro.response_ids[2:]
    assert s.scores.tolist() == [0.0, 2.0] and s.values[:, 0].tolist() == [2.0, 3.0]
    assert all(v.shape[0] == 2 for v in s.batch.values() if isinstance(v, torch.Tensor) and v.dim() > 0)
    torch.testing.assert_close(s.batch["input_ids"], ro.padded(0)["input_ids"][2:])


class Recorder(PipelineTrainer):
    """Stages that record what they saw; generate/score stand in for the rollout and reward roles."""

    def generate(self, s):
        self.calls.append("generate")
        s.ro, s.scores = rollouts([[1.0, 1.0], [0.0, 2.0], [3.0, 5.0]])
        s.batch = s.ro.padded(0)

    def score(self, s):
        self.calls.append("score")

    def advantages(self, s):
        self.calls.append("advantages")
        s.stats["rows"] = float(len(s.ro))
        s.stats["mean_score"] = float(s.scores.mean())

    def update(self, s):
        self.calls.append("update")

    def sync(self, s):
        self.calls.append("sync")


class DropUniform(Recorder):
    def filter(self, s: Step) -> None:  # the docs' example: DAPO's dynamic sampling, one override
        s.select(varied_groups(s.scores, s.ro.prompt_index))


def trainer(cls, tmp_path):
    t = cls(load_config(None, [f"output_dir={tmp_path}", "tracking.mode=disabled"]))
    t.calls = []
    return t


def test_stages_run_in_order_and_a_filter_is_one_override(tmp_path):
    plain = trainer(Recorder, tmp_path / "a")
    st = plain.step()
    assert plain.calls == ["generate", "score", "advantages", "update", "sync"]
    assert st["rows"] == 6.0 and st["mean_score"] == (1 + 1 + 0 + 2 + 3 + 5) / 6
    assert {"timing/generate_s", "timing/score_s", "timing/train_s"} <= set(st)
    filtered = trainer(DropUniform, tmp_path / "b").step()
    assert filtered["rows"] == 4.0 and filtered["mean_score"] == (0 + 2 + 3 + 5) / 4  # prompt 0's group dropped


def test_sampler_order_position_and_resume_match_the_seeded_stream():
    ps = SimpleNamespace(ids=[[i] for i in range(5)])
    order = list(range(5))
    random.Random(7).shuffle(order)
    a = PromptSampler(ps, seed=7)
    assert a.take(3) == [[order[0]], [order[1]], [order[2]]]
    a.skip(3)  # (an L3M task step)
    assert a.take(2) == [[order[6 % 5]], [order[7 % 5]]] and a.state_dict() == {"position": 8}
    b = PromptSampler(ps, seed=7)
    b.load_state_dict(a.state_dict())
    assert b.take(4) == a.take(4)  # a resumed sampler draws what the uninterrupted one draws
