"""The runtime_env of a submitted run: the uploaded working_dir and its excludes, env_vars passed through
(never the client's credentials), and the optional ``--install`` pins of a lock file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from rlcustom.cluster.client import JobError, one_line

# Never uploaded with the working_dir (gitignore syntax, relative to working_dir).
DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".git/", ".venv/", "venv/", "runs/", "wandb/", "checkpoints/", "**/checkpoints/",
    "benchmarks/results/", "__pycache__/", "*.pyc", ".pytest_cache/", ".hypothesis/",
    ".mypy_cache/", ".ruff_cache/", ".cache/", "*.egg-info/", "build/", "dist/", ".whl/",
    ".ipynb_checkpoints/",
)

# Passed through from the submitting environment when set.
PASSTHROUGH_ENV: tuple[str, ...] = ("WANDB_API_KEY", "WANDB_MODE", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_BASE_URL")
PASSTHROUGH_PREFIXES: tuple[str, ...] = ("RLCUSTOM_",)
# Never sent to a job, even when named with --env: they are the client's credentials.
NEVER_PASS: tuple[str, ...] = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ADDRESS")

DEFAULT_LOCK = "cluster/requirements-cpu.txt"


def read_lock(path: str | Path) -> list[str]:
    """Requirement lines of a lock file (comments, blanks and ``ray`` itself dropped)."""
    p = Path(path)
    if not p.is_file():
        raise JobError(f"{p}: no such requirements file (for --install)")
    out = []
    for line in p.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name = line.split("==")[0].split("[")[0].strip().lower()
        if name == "ray":  # the cluster runs its own ray; a second one in the job env breaks it
            continue
        out.append(line)
    return out


def env_for_job(names: Iterable[str] = (), environ: Mapping[str, str] | None = None,
                pass_wandb_key: bool = True) -> dict[str, str]:
    """env_vars for the job: the pass-through set plus ``--env NAME`` / ``--env NAME=VALUE``."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for k, v in env.items():
        if k == "WANDB_API_KEY" and not pass_wandb_key:
            continue
        if k in PASSTHROUGH_ENV or k.startswith(PASSTHROUGH_PREFIXES):
            out[k] = v
    for spec in names:
        if "=" in spec:
            k, v = spec.split("=", 1)
        else:
            k, v = spec, env.get(spec)
            if v is None:
                raise JobError(f"--env {spec}: not set in this environment (use --env {spec}=VALUE to give a value)")
        if not k or not k.replace("_", "a").isalnum():
            raise JobError(f"--env {spec!r}: expected NAME or NAME=VALUE")
        out[k] = v
    for k in NEVER_PASS:
        out.pop(k, None)
    return out


def build_runtime_env(working_dir: str | Path, *, env_names: Iterable[str] = (), environ: Mapping[str, str] | None = None,
                      install: str | Path | None = None, extra_excludes: Iterable[str] = (),
                      base: Mapping[str, Any] | None = None, pass_wandb_key: bool = True) -> dict[str, Any]:
    """The runtime_env of a submitted run. ``base`` (a runtime_env YAML) is merged under ours."""
    rt: dict[str, Any] = {k: v for k, v in dict(base or {}).items()}
    excludes = list(rt.get("excludes") or [])
    for e in (*DEFAULT_EXCLUDES, *extra_excludes):
        if e not in excludes:
            excludes.append(e)
    rt["working_dir"] = str(Path(working_dir).resolve())
    rt["excludes"] = excludes
    env = {str(k): str(v) for k, v in dict(rt.get("env_vars") or {}).items()}
    env.update(env_for_job(env_names, environ, pass_wandb_key=pass_wandb_key))
    if env:
        rt["env_vars"] = env
    else:
        rt.pop("env_vars", None)
    if install is not None:
        packages = read_lock(install)
        options = ["--no-deps", "--disable-pip-version-check", "--no-cache-dir"]
        if any("+cpu" in p for p in packages):  # torch==X+cpu lives on PyTorch's own index
            options += ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]
        rt["pip"] = {"packages": packages, "pip_check": False, "pip_install_options": options}
    return rt


def load_runtime_env_file(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except OSError as e:
        raise JobError(f"{p}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise JobError(f"{p}: malformed YAML: {one_line(e)}") from None
    if not isinstance(data, dict):
        raise JobError(f"{p}: a runtime_env must be a mapping")
    data.pop("working_dir", None)  # ours (the --working-dir) wins: it is uploaded from here
    return data
