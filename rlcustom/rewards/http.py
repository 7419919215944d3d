"""A reward served over HTTP: POST ``{"prompts": [...], "completions": [...]}``, read ``{"rewards": [...]}``.

Protocol (one request per chunk of at most ``max_batch`` samples)::

    POST <url>
    Content-Type: application/json
    Authorization: Bearer <key>          # only when api_key_env names a set variable
    {"prompts": ["..."], "completions": ["..."]}          (+ "kwargs": {...} when given)

    200 OK
    {"rewards": [0.5, 1.0, ...]}         # one finite number per sample, same order

Robustness:

* every request has a timeout (``timeout_s``, connect and read);
* a failed request is retried at most ``max_retries`` times (``max_retries + 1``
  attempts in all) with exponential backoff ``min(max_backoff_s, backoff_s * 2**k)``
  plus up to ``jitter`` of that delay at random; a ``Retry-After`` header of a
  429/503 answer is honoured (capped at ``max_backoff_s``);
* retried: connection errors, timeouts, HTTP 408/429/5xx. Not retried (a retry
  would get the same answer): other 4xx (e.g. 401 for a bad key) and malformed
  answers (not JSON, no ``rewards`` list, wrong length, non-numbers, NaN/inf);
* a request is split into chunks of at most ``max_batch`` samples, and at most
  ``max_in_flight`` chunks are in flight at once (a thread pool of that size),
  so a big batch never floods the endpoint;
* when a chunk fails for good, :class:`HTTPRewardError` says in one line which
  URL failed, after how many attempts, and the last failure.

The API key is read from the environment variable named by ``api_key_env``
(the config holds the variable's *name*, never the key). It is sent only as a
bearer header, never logged, and removed from every error message; user-info
and query strings are stripped from URLs shown in messages as well.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

from rlcustom.errors import RLCustomError
from rlcustom.rewards import NonFiniteRewardError

__all__ = ["HTTPRewardClient", "HTTPRewardError", "HTTPNonFiniteRewardError", "redact_url"]

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class HTTPRewardError(RLCustomError, RuntimeError):
    """An HTTP reward endpoint failed for good (retries exhausted, or a malformed/refused answer)."""


class HTTPNonFiniteRewardError(HTTPRewardError, NonFiniteRewardError):
    """The endpoint answered NaN/inf for a sample: the trainer skips the step, as for a Python reward."""


class _Fatal(Exception):
    """A failure that a retry would not fix."""


def redact_url(url: str) -> str:
    """``url`` without user-info (``user:pass@``) and with the query string values hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username or parts.password:
        netloc = "***@" + netloc
    query = "&".join(f"{kv.split('=', 1)[0]}=***" if "=" in kv else kv for kv in parts.query.split("&")) \
        if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class HTTPRewardClient:
    """Scores (prompt, completion) pairs through an HTTP endpoint; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        jitter: float = 0.25,
        max_batch: int = 64,
        max_in_flight: int = 4,
        api_key_env: str | None = None,
        headers: Mapping[str, str] | None = None,
        seed: int | None = None,
    ) -> None:
        if not url or not str(url).startswith(("http://", "https://")):
            raise HTTPRewardError("reward endpoint: url must start with http:// or https://, "
                                  f"got {redact_url(str(url))!r}")
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError(f"max_batch and max_in_flight must be >= 1, got {max_batch}, {max_in_flight}")
        if backoff_s < 0 or max_backoff_s < 0 or jitter < 0:
            raise ValueError("backoff_s, max_backoff_s and jitter must be >= 0")
        self.url = str(url)
        self.shown_url = redact_url(self.url)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s, self.max_backoff_s, self.jitter = float(backoff_s), float(max_backoff_s), float(jitter)
        self.max_batch, self.max_in_flight = int(max_batch), int(max_in_flight)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json", **dict(headers or {})}
        self._secrets: list[str] = []
        if api_key_env:
            key = os.environ.get(api_key_env, "")
            if not key:
                raise HTTPRewardError(f"reward endpoint {self.shown_url}: environment variable {api_key_env!r} "
                                      "(api_key_env) is not set or empty")
            self._headers["Authorization"] = f"Bearer {key}"
            self._secrets.append(key)
        self._rng = random.Random(seed)
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.requests_sent = 0  # attempts, for metrics and tests
        self.retries = 0

    def __repr__(self) -> str:  # never shows headers (the key)
        return (f"HTTPRewardClient({self.shown_url!r}, timeout_s={self.timeout_s}, max_retries={self.max_retries}, "
                f"max_batch={self.max_batch}, max_in_flight={self.max_in_flight})")

    # -- public ----------------------------------------------------------------
    def score(self, prompts: Sequence[str], completions: Sequence[str],
              kwargs: Mapping[str, Any] | None = None) -> list[float]:
        """One finite reward per (prompt, completion), in order."""
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts and {len(completions)} completions")
        n = len(prompts)
        if n == 0:
            return []
        starts = list(range(0, n, self.max_batch))
        chunks = [(s, list(prompts[s : s + self.max_batch]), list(completions[s : s + self.max_batch]))
                  for s in starts]
        extra = dict(kwargs) if kwargs else None
        if len(chunks) == 1:
            results = [self._score_chunk(*chunks[0], extra)]
        else:
            futures = [self._executor().submit(self._score_chunk, s, p, c, extra) for s, p, c in chunks]
            results = []
            try:
                for f in futures:
                    results.append(f.result())
            finally:
                for f in futures:
                    f.cancel()  # chunks not yet started after a failure
        return [r for chunk in results for r in chunk]

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None

    def __enter__(self) -> "HTTPRewardClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:  # picklable (Ray): drop threads and sessions
        state = self.__dict__.copy()
        state.update(_pool=None, _local=None, _pool_lock=None, _count_lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local, self._pool_lock, self._count_lock = threading.local(), threading.Lock(), threading.Lock()

    # -- internals -------------------------------------------------------------
    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="reward-http")
            return self._pool

    def _session(self):
        import requests

        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        if self.url != self.shown_url:
            text = text.replace(self.url, self.shown_url)
        return text

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        base = min(self.max_backoff_s, self.backoff_s * (2 ** attempt))
        d = base * (1.0 + self.jitter * self._rng.random())
        if retry_after is not None:
            d = max(d, min(retry_after, self.max_backoff_s))
        return d

    def _fail(self, msg: str) -> HTTPRewardError:
        return HTTPRewardError(self._redact(msg))

    def _score_chunk(self, start: int, prompts: list[str], completions: list[str],
                     extra: dict | None) -> list[float]:
        import requests

        payload: dict[str, Any] = {"prompts": prompts, "completions": completions}
        if extra:
            payload["kwargs"] = extra
        body = json.dumps(payload)
        attempts = self.max_retries + 1
        last = "no attempt made"
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                with self._count_lock:
                    self.requests_sent += 1
                resp = self._session().post(self.url, data=body, headers=self._headers, timeout=self.timeout_s)
                if resp.status_code in RETRY_STATUS:
                    last = f"HTTP {resp.status_code}: {_snippet(resp.text)}"
                    retry_after = _retry_after(resp.headers.get("Retry-After"))
                elif resp.status_code >= 400:
                    raise _Fatal(f"HTTP {resp.status_code}: {_snippet(resp.text)} (not retried)")
                else:
                    return self._parse(resp, start, len(prompts))
            except _Fatal as e:
                raise self._fail(f"reward endpoint {self.shown_url} failed on samples {start}.."
                                 f"{start + len(prompts) - 1}: {e}") from None
            except requests.Timeout:
                last = f"timed out after {self.timeout_s:g} s"
            except requests.RequestException as e:
                last = f"{type(e).__name__}: {_first_line(e)}"
            if attempt + 1 < attempts:
                with self._count_lock:
                    self.retries += 1
                delay = self._delay(attempt, retry_after)
                log.warning("%s", self._redact(f"reward endpoint {self.shown_url}: attempt {attempt + 1}/{attempts} "
                                               f"failed ({last}); retrying in {delay:.2f} s"))
                time.sleep(delay)
        raise self._fail(f"reward endpoint {self.shown_url} failed after {attempts} attempt"
                         f"{'s' if attempts > 1 else ''} (timeout {self.timeout_s:g} s); last error: {last}")

    def _parse(self, resp, start: int, n: int) -> list[float]:
        where = f"reward endpoint {self.shown_url}: malformed response (HTTP {resp.status_code})"
        try:
            data = json.loads(resp.text)
        except ValueError as e:
            raise self._fail(f"{where}: not JSON ({e}): {_snippet(resp.text)}") from None
        if not isinstance(data, dict) or not isinstance(data.get("rewards"), list):
            raise self._fail(f"{where}: expected an object with a 'rewards' list, got {_snippet(resp.text)}")
        rewards = data["rewards"]
        if len(rewards) != n:
            raise self._fail(f"{where}: {len(rewards)} rewards for {n} samples (samples {start}..{start + n - 1})")
        out = []
        for j, r in enumerate(rewards):
            if isinstance(r, bool) or not isinstance(r, (int, float)):
                raise self._fail(f"{where}: reward for sample {start + j} is {r!r}, expected a finite number")
            if not math.isfinite(r):
                raise HTTPNonFiniteRewardError(self._redact(f"{where}: reward for sample {start + j} is {r!r}, "
                                                            "expected a finite number"))
            out.append(float(r))
        return out


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:300] if s else type(e).__name__


def _snippet(text: str, n: int = 200) -> str:
    t = " ".join((text or "").split())
    return repr(t[:n] + ("..." if len(t) > n else ""))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        v = float(value)
    except ValueError:
        return None  # an HTTP date: ignore, use our own backoff
    return v if v >= 0 and math.isfinite(v) else None
