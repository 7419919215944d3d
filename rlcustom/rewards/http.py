"""A reward served over HTTP: POST ``{"prompts": [...], "completions": [...]}``, read ``{"rewards": [...]}``.

Protocol (one request per chunk of at most ``max_batch`` samples)::

    POST <url>
    Content-Type: application/json
    Authorization: Bearer <key>          # only when api_key_env names a set variable
    {"prompts": ["..."], "completions": ["..."]}          (+ "kwargs": {...} when given)

    200 OK
    {"rewards": [0.5, 1.0, ...]}         # one finite number per sample, same order

Robustness (the retry policy is urllib3's :class:`~urllib3.util.Retry`):

* every request has a timeout (``timeout_s``, connect and read);
* a failed request is retried at most ``max_retries`` times (``max_retries + 1``
  attempts in all). The wait before retry ``k`` (k = 1, 2, ...) is urllib3's backoff,
  ``min(max_backoff_s, backoff_s * 2**(k-1) + U(0, jitter * backoff_s))`` with no wait
  before the first retry, unless the answer carries ``Retry-After`` (seconds or an
  HTTP date, RFC 9110 10.2.3; on 429/503 answers): then that wait, capped at ``max_backoff_s``;
* retried: connection errors, timeouts, HTTP 408/429/5xx. Not retried (a retry
  would get the same answer): other 4xx (e.g. 401 for a bad key) and malformed
  answers (not JSON, no ``rewards`` list, wrong length, non-numbers, NaN/inf);
* a request is split into chunks of at most ``max_batch`` samples, and at most
  ``max_in_flight`` chunks are in flight at once (a thread pool of that size, over one
  urllib3 connection pool of that size), so a big batch never floods the endpoint;
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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

from rlcustom.errors import RLCustomError
from rlcustom.rewards.core import NonFiniteRewardError

__all__ = ["HTTPRewardClient", "HTTPRewardError", "HTTPNonFiniteRewardError", "redact_url"]

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class HTTPRewardError(RLCustomError, RuntimeError):
    """An HTTP reward endpoint failed for good (retries exhausted, or a malformed/refused answer)."""


class HTTPNonFiniteRewardError(HTTPRewardError, NonFiniteRewardError):
    """The endpoint answered NaN/inf for a sample: the trainer skips the step, as for a Python reward."""


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
        seed: int | None = None,  # accepted for compatibility; urllib3 draws the jitter
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
        self._http = None  # urllib3.PoolManager, made on first use (not pickled)
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
        state.update(_pool=None, _http=None, _pool_lock=None, _count_lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pool_lock, self._count_lock = threading.Lock(), threading.Lock()

    # -- internals -------------------------------------------------------------
    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="reward-http")
            return self._pool

    def _pool_manager(self):
        import urllib3

        with self._pool_lock:
            if self._http is None:
                self._http = urllib3.PoolManager(maxsize=self.max_in_flight, block=False)
            return self._http

    def retry_policy(self):
        """The urllib3 ``Retry`` this client follows (see the module docstring)."""
        from urllib3.util import Retry

        return Retry(total=self.max_retries, connect=None, read=None, redirect=0, status=None, other=None,
                     allowed_methods=None, status_forcelist=RETRY_STATUS, backoff_factor=self.backoff_s,
                     backoff_max=self.max_backoff_s, backoff_jitter=self.jitter * self.backoff_s,
                     respect_retry_after_header=True, retry_after_max=self.max_backoff_s, raise_on_status=False)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        if self.url != self.shown_url:
            text = text.replace(self.url, self.shown_url)
        return text

    def _fail(self, msg: str) -> HTTPRewardError:
        return HTTPRewardError(self._redact(msg))

    def _score_chunk(self, start: int, prompts: list[str], completions: list[str],
                     extra: dict | None) -> list[float]:
        import urllib3
        from urllib3.exceptions import MaxRetryError, NewConnectionError, TimeoutError as U3Timeout

        payload: dict[str, Any] = {"prompts": prompts, "completions": completions}
        if extra:
            payload["kwargs"] = extra
        body = json.dumps(payload).encode()
        http = self._pool_manager()
        retry = self.retry_policy()
        attempts = self.max_retries + 1
        timeout = urllib3.Timeout(connect=self.timeout_s, read=self.timeout_s)
        for attempt in range(1, attempts + 1):
            resp = error = None
            with self._count_lock:
                self.requests_sent += 1
            try:
                resp = http.request("POST", self.url, body=body, headers=self._headers, timeout=timeout,
                                    retries=False, redirect=False)
            except NewConnectionError as e:  # refused/unreachable (a subclass of urllib3's timeout error)
                error = f"ConnectionError: {_first_line(e)}"
            except U3Timeout:
                error = f"timed out after {self.timeout_s:g} s"
            except urllib3.exceptions.HTTPError as e:
                error = f"ConnectionError: {_first_line(e)}"
            if resp is not None:
                if 200 <= resp.status < 300:
                    return self._parse(resp, start, len(prompts))
                last = f"HTTP {resp.status}: {_snippet(_text(resp))}"
                if not retry.is_retry("POST", resp.status, resp.headers.get("Retry-After") is not None):
                    raise self._fail(f"reward endpoint {self.shown_url} failed on samples {start}.."
                                     f"{start + len(prompts) - 1}: {last} (not retried)")
            else:
                last = error
            try:
                retry = retry.increment("POST", self.url, response=resp, error=None if resp is not None else
                                        urllib3.exceptions.ProtocolError(error))
            except MaxRetryError:
                break
            # Retry-After (seconds or HTTP date, capped at retry_after_max) else the exponential backoff
            after = retry.get_retry_after(resp) if resp is not None else None
            delay = after if after is not None else retry.get_backoff_time()
            with self._count_lock:
                self.retries += 1
            log.warning("%s", self._redact(f"reward endpoint {self.shown_url}: attempt {attempt}/{attempts} "
                                           f"failed ({last}); retrying in {delay:.2f} s"))
            time.sleep(delay)
        raise self._fail(f"reward endpoint {self.shown_url} failed after {attempts} attempt"
                         f"{'s' if attempts > 1 else ''} (timeout {self.timeout_s:g} s); last error: {last}")

    def _parse(self, resp, start: int, n: int) -> list[float]:
        where = f"reward endpoint {self.shown_url}: malformed response (HTTP {resp.status})"
        text = _text(resp)
        try:
            data = json.loads(text)
        except ValueError as e:
            raise self._fail(f"{where}: not JSON ({e}): {_snippet(text)}") from None
        if not isinstance(data, dict) or not isinstance(data.get("rewards"), list):
            raise self._fail(f"{where}: expected an object with a 'rewards' list, got {_snippet(text)}")
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


def _text(resp) -> str:
    return resp.data.decode("utf-8", errors="replace")
