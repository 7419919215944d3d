"""The shared critic's value head (rlcustom.models.value_head): one forward gives the LM's logits and the values
a separate ValueModel with the same head computes; the joint objective is L_policy + vf_coef * L_value."""
from __future__ import annotations

import copy

import pytest
import torch

from rlcustom.models.forward import response_logits
from rlcustom.models.packing import PACKED
from rlcustom.models.value_head import VALUE_HEAD, add_value_head, response_logits_and_values

from test_packing import ragged_batch


@pytest.fixture(scope="module")
def lm_with_head(tiny):
    model = copy.deepcopy(tiny[0])
    head = add_value_head(model)
    assert float(head.weight.detach().abs().sum()) == 0.0  # a fresh critic predicts 0
    torch.manual_seed(0)
    with torch.no_grad():
        head.weight.normal_(0, 0.5)
        head.bias.fill_(0.25)
    return model


@pytest.mark.parametrize("packed", [False, True])
def test_one_forward_matches_lm_and_value_model(lm_with_head, packed):
    from rlcustom.models.heads import ValueModel, response_values

    model = lm_with_head
    b = ragged_batch(seed=3) | ({PACKED: True} if packed else {})
    vm = ValueModel.from_backbone_of(model)
    vm.head.load_state_dict(getattr(model, VALUE_HEAD).state_dict())
    with torch.no_grad():
        logits, values = response_logits_and_values(model, b)
        want_logits, want_values = response_logits(model, b), response_values(vm, b)
    m = b["response_mask"].bool()
    assert (logits - want_logits)[m].abs().max() <= 1e-5
    assert values.abs().max() > 0.1 and (values - want_values).abs().max() <= 1e-5
    assert (values[~m] == 0).all()


def test_policy_value_is_policy_plus_weighted_value_loss(lm_with_head):
    import rlcustom.objectives  # noqa: F401 - registers the objectives
    from rlcustom.algos.ppo import ppo_value_loss
    from rlcustom.registry import OBJECTIVES

    model = lm_with_head
    b = ragged_batch(seed=4)
    g = torch.Generator().manual_seed(1)
    b |= {"returns": torch.randn(b["response_mask"].shape, generator=g),
          "old_values": torch.randn(b["response_mask"].shape, generator=g) * 0.1}
    with torch.no_grad():
        joint, st = OBJECTIVES.get("policy_value")(model, b, policy="ppo_clip", vf_coef=0.3, value_clip_eps=0.2)
        policy, _ = OBJECTIVES.get("ppo_clip")(model, b)
        _, values = response_logits_and_values(model, b)
        value, _ = ppo_value_loss(values, b["old_values"], b["returns"], b["response_mask"], clip_eps=0.2)
    assert abs(float(joint) - (float(policy) + 0.3 * float(value))) <= 1e-5
    assert abs(st["value/loss"] - float(value)) <= 1e-6 and "value/vf_clipfrac" in st
