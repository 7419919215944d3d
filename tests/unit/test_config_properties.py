"""Property tests: any dotted override either gives a valid frozen config or a one-line
ConfigError naming the override and a key on its path -- never another exception type."""
from __future__ import annotations

import dataclasses
import re
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlcustom.config import RunConfig, load_config
from rlcustom.errors import ConfigError

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        yield key
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)] or ([tp] if dataclasses.is_dataclass(tp) else [])
        for sub in inner:
            yield from _keys(sub, key + ".")


KEYS = sorted(set(_keys(RunConfig))) + ["roles.learner.replicas", "roles.rollout.cpus", "roles.x.zero_stage",
                                          "reward.kwargs.scale", "algo.lam", "algo.prompts_per_step"]


def _typo(k: str, i: int, c: str) -> str:
    i %= len(k)
    return k[:i] + c + k[i + 1:]


key_st = st.one_of(
    st.sampled_from(KEYS),
    st.builds(_typo, st.sampled_from(KEYS), st.integers(0, 40), st.sampled_from(list("aexz_.0"))),
    st.from_regex(r"[a-z_]{1,8}(\.[a-z_]{1,8}){0,2}", fullmatch=True),
)
value_st = st.one_of(
    st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "null", "~", "", ".nan", "-.inf", "1e-3", "0x1f", "[1, 2]", "{a: 1}",
                     "[", "{", "'x'", "hf", "vllm", "pg", "ppo", "grpo", "skip", "auto", "a: b: c", "- 1"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=12),
)
trainer_st = st.sampled_from([None, "pg", "ppo", "generate", "dpo", "sft"])


def _check(cfg_or_err, overrides):
    if isinstance(cfg_or_err, RunConfig):
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg_or_err.steps = 1  # type: ignore[misc]
        return
    msg = str(cfg_or_err)
    assert "\n" not in msg, msg
    bad = next((o for o in overrides if msg.startswith(f"override '{o}': ")), None)
    assert bad is not None, msg
    key = bad.split("=", 1)[0]
    named = re.findall(r"(?:key|section) '([^']+)'", msg)
    parts = key.split(".")
    prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))}
    # the key named is the override's key, a prefix of it, or an element of a list under it (key[i])
    assert any(n.split("[")[0] in prefixes or n.startswith(key) for n in named) or "expected key.sub=value" in msg, msg


@SETTINGS
@given(trainer=trainer_st, pairs=st.lists(st.tuples(key_st, value_st), min_size=1, max_size=4))
def test_overrides_give_a_frozen_config_or_a_config_error_naming_the_key(trainer, pairs):
    overrides = ([f"trainer={trainer}"] if trainer else []) + [f"{k}={v}" for k, v in pairs]
    try:
        cfg = load_config(None, overrides)
    except ConfigError as e:
        _check(e, overrides)
        return
    _check(cfg, overrides)


@SETTINGS
@given(text=st.text(max_size=80))
def test_any_yaml_text_loads_or_names_the_file(tmp_path_factory, text):
    p = tmp_path_factory.getbasetemp() / "c.yaml"
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = load_config(p)
    except ConfigError as e:
        assert "\n" not in str(e) and str(e).startswith(str(p)), str(e)
        return
    assert isinstance(cfg, RunConfig)
