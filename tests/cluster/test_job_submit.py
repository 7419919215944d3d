"""`rlcustom submit` against a real local Ray head (cluster/start-local-head.sh), plus the
submission logic without a head.

The heads run from this venv (jobs inherit its Python), on 127.0.0.1, with a short temp dir and
free ports, and are always stopped, by pid, in a ``finally`` (never `ray stop`, which would stop
every Ray on the machine).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rlcustom.cluster import client as C
from rlcustom.cluster import jobs as J
from rlcustom.cluster import runtime_env as R
from rlcustom.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "cluster" / "start-local-head.sh"
BIN = Path(sys.executable).parent
RAY = BIN / "ray"
# The CLI with the cluster commands registered (works before and after cli.py imports cli_cluster).
RUNNER = "import sys, rlcustom.cluster.commands; from rlcustom.cli import main; sys.exit(main(sys.argv[1:]))"


def rlcustom(*args: str, env: dict | None = None, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUNNER, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 10000 <= port <= 20000:  # Ray's worker port range
            return port


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_AUTH", "WANDB_API_KEY")) and k not in ("RAY_ADDRESS",)}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def pids_under(temp_dir: str) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if temp_dir + "/" in cmd or temp_dir + " " in cmd:
                out.append(int(p.name))
    return out


class LocalHead:
    """A head from cluster/start-local-head.sh; ``stop()`` ends only its processes."""

    def __init__(self, *, token: bool = False, env: dict | None = None) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="rlc", dir="/tmp")  # short: Ray's socket paths live under it
        self.port, self.dash = free_port(), free_port()
        self.address = f"http://127.0.0.1:{self.dash}"
        self.env = env or clean_env()
        args = [str(SCRIPT), "--temp-dir", self.temp_dir, "--port", str(self.port), "--dashboard-port", str(self.dash),
                "--num-cpus", "2", "--free-ports", "--ray", str(RAY)] + (["--token"] if token else [])
        r = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=150)
        assert r.returncode == 0, f"start-local-head.sh failed:\n{r.stdout}\n{r.stderr}"
        assert f"RAY_ADDRESS={self.address}" in r.stdout

    def stop(self) -> None:
        subprocess.run([str(SCRIPT), "--stop", "--temp-dir", self.temp_dir], env=self.env, capture_output=True,
                       timeout=60)
        left = pids_under(self.temp_dir)
        for pid in left:  # the script should have left none; never leave ours behind
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        assert not left, f"processes survived the stop: {left}"


@pytest.fixture
def head():
    h = None
    try:
        h = LocalHead()
        yield h
    finally:
        if h is not None:
            h.stop()


@pytest.fixture
def workdir(tmp_path, tiny_dir):
    """A tiny generate run: model outside the uploaded dir, config + prompts inside, output absolute."""
    model = tiny_dir
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "prompts.jsonl").write_text("\n".join(json.dumps({"prompt": p}) for p in ("Hello there!", "What is 2+2?")) + "\n")
    out = tmp_path / "out"
    (wd / "config.yaml").write_text(
        f"trainer: generate\nseed: 0\nengine: hf\noutput_dir: {out}\n"
        f"model: {{path: {model}}}\n"
        "data: {prompts: prompts.jsonl, split: all}\n"
        "sampling: {max_new_tokens: 4}\n"
        "tracking: {mode: offline}\n"
    )
    return wd, out


def files_containing(root: Path, needle: str) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file():
            try:
                if needle.encode() in p.read_bytes():
                    hits.append(str(p))
            except OSError:
                pass
    return hits


# ----------------------------------------------------------------------------- against a real head


def test_submit_generate_job_end_to_end(head, workdir):
    wd, out = workdir
    key = "test-secret-" + secrets.token_hex(12)
    env = clean_env(WANDB_API_KEY=key, WANDB_MODE="offline", RLCUSTOM_PROBE="probe-value")

    r = rlcustom("submit", "config.yaml", "sampling.temperature=0", "--address", head.address, "--timeout", "150",
                 env=env, cwd=wd, timeout=200)
    assert r.returncode == 0, f"submit failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "entrypoint: rlcustom generate config.yaml sampling.temperature=0" in r.stdout
    assert '"WANDB_API_KEY": "***"' in r.stdout  # the runtime_env is shown, redacted
    job_id = next(ln.split()[2] for ln in r.stdout.splitlines() if ln.startswith("submitted job "))
    assert f"job {job_id}: SUCCEEDED" in r.stdout
    assert "generated 2 completions" in r.stdout  # the driver's log was streamed

    # the job's outputs
    rows = [json.loads(ln) for ln in (out / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and {r_["prompt"] for r_ in rows} == {"Hello there!", "What is 2+2?"}
    assert all("completion" in r_ for r_ in rows)

    # the key: shown nowhere, written nowhere
    assert key not in r.stdout and key not in r.stderr
    assert files_containing(out, key) == []
    assert files_containing(wd, key) == []

    st = rlcustom("jobs", "status", job_id, "--address", head.address, env=env)
    assert st.returncode == 0, st.stderr
    assert f"job {job_id}: SUCCEEDED" in st.stdout
    assert "WANDB_API_KEY=***" in st.stdout and "RLCUSTOM_PROBE=probe-value" in st.stdout
    assert key not in st.stdout + st.stderr

    ls = rlcustom("jobs", "list", "--address", head.address, env=env)
    assert ls.returncode == 0 and job_id in ls.stdout and "SUCCEEDED" in ls.stdout
    lg = rlcustom("jobs", "logs", job_id, "--address", head.address, env=env)
    assert lg.returncode == 0 and "generated 2 completions" in lg.stdout and key not in lg.stdout
    missing = rlcustom("jobs", "status", "no-such-job", "--address", head.address, env=env)
    assert missing.returncode == 2 and "no job 'no-such-job'" in missing.stderr.strip().splitlines()[-1]

    # ... but it reached the job: Ray holds it in the job's runtime_env (compared, never printed) ...
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(head.address, headers=C.auth_headers())
    got = client.get_job_info(job_id).runtime_env["env_vars"].get("WANDB_API_KEY")
    same = got == key
    assert same, "WANDB_API_KEY did not reach the job's runtime_env"

    # ... and a process started with the runtime_env rlcustom builds sees it: it prints only a hash.
    rt = R.build_runtime_env(wd, environ=env)
    probe = ("import hashlib, os; k = os.environ.get('WANDB_API_KEY', ''); "
             "print('sha', hashlib.sha256(k.encode()).hexdigest(), os.environ.get('RLCUSTOM_PROBE'))")
    pid = client.submit_job(entrypoint=shlex.join([sys.executable, "-c", probe]), runtime_env=rt)
    deadline = time.monotonic() + 90
    while (status := str(client.get_job_status(pid).value)) not in C.TERMINAL and time.monotonic() < deadline:
        time.sleep(1)
    logs = client.get_job_logs(pid)
    assert status == "SUCCEEDED", logs[-2000:]
    assert f"sha {hashlib.sha256(key.encode()).hexdigest()} probe-value" in logs
    assert key not in logs


def test_token_auth_head(tmp_path):
    """A head with RAY_AUTH_MODE=token: rlcustom sends $RAY_AUTH_TOKEN (or the token file); without it, one line."""
    token = "rlc-test-" + secrets.token_hex(16)
    h = None
    try:
        h = LocalHead(token=True, env=clean_env(RAY_AUTH_TOKEN=token))
        home = tmp_path / "home"  # no ~/.ray/auth_token from elsewhere on this machine
        home.mkdir()
        ok = rlcustom("jobs", "list", "--address", h.address, env=clean_env(RAY_AUTH_TOKEN=token, HOME=str(home)))
        assert ok.returncode == 0, ok.stderr
        assert "no jobs" in ok.stdout
        (home / "tok").write_text(token + "\n")
        via_file = rlcustom("jobs", "list", "--address", h.address,
                            env=clean_env(RAY_AUTH_TOKEN_PATH=str(home / "tok"), HOME=str(home)))
        assert via_file.returncode == 0, via_file.stderr
        none = rlcustom("jobs", "list", "--address", h.address, env=clean_env(HOME=str(home)))
        assert none.returncode == 2
        last = none.stderr.strip().splitlines()[-1]
        assert "requires an auth token" in last and "RAY_AUTH_TOKEN" in last
        wrong = rlcustom("jobs", "list", "--address", h.address, env=clean_env(RAY_AUTH_TOKEN="wrong", HOME=str(home)))
        assert wrong.returncode == 2 and "rejected the auth token" in wrong.stderr
        for r in (ok, via_file, none, wrong):
            assert token not in r.stdout + r.stderr
    finally:
        if h is not None:
            h.stop()


# ----------------------------------------------------------------------------- without a head


def test_plan_entrypoint_quotes_and_picks_the_command(workdir):
    wd, _ = workdir
    sub = J.plan_submission(str(wd / "config.yaml"), ["tracking.name=my run; rm -rf /"], working_dir=wd, environ={})
    assert shlex.split(sub.entrypoint) == ["rlcustom", "generate", "config.yaml", "tracking.name=my run; rm -rf /"]
    assert sub.runtime_env["working_dir"] == str(wd.resolve())
    assert set(R.DEFAULT_EXCLUDES) <= set(sub.runtime_env["excludes"])
    assert "pip" not in sub.runtime_env
    (wd / "pg.yaml").write_text("trainer: pg\n")
    assert shlex.split(J.plan_submission(str(wd / "pg.yaml"), working_dir=wd, environ={}).entrypoint)[:3] == \
        ["rlcustom", "train", "pg.yaml"]
    with pytest.raises(C.JobError, match="rlcustom generate"):
        J.plan_submission(str(wd / "config.yaml"), working_dir=wd, command="train", environ={})


def test_plan_validates_locally_in_one_line(workdir, tmp_path):
    wd, _ = workdir
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ConfigError) as e:
        J.plan_submission(str(wd / "config.yaml"), ["sampling.temprature=0.5"], working_dir=wd, environ={})
    assert "temprature" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(C.JobError, match="inside the uploaded working dir"):
        J.plan_submission(str(wd / "config.yaml"), working_dir=tmp_path / "elsewhere", environ={})


def test_relative_output_dir_is_excluded_and_noted(workdir):
    wd, _ = workdir
    sub = J.plan_submission(str(wd / "config.yaml"), ["output_dir=results/x"], working_dir=wd, environ={})
    assert "results/x/" in sub.runtime_env["excludes"]
    assert any("relative" in n for n in sub.notes)


def test_env_passthrough_and_never_pass():
    environ = {"WANDB_API_KEY": "k" * 40, "WANDB_MODE": "offline", "RLCUSTOM_CACHE": "/c", "HOME": "/root",
               "RAY_AUTH_TOKEN": "t" * 40, "HF_TOKEN": "h" * 40, "NCCL_DEBUG": "INFO"}
    env = R.env_for_job(["NCCL_DEBUG", "EXTRA=1", "RAY_AUTH_TOKEN"], environ)
    assert env == {"WANDB_API_KEY": "k" * 40, "WANDB_MODE": "offline", "RLCUSTOM_CACHE": "/c",
                   "NCCL_DEBUG": "INFO", "EXTRA": "1"}
    assert "WANDB_API_KEY" not in R.env_for_job([], environ, pass_wandb_key=False)
    with pytest.raises(C.JobError, match="not set"):
        R.env_for_job(["NOPE_NOT_SET"], environ)


def test_dry_run_prints_redacted_runtime_env(workdir, monkeypatch, capsys):
    wd, _ = workdir
    key = "test-secret-" + secrets.token_hex(12)
    monkeypatch.setenv("WANDB_API_KEY", key)
    monkeypatch.chdir(wd)
    import rlcustom.cluster.commands  # noqa: F401
    from rlcustom.cli import main

    assert main(["submit", "config.yaml", "--dry-run", "--env", "NCCL_DEBUG=INFO"]) == 0
    out = capsys.readouterr()
    assert key not in out.out + out.err
    line = next(ln for ln in out.out.splitlines() if ln.startswith("runtime_env: "))
    rt = json.loads(line[len("runtime_env: "):])
    assert rt["env_vars"]["WANDB_API_KEY"] == "***" and rt["env_vars"]["NCCL_DEBUG"] == "INFO"


def test_install_uses_the_lock_without_ray(workdir):
    wd, _ = workdir
    lock = wd / "lock.txt"
    lock.write_text("# comment\nray==2.60.0\ntransformers==5.19.0  # pinned\n\ntorch==2.13.0+cpu\n")
    sub = J.plan_submission(str(wd / "config.yaml"), working_dir=wd, install=str(lock), environ={})
    pip = sub.runtime_env["pip"]
    assert pip["packages"] == ["transformers==5.19.0", "torch==2.13.0+cpu"]
    assert "--no-deps" in pip["pip_install_options"]
    assert shlex.split(sub.entrypoint)[:4] == ["python", "-m", "rlcustom.cli", "generate"]
    assert R.read_lock(ROOT / "cluster" / "requirements-cpu.txt"), "the repository's lock reads"


def test_address_resolution(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert C.resolve_address() == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265/")
    assert C.resolve_address() == "http://head:8265"
    assert C.resolve_address("10.0.0.1:8265") == "http://10.0.0.1:8265"
    with pytest.raises(C.JobError):
        C.resolve_address("auto")


def test_auth_token_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    assert C.auth_token() is None and C.auth_headers() == {}
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-default\n")
    assert C.auth_token() == "from-default"
    (tmp_path / "t").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "t"))
    assert C.auth_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert C.auth_headers() == {"Authorization": "Bearer from-env"}


def test_unreachable_address_is_one_line():
    r = rlcustom("jobs", "list", "--address", f"http://127.0.0.1:{free_port()}", env=clean_env(), timeout=60)
    assert r.returncode == 2
    assert "cannot reach the Ray dashboard" in r.stderr.strip().splitlines()[-1]
