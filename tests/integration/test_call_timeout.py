"""A call to a role that outlives ``roles.<role>.call_timeout_s`` stops with one line naming the knob."""
import time

import pytest

from rlcustom.config import load_config
from rlcustom.errors import ConfigError


def test_role_call_timeout_is_configurable_and_names_the_knob(local_ray):
    import ray

    from rlcustom.runtime.runtime import ActorTimeout, RoleGroup

    class _Slow:  # defined here so Ray ships it by value (the test module is not importable on workers)
        def nap(self, s: float) -> float:
            time.sleep(s)
            return s

    cfg = load_config(None, ["roles.reward.call_timeout_s=0.5"])
    assert cfg.roles["reward"].call_timeout_s == 0.5
    g = RoleGroup("reward", [ray.remote(_Slow).options(num_cpus=0).remote()], timeout_s=cfg.roles["reward"].call_timeout_s)
    assert g.run("nap", 0.0) == [0.0]  # fast calls are untouched
    with pytest.raises(ActorTimeout, match=r"reward.nap did not finish within 0.5 s \(raise roles.reward.call_timeout_s"):
        g.run("nap", 5.0)
    with pytest.raises(ConfigError, match="call_timeout_s"):
        load_config(None, ["roles.reward.call_timeout_s=-1"])
