"""DeRa logit mixing (Eq. 9, Appendix B) and weight interpolation (Appendix D.5)."""
from __future__ import annotations

import math

import pytest
import torch

from rlcustom.algos.dera import dera_logits, interpolate_state_dicts

SFT = torch.tensor([[1.0, 2.0, 3.0]])
AL = torch.tensor([[3.0, 2.0, 1.0]])


def _close(a, b):
    torch.testing.assert_close(a, torch.as_tensor(b, dtype=a.dtype), rtol=0, atol=1e-6)


def test_single_model_hand_values():
    _close(dera_logits(SFT, AL, 0.25), [[1.5, 2.0, 2.5]])  # 0.75*sft + 0.25*al
    _close(dera_logits(SFT, AL, 2.0), [[5.0, 2.0, -1.0]])  # -sft + 2*al (extrapolation)
    _close(dera_logits(SFT, AL, -1.0), [[-1.0, 2.0, 5.0]])  # 2*sft - al
    _close(dera_logits(SFT, AL, torch.tensor(0.5)), [[2.0, 2.0, 2.0]])


def test_endpoints_exact():
    sft = torch.randn(2, 7)
    al = torch.randn(2, 7)
    assert torch.equal(dera_logits(sft, al, 0.0), sft)
    assert torch.equal(dera_logits(sft, al, 1.0), al)
    assert torch.equal(dera_logits(sft, al, 0), sft)


def test_multi_model():
    al2 = torch.tensor([[0.0, 0.0, 6.0]])
    # (1 - 0.75)*[1,2,3] + 0.5*[3,2,1] + 0.25*[0,0,6]
    _close(dera_logits(SFT, [AL, al2], [0.5, 0.25]), [[1.75, 1.5, 2.75]])
    # (1 - 3)*sft + 2*al + 1*al2
    _close(dera_logits(SFT, (AL, al2), (2.0, 1.0)), [[4.0, 0.0, 2.0]])


def test_per_row_lambda():
    sft = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    al = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    _close(dera_logits(sft, al, torch.tensor([0.0, 2.0])), [[1.0, 2.0, 3.0], [5.0, 2.0, -1.0]])


def test_geometric_mixture():
    """softmax of the mixed logits = pi_sft^(1-lam) pi_al^lam renormalised (Eq. 6)."""
    p_sft = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    p_al = torch.tensor([[0.1, 0.6, 0.3]], dtype=torch.float64)
    lam = 1.5
    mixed = torch.softmax(dera_logits(torch.log(p_sft) + 4.0, torch.log(p_al) - 2.0, lam), -1)
    un = p_sft ** (1 - lam) * p_al**lam
    torch.testing.assert_close(mixed, un / un.sum())


def test_neg_inf_stays_disallowed():
    sft = torch.tensor([[0.0, float("-inf"), 1.0]])
    al = torch.tensor([[0.0, 0.5, 1.0]])
    out = dera_logits(sft, al, 2.0)  # (1-2)*(-inf) would be +inf
    assert out[0, 1].item() == float("-inf")
    assert torch.isfinite(out[0, [0, 2]]).all()
    assert torch.softmax(out, -1)[0, 1].item() == 0.0


def test_validation():
    with pytest.raises(ValueError):
        dera_logits(SFT, [AL, AL], [0.5])  # lengths differ
    with pytest.raises(ValueError):
        dera_logits(SFT, [], [])
    with pytest.raises(ValueError):
        dera_logits(SFT, AL, float("nan"))
    with pytest.raises(ValueError):
        dera_logits(SFT, AL, float("inf"))
    with pytest.raises(ValueError):
        dera_logits(SFT, [AL], [math.inf])
    with pytest.raises(ValueError):
        dera_logits(SFT, AL, [0.5])  # one model, a list of lam
    with pytest.raises(ValueError):
        dera_logits(SFT, [AL], 0.5)  # list of models, scalar lam
    with pytest.raises(ValueError):
        dera_logits(SFT, torch.zeros(1, 4), 0.5)  # shape mismatch
    with pytest.raises(ValueError):
        dera_logits(SFT, AL, "0.5")


def test_interpolate_state_dicts():
    sft = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0]), "step": torch.tensor(5)}
    al = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor([1.0]), "step": torch.tensor(7)}
    out = interpolate_state_dicts(sft, al, 0.25)
    _close(out["w"], [1.5, 3.0])  # 0.25*[3,6] + 0.75*[1,2]
    _close(out["b"], [0.25])
    assert out["step"].item() == 5 and out["step"].dtype == torch.int64  # copied from sft
    assert out["step"] is not sft["step"]
    assert list(out) == ["w", "b", "step"]
    assert torch.equal(interpolate_state_dicts(sft, al, 0.0)["w"], sft["w"])
    assert torch.equal(interpolate_state_dicts(sft, al, 1.0)["w"], al["w"])
    _close(interpolate_state_dicts(sft, al, 2.0)["w"], [5.0, 10.0])  # extrapolation
    # several aligned dicts: (1 - 0.5 - 0.5)*sft + 0.5*al + 0.5*al2
    al2 = {"w": torch.tensor([-1.0, 0.0]), "b": torch.tensor([3.0]), "step": torch.tensor(1)}
    _close(interpolate_state_dicts(sft, [al, al2], [0.5, 0.5])["w"], [1.0, 3.0])


def test_interpolate_dtype_and_errors():
    sft = {"w": torch.tensor([1.0, 2.0], dtype=torch.bfloat16)}
    al = {"w": torch.tensor([3.0, 6.0], dtype=torch.bfloat16)}
    out = interpolate_state_dicts(sft, al, 0.5)
    assert out["w"].dtype == torch.bfloat16
    _close(out["w"].float(), [2.0, 4.0])
    with pytest.raises(ValueError, match="missing"):
        interpolate_state_dicts({"w": torch.zeros(2), "v": torch.zeros(1)}, {"w": torch.zeros(2)}, 0.5)
    with pytest.raises(ValueError):
        interpolate_state_dicts({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, 0.5)
    with pytest.raises(ValueError):
        interpolate_state_dicts({"w": torch.zeros(2)}, {"w": torch.zeros(2)}, float("nan"))
