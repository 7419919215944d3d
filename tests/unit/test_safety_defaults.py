"""Safe by default: checkpoints load as data only, remote code runs only when asked, a local Ray's
dashboard/job server stay on loopback unless configured, secrets are scrubbed."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from rlcustom.config import ClusterConfig, ModelConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("rlcustom", "actors", "benchmarks") for p in (ROOT / d).rglob("*.py"))


def _calls(name: str):
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
                if called == name:
                    yield path, node


def test_every_torch_load_is_weights_only():
    calls = [(p, n) for p, n in _calls("load") if isinstance(n.func, ast.Attribute)
             and isinstance(n.func.value, ast.Name) and n.func.value.id == "torch"]
    assert calls, "expected the learner/value checkpoint loads"
    for path, node in calls:
        kw = {k.arg: k.value for k in node.keywords}
        assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, \
            f"{path.relative_to(ROOT)}:{node.lineno}: torch.load without weights_only=True"


def test_no_pickle_loads_of_checkpoints():
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("load", "loads") and \
                    isinstance(node.value, ast.Name) and node.value.id in ("pickle", "dill", "cloudpickle"):
                pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")


def test_trust_remote_code_is_off_unless_asked():
    assert ModelConfig().trust_remote_code is False
    assert load_config(None, []).model.trust_remote_code is False
    for path, node in _calls("from_pretrained"):
        for k in node.keywords:
            if k.arg == "trust_remote_code":
                assert not (isinstance(k.value, ast.Constant) and k.value.value is True), \
                    f"{path.relative_to(ROOT)}:{node.lineno}: trust_remote_code=True hard-coded"


@pytest.mark.parametrize("cluster, dashboard, host", [
    (ClusterConfig(), False, "127.0.0.1"),
    (ClusterConfig(include_dashboard=True), True, "127.0.0.1"),
    (ClusterConfig(include_dashboard=True, dashboard_host="0.0.0.0"), True, "0.0.0.0"),
])
def test_local_ray_dashboard_off_and_on_loopback_unless_configured(monkeypatch, cluster, dashboard, host):
    import ray

    from rlcustom.runtime import runtime

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    runtime.init_ray(cluster)
    assert seen["include_dashboard"] is dashboard and seen["dashboard_host"] == host
    assert "address" not in seen


def test_joining_a_cluster_passes_no_local_dashboard_options(monkeypatch):
    import ray

    from rlcustom.runtime import runtime

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    runtime.init_ray(ClusterConfig(address="auto"))
    assert seen["address"] == "auto" and "include_dashboard" not in seen and "dashboard_host" not in seen


def test_ray_runtime_env_does_not_copy_secrets(monkeypatch):
    """The runtime env sent with jobs forwards a fixed allow-list of variables: no keys or tokens."""
    import ray

    from rlcustom.runtime import runtime

    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 30)
    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    runtime.init_ray(ClusterConfig())
    env = seen["runtime_env"]["env_vars"]
    assert "WANDB_API_KEY" not in env and "HF_TOKEN" not in env


def test_redact_scrubs_config_secrets_and_env_values(monkeypatch):
    from rlcustom.config import to_dict
    from rlcustom.tracking import redact

    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-1234567890")
    cfg = load_config(None, ["reward.kwargs.password=hunter2hunter2", "tracking.name=x-tok-1234567890"])
    out = redact(to_dict(cfg))
    assert out["reward"]["kwargs"]["password"] == "***"
    assert out["tracking"]["name"] == "x-***"
