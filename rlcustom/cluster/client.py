"""The Ray Job Submission client of ``rlcustom submit``/``rlcustom jobs``: the dashboard address, the auth
token (Ray's own lookup order, see :mod:`rlcustom.cluster.jobs`), one-line errors and redaction of what is shown."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from rlcustom.errors import RLCustomError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class JobError(RLCustomError):
    """A cluster/job problem the user can fix: one line, no traceback."""


def resolve_address(address: str | None = None) -> str:
    addr = (address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS).strip().rstrip("/")
    if addr == "auto":
        raise JobError("address 'auto' is for ray.init; job submission needs the dashboard, e.g. http://HEAD:8265")
    if "://" not in addr:
        addr = "http://" + addr
    return addr


def auth_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The Ray auth token: $RAY_AUTH_TOKEN, the file at $RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token."""
    env = os.environ if environ is None else environ
    tok = (env.get("RAY_AUTH_TOKEN") or "").strip()
    if tok:
        return tok
    candidates = []
    if env.get("RAY_AUTH_TOKEN_PATH"):
        candidates.append(Path(env["RAY_AUTH_TOKEN_PATH"]).expanduser())
    candidates.append(Path.home() / ".ray" / "auth_token")
    for p in candidates:
        try:
            tok = p.read_text().strip()
        except OSError:
            continue
        if tok:
            return tok
    return None


def auth_headers(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    tok = auth_token(environ)
    return {"Authorization": f"Bearer {tok}"} if tok else {}


def one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return redact_text(lines[0] if lines else text)


def _explain(e: BaseException, address: str) -> JobError:
    text = str(e)
    if "401" in text or "Missing authentication token" in text or "Authentication required" in text:
        return JobError(f"the Ray head at {address} requires an auth token: set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH "
                        f"to the token file, or put it in ~/.ray/auth_token (`ray get-auth-token` on the head prints it)")
    if "403" in text or "Invalid authentication token" in text or "Authentication failed" in text:
        return JobError(f"the Ray head at {address} rejected the auth token (403): check RAY_AUTH_TOKEN / "
                        f"RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token")
    if isinstance(e, ConnectionError) or "Failed to connect" in text or "Connection refused" in text:
        return JobError(f"cannot reach the Ray dashboard at {address} (start one with cluster/start-local-head.sh, "
                        f"or port-forward a cluster's with `ray dashboard CLUSTER.yaml`)")
    return JobError(f"{address}: {one_line(e)}")


class Jobs:
    """A thin wrapper over ``JobSubmissionClient``: auth header, one-line errors, redacted text."""

    def __init__(self, address: str | None = None) -> None:
        self.address = resolve_address(address)
        try:
            from ray.job_submission import JobSubmissionClient
        except ImportError as e:  # pragma: no cover - ray[default] is a dependency
            raise JobError(f"ray[default] is needed for job submission: {e}") from None
        try:
            self.client = JobSubmissionClient(self.address, headers=auth_headers())
        except Exception as e:  # ConnectionError, RuntimeError, requests errors
            raise _explain(e, self.address) from None

    def call(self, name: str, *args, **kwargs):
        try:
            return getattr(self.client, name)(*args, **kwargs)
        except Exception as e:
            if "does not exist" in str(e) or "404" in str(e):
                job = args[0] if args else kwargs.get("job_id", "?")
                raise JobError(f"no job '{job}' on {self.address} (see: rlcustom jobs list)") from None
            raise _explain(e, self.address) from None

    def status(self, job_id: str) -> str:
        st = self.call("get_job_status", job_id)
        return str(getattr(st, "value", st))


def redact_text(text: str) -> str:
    from rlcustom.tracking import redact

    return redact(text, also=[auth_token()])


def redacted(obj: Any) -> Any:
    """What may be shown of a runtime_env / job details: secret-looking keys and env secrets masked."""
    from rlcustom.tracking import redact

    return redact(obj, also=[auth_token()])
