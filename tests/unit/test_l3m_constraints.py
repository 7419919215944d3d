"""L3M's constraint table: a length interval beside a reward-valued bound (sentiment), by hand."""
import pytest
import torch

from rlcustom.algos.l3m import barrier_weights, constraint_values
from rlcustom.config import load_config
from rlcustom.trainers.l3m import constraint_table, signed_rewards


def _constraints(extra=()):
    return load_config(None, ["trainer=l3m", "algo.constraints=[{name: length, reward: length_tokens, lo: 10, hi: 20},"
                              " {name: sentiment, reward: vader_sentiment, lo: 0.5}]", *extra]).algo.constraints


def test_interval_and_sentiment_bound_by_hand():
    scorers, names, spec_of, signs, bounds = constraint_table(_constraints())
    assert [s["spec"] for s in scorers] == ["length_tokens", "vader_sentiment"]  # one scorer per reward
    assert names == ["length.lo", "length.hi", "sentiment"]
    assert spec_of.tolist() == [0, 0, 1] and signs.tolist() == [1.0, -1.0, 1.0]
    assert bounds.tolist() == [10.0, -20.0, 0.5]  # |y| >= 10, -|y| >= -20, vader >= 0.5
    # two answers: 30 tokens at vader 0.2, 14 tokens at vader 0.6 (raw scores [B, n_scorers])
    r = signed_rewards(torch.tensor([[30.0, 0.2], [14.0, 0.6]]), spec_of, signs)
    assert torch.allclose(r, torch.tensor([[30.0, -30.0, 0.2], [14.0, -14.0, 0.6]]))
    c = constraint_values(r, bounds)  # C_i = mean(b_i - r_i): (10-22, -20+22, 0.5-0.4)
    assert c.tolist() == pytest.approx([-12.0, 2.0, 0.1])
    # Eq. 11 at mu = 0.5, k = 3: violated constraints get mu/(k mu^2) = 1/(3*0.5); the satisfied one mu/(3*12)
    assert barrier_weights(c, 0.5).tolist() == pytest.approx([0.5 / 36, 1 / 1.5, 1 / 1.5])


def test_same_reward_twice_shares_one_scorer():
    cs = load_config(None, ["trainer=mm", "algo.constraints=[{name: a, reward: length_tokens, lo: 1},"
                            " {name: b, reward: length_tokens, hi: 9}]"]).algo.constraints
    scorers, names, spec_of, signs, bounds = constraint_table(cs)
    assert len(scorers) == 1 and names == ["a", "b"] and spec_of.tolist() == [0, 0]
    assert signs.tolist() == [1.0, -1.0] and bounds.tolist() == [1.0, -9.0]
