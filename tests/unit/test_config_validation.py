"""pydantic validates the config dataclasses; its errors come back as our one line naming the source and key.

Each case here is one a lenient or a half-translated implementation gets wrong: pydantic's lax mode takes
'3', true and 2.0 for an integer; an error inside a union or a list must name the key the user wrote, not
pydantic's location (``decoder.beta.tuple[float, ...].1``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from rlcustom.config import bounds, from_dict, load_config, to_dict
from rlcustom.config.validation import validate
from rlcustom.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))


def error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("override, expect", [
    ("seed=1.5", "key 'seed' must be an integer, got 1.5"),  # a fraction is no integer
    ("seed=3.0", "key 'seed' must be an integer, got 3.0"),  # nor is an integral float (lax mode takes it)
    ("seed='3'", "key 'seed' must be an integer, got '3'"),  # nor a quoted number
    ("roles.learner.replicas=2.5", "key 'roles.learner.replicas' must be an integer, got 2.5"),
    ("cluster.num_cpus=2.0", "key 'cluster.num_cpus' must be an integer or null, got 2.0"),
    ("optim.lr=true", "key 'optim.lr' must be a number, got True"),
    ("optim.lr='0.1'", "key 'optim.lr' must be a number, got '0.1'"),
    ("model.trust_remote_code=1", "key 'model.trust_remote_code' must be true or false, got 1"),
    ("model.trust_remote_code='true'", "key 'model.trust_remote_code' must be true or false, got 'true'"),
    ("model.path=123", "key 'model.path' must be a string, got 123"),
    ("optim.lr=-.inf", "key 'optim.lr' must be a finite number, got -inf"),
])
def test_no_silent_casts(override, expect):
    assert error([override]) == f"override '{override}': {expect}"


@pytest.mark.parametrize("override, expect", [
    ("tracking.tags=[a, 1]", "key 'tracking.tags[1]' must be a string, got 1"),
    ("tracking.tags=a", "key 'tracking.tags' must be a list of a string, got 'a'"),
    # a union: the key and the whole value, not pydantic's member location and the bad element
    ("decoder.beta=[1, x]", "key 'decoder.beta' must be a number or a list of a number, got [1, 'x']"),
    # no decoder.name yet: what any decoder takes (their choices joined, decoders in name order)
    ("decoder.mode=tre", "key 'decoder.mode' must be one of 'auto', 'slice', 'peft', 'tree', 'expand' or null, "
                         "got 'tre' (did you mean 'tree'?)"),
    ("model.lora={r: 0}", "key 'model.lora.r' must be > 0, got 0"),  # bounds inside an optional section
    ("model.lora=3", "key 'model.lora' must be a mapping or null, got 3"),
    ("roles.learner.replicass=2", "unknown key 'roles.learner.replicass' (did you mean 'roles.learner.replicas'?)"),
    ("roles.learner.zero_stage=4", "key 'roles.learner.zero_stage' must be in [0, 3], got 4"),
    ("roles=3", "key 'roles' must be a mapping of a mapping, got 3"),
    ("reward.kwargs=3", "key 'reward.kwargs' must be a mapping of any value, got 3"),
])
def test_errors_name_the_key_the_user_wrote(override, expect):
    assert error([override]) == f"override '{override}': {expect}"


def test_trainer_sections_nested_lists_and_cross_key_checks():
    l3m = ["trainer=l3m"]
    assert error(l3m + ["algo.constraints=[{name: x, lo: 1, hii: 0}]"]).endswith(
        "unknown key 'algo.constraints[0].hii' (did you mean 'algo.constraints[0].hi'?)")
    assert error(l3m + ["algo.constraints=[{name: x}]"]).endswith(
        "section 'algo.constraints[0]': constraint 'x': set lo, hi or both")
    assert error(l3m + ["algo.ema_smoothing=0"]).endswith("key 'algo.ema_smoothing' must be in (0, 1], got 0")
    assert error(["trainer=vas", "algo.val_fraction=1"]).endswith("key 'algo.val_fraction' must be in [0, 1), got 1")
    cfg = load_config(None, l3m + ["algo.constraints=[{name: n, lo: 1, kwargs: {a: [1, 2]}}]"])
    (c,) = cfg.algo.constraints
    assert type(c).__name__ == "ConstraintSpec" and c.lo == 1.0 and c.kwargs == {"a": [1, 2]}


def test_a_null_section_is_its_defaults_and_a_nullable_one_is_null(tmp_path):
    from rlcustom.config import DecoderConfig, RoleConfig, SamplingConfig

    cfg = load_config(None, ["sampling.n=4", "sampling=null", "roles.learner=null", "decoder=null", "model.lora=null"])
    assert cfg.sampling == SamplingConfig() and cfg.roles == {"learner": RoleConfig()} and cfg.decoder == DecoderConfig()
    assert cfg.model.lora is None
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  # path: x\ntrainer: ppo\nalgo:\n")  # sections with everything commented out
    assert load_config(p).model.path == "smollm2-135m-instruct"
    assert error(["roles.learner=3"]) == "override 'roles.learner=3': key 'roles.learner' must be a mapping, got 3"


def test_types_after_validation():
    cfg = load_config(None, ["optim.lr=1", "tracking.tags=[a, b]", "decoder.beta=2", "roles.x={cpus: 2}"])
    assert type(cfg.optim.lr) is float and cfg.optim.lr == 1.0  # an integer is a number
    assert cfg.tracking.tags == ("a", "b") and cfg.decoder.beta == (2.0,)
    assert cfg.roles["x"].cpus == 2.0 and type(cfg.roles["x"].cpus) is float


def test_yaml_12_scalars(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 1.0e-4\n  eps: 1e-6\ntracking:\n  name: 2024-01-01\n")
    cfg = load_config(p)
    assert (cfg.optim.lr, cfg.optim.eps, cfg.tracking.name) == (1e-4, 1e-6, "2024-01-01")
    assert error(["model.path=1e3"]) == "override 'model.path=1e3': key 'model.path' must be a string, got 1000.0"


def test_a_yaml_value_that_is_no_json_names_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("reward:\n  kwargs:\n    blob: !!binary aGk=\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{p}: b'hi' (bytes) is not a config value"), msg


@dataclass(frozen=True)
class _Inner:
    k: int = field(default=1, metadata=bounds(ge=1, le=4))


@dataclass(frozen=True)
class _Section:
    """A plugin's section: bounds from its field metadata, a Literal, a list of sections, a fixed tuple."""

    rate: float = field(default=0.5, metadata=bounds(gt=0, lt=1))
    kind: Literal["a", "bb"] = "a"
    inner: tuple[_Inner, ...] = ()
    pair: tuple[int, str] = (0, "x")
    names: tuple[str, ...] | str = ()  # the list member first: its error is about one element


