from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from rlcustom.config import RunConfig, load_config, to_dict
from rlcustom.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def test_defaults_and_frozen():
    cfg = load_config()
    assert isinstance(cfg, RunConfig) and cfg.model.path == "smollm2-135m-instruct"
    with pytest.raises(FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    p = write(tmp_path, "sampling:\n  temprature: 0.5\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = one_line(e)
    assert str(p) in msg and "'sampling.temprature'" in msg and "did you mean 'sampling.temperature'" in msg


def test_wrong_type_names_key_and_expected(tmp_path):
    p = write(tmp_path, "sampling:\n  max_new_tokens: lots\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = one_line(e)
    assert "sampling.max_new_tokens" in msg and "integer" in msg and "'lots'" in msg


def test_out_of_range(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(None, ["sampling.top_p=1.5"])
    msg = one_line(e)
    assert msg.startswith("override 'sampling.top_p=1.5'") and "in (0, 1]" in msg


def test_literal_choice_suggests(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(None, ["engine=vlm"])
    assert "did you mean 'vllm'" in one_line(e)


def test_malformed_yaml_names_line(tmp_path):
    p = write(tmp_path, "seed: 1\nmodel:\n  path: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = one_line(e)
    assert msg.startswith(f"{p}:") and "malformed YAML" in msg


def test_missing_file():
    with pytest.raises(ConfigError, match="no such config file"):
        load_config("does/not/exist.yaml")


def test_overrides_typed_and_nested(tmp_path):
    p = write(tmp_path, "seed: 1\n")
    cfg = load_config(p, ["sampling.temperature=0", "roles.learner.replicas=2", "roles.learner.gpus=1",
                          "tracking.tags=[a, b]", "data.limit=null"])
    assert cfg.seed == 1 and cfg.sampling.temperature == 0.0
    assert cfg.roles["learner"].replicas == 2 and cfg.roles["learner"].gpus == 1.0
    assert cfg.tracking.tags == ("a", "b") and cfg.data.limit is None
    assert to_dict(cfg)["roles"]["learner"]["replicas"] == 2


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(None, ["sampling.temperature"])


def test_nan_rejected():
    with pytest.raises(ConfigError, match="finite"):
        load_config(None, ["sampling.temperature=.nan"])


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="integer"):
        load_config(None, ["seed=true"])


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(p.parents[1])) for p in CONFIGS])
def test_shipped_configs_load_and_comment_every_key(path):
    load_config(path)
    for n, line in enumerate(path.read_text().splitlines(), 1):
        body = line.split("#", 1)[0]
        if body.strip() and ":" in body and not body.strip().startswith("-"):
            key, _, value = body.partition(":")
            # a leaf key (with a value) carries a comment; a section header may too
            if value.strip():
                assert "#" in line, f"{path.name}:{n}: key {key.strip()!r} has no comment"


def test_yaml11_exponent_floats(tmp_path):
    p = write(tmp_path, "optim:\n  lr: 1e-3\n")
    assert load_config(p, ["optim.eps=1e-6"]).optim.lr == 1e-3
    with pytest.raises(ConfigError, match="must be a number"):
        load_config(None, ["optim.lr=fast"])
