"""The ``rollout:`` section and its preflight check: each mistake is one line naming the key."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from rlcustom.config import load_config
from rlcustom.errors import ConfigError
from rlcustom.trainers.episodes import check_rollout_env


def trainer(*overrides, name="pg", env_rollouts=True, tokenizer=None):
    cfg = load_config(None, [f"trainer={name}", *overrides])
    return SimpleNamespace(cfg=cfg, name=name, env_rollouts=env_rollouts, sampler=SimpleNamespace(tokenizer=tokenizer))


def test_defaults_are_single_turn_and_keys_are_checked():
    assert load_config(None, ["trainer=pg"]).rollout.env is None
    with pytest.raises(ConfigError, match="rollout.max_turns"):
        load_config(None, ["trainer=pg", "rollout.max_turns=0"])
    with pytest.raises(ConfigError, match="rollout.reward"):
        load_config(None, ["trainer=pg", "rollout.reward=both"])


def test_preflight_refusals_name_the_key(tiny):
    _, tok = tiny
    check_rollout_env(trainer("rollout.env=calculator", tokenizer=tok))  # fine
    with pytest.raises(ConfigError, match="trainer 'ppo' does not run multi-turn episodes"):
        check_rollout_env(trainer("rollout.env=calculator", name="ppo", env_rollouts=False))
    with pytest.raises(ConfigError, match="did you mean 'calculator'"):
        check_rollout_env(trainer("rollout.env=calculater"))
    with pytest.raises(ConfigError, match=r"rollout.env_kwargs: calculator cannot be built .*unexpected keyword"):
        check_rollout_env(trainer("rollout.env=calculator", "rollout.env_kwargs={speed: 3}"))
    with pytest.raises(ConfigError, match="overlong penalty"):
        check_rollout_env(trainer("rollout.env=calculator", "algo.objective=dapo"))
    check_rollout_env(trainer("rollout.env=calculator", "algo.objective=dapo",
                              "algo.objective_kwargs={overlong_buffer: 0}"))