@pytest.mark.parametrize("data, expect", [
    ({"rate": 1}, "key 'algo.rate' must be in (0, 1), got 1"),
    ({"rate": 0}, "key 'algo.rate' must be in (0, 1), got 0"),
    ({"kind": "b"}, "key 'algo.kind' must be one of 'a', 'bb', got 'b' (did you mean 'bb'?)"),
    ({"inner": [{"k": 5}]}, "key 'algo.inner[0].k' must be in [1, 4], got 5"),
    ({"inner": [{}, {"kk": 1}]}, "unknown key 'algo.inner[1].kk' (did you mean 'algo.inner[1].k'?)"),
    ({"pair": [1, 2]}, "key 'algo.pair[1]' must be a string, got 2"),
    ({"rat": 0.1}, "unknown key 'algo.rat' (did you mean 'algo.rate'?)"),
    ({"names": ["a", 1]}, "key 'algo.names' must be a list of a string or a string, got ['a', 1]"),
])
def test_a_registered_section_is_validated_from_its_dataclass(data, expect):
    with pytest.raises(ConfigError) as e:
        validate(_Section, data, source="s.yaml", prefix="algo")
    assert str(e.value) == f"s.yaml: {expect}"
    ok = validate(_Section, {"rate": 0.25, "inner": [{"k": 4}], "pair": [2, "y"]}, source="s.yaml")
    assert ok == _Section(rate=0.25, inner=(_Inner(4),), pair=(2, "y"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_to_dict_round_trips(path):
    cfg = load_config(path)
    plain = to_dict(cfg)
    assert isinstance(plain["tracking"]["tags"], list) and isinstance(plain["model"], dict)
    again = from_dict(plain)
    assert again == cfg and dataclasses.asdict(again) == dataclasses.asdict(cfg)


def test_decoder_flags_reach_the_config_as_numbers_and_verbatim_paths():
    """`--beta 1 --beta 2.5` arrive as strings; the config takes no number written as a string, so the weights
    travel as a YAML list (numbers) and the paths as JSON strings (a comma or a colon stays in the path)."""
    from types import SimpleNamespace

    from rlcustom.decoding.registry_cli import decoder_overrides

    flags = SimpleNamespace(decoder="vas", value=["a,b", "c: d"], beta=["1", "2.5e-1"])
    d = load_config(None, decoder_overrides(flags)).decoder
    assert (d.name, d.value, d.beta) == ("vas", ("a,b", "c: d"), (1.0, 0.25))
    assert error(decoder_overrides(SimpleNamespace(beta=["abc"]))).endswith(
        "key 'decoder.beta' must be a number or a list of a number, got ['abc']")
