import pytest

from rlcustom.registry import Registry


def test_register_get_and_suggest():
    r = Registry("loss")

    @r.register("ppo_clip")
    def f():
        return 1

    assert r.get("ppo_clip") is f and "ppo_clip" in r and r.names() == ["ppo_clip"]
    with pytest.raises(KeyError, match="did you mean 'ppo_clip'"):
        r.get("ppo_clp")
    with pytest.raises(KeyError, match="already registered"):
        r.register("ppo_clip")(lambda: 2)
    r.register("ppo_clip", override=True)(lambda: 3)
    assert r.get("ppo_clip")() == 3
