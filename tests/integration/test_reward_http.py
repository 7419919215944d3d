"""HTTP reward client against a real local http.server: retries, timeouts, chunking, malformed answers, keys."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rlcustom.engines.base import Rollouts
from rlcustom.rewards.http import HTTPRewardClient, HTTPRewardError, redact_url


class RewardServer:
    """Scores each completion by its length. Knobs: ``delay_s`` (slow), ``fail_n`` (answer
    ``fail_status`` that many times first), ``malformed`` (a body that is not the protocol)."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.fail_n = 0
        self.fail_status = 500
        self.malformed: str | None = None
        self.retry_after: str | None = None  # Retry-After header of the failure answers
        self.echo_auth = False  # put the Authorization header in failure bodies (a careless server)
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests.append(body)
                    owner.auth.append(self.headers.get("Authorization"))
                    owner.in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
                    fail = owner.fail_n > 0
                    if fail:
                        owner.fail_n -= 1
                try:
                    if owner.delay_s:
                        time.sleep(owner.delay_s)
                    if fail:
                        err = {"error": "try again"}
                        if owner.echo_auth:
                            err["you_sent"] = self.headers.get("Authorization")
                        self._send(owner.fail_status, json.dumps(err).encode(), owner.retry_after)
                    elif owner.malformed is not None:
                        self._send(200, owner.malformed.encode())
                    else:
                        out = {"rewards": [float(len(c)) for c in body["completions"]]}
                        self._send(200, json.dumps(out).encode())
                finally:
                    with owner.lock:
                        owner.in_flight -= 1

            def _send(self, status: int, data: bytes, retry_after: str | None = None) -> None:
                try:
                    self.send_response(status)
                    if retry_after is not None:
                        self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/score"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = RewardServer()
    yield s
    s.close()


def client(url, **kw) -> HTTPRewardClient:
    opts = dict(timeout_s=2.0, max_retries=3, backoff_s=0.01, max_backoff_s=0.05, seed=0)
    opts.update(kw)
    return HTTPRewardClient(url, **opts)


def test_scores_in_order_and_chunks(server):
    comps = ["a" * i for i in range(7)]
    with client(server.url, max_batch=3) as c:
        assert c.score([f"p{i}" for i in range(7)], comps) == [float(i) for i in range(7)]
    assert [len(r["completions"]) for r in sorted(server.requests, key=lambda r: r["prompts"][0])] == [3, 3, 1]
    assert all(set(r) == {"prompts", "completions"} for r in server.requests)
    assert server.auth == [None] * 3


def test_at_most_max_in_flight(server):
    server.delay_s = 0.15
    with client(server.url, max_batch=1, max_in_flight=2) as c:
        t0 = time.monotonic()
        assert c.score(["p"] * 6, ["xx"] * 6) == [2.0] * 6
        dt = time.monotonic() - t0
    assert server.max_in_flight == 2
    assert dt >= 3 * 0.15 * 0.9  # 6 requests, 2 at a time


def test_retries_then_succeeds(server):
    server.fail_n = 2
    with client(server.url) as c:
        assert c.score(["p"], ["abc"]) == [3.0]
        assert c.retries == 2 and c.requests_sent == 3
    assert len(server.requests) == 3


def test_retries_exhausted_gives_one_line_error(server):
    server.fail_n = 100
    server.fail_status = 503
    with client(server.url, max_retries=2) as c, pytest.raises(HTTPRewardError) as ei:
        c.score(["p"], ["abc"])
    msg = str(ei.value)
    assert "\n" not in msg
    assert server.url in msg and "after 3 attempts" in msg and "HTTP 503" in msg
    assert len(server.requests) == 3


def test_timeout_triggers_and_is_retried(server):
    server.delay_s = 1.0
    t0 = time.monotonic()
    with client(server.url, timeout_s=0.2, max_retries=1) as c, pytest.raises(HTTPRewardError) as ei:
        c.score(["p"], ["abc"])
    assert time.monotonic() - t0 < 0.9  # two 0.2 s attempts + a short backoff, not the server's 1 s
    assert "timed out after 0.2 s" in str(ei.value) and "after 2 attempts" in str(ei.value)
    assert c.requests_sent == 2


@pytest.mark.parametrize("body, expect", [
    ("this is not json", "not JSON"),
    ('{"scores": [1.0]}', "expected an object with a 'rewards' list"),
    ('{"rewards": [1.0, 2.0]}', "2 rewards for 1 samples"),
    ('{"rewards": ["high"]}', "reward for sample 0 is 'high'"),
    ('{"rewards": [NaN]}', "reward for sample 0 is nan"),
])
def test_malformed_response_clear_error_no_retry(server, body, expect):
    server.malformed = body
    with client(server.url) as c, pytest.raises(HTTPRewardError) as ei:
        c.score(["p"], ["abc"])
    msg = str(ei.value)
    assert "malformed response" in msg and expect in msg and server.url in msg
    assert len(server.requests) == 1  # a retry would get the same answer


def test_client_error_is_not_retried(server):
    server.fail_n, server.fail_status = 5, 400
    with client(server.url) as c, pytest.raises(HTTPRewardError, match=r"HTTP 400.*not retried"):
        c.score(["p"], ["abc"])
    assert len(server.requests) == 1


def test_api_key_from_env_sent_as_bearer_and_redacted(server, monkeypatch):
    monkeypatch.setenv("RLCUSTOM_TEST_KEY", "s3cret-key-123")
    with client(server.url, api_key_env="RLCUSTOM_TEST_KEY") as c:
        assert c.score(["p"], ["ab"]) == [2.0]
        assert "s3cret" not in repr(c)
    assert server.auth == ["Bearer s3cret-key-123"]
    # a server that echoes the key back in its error body must not leak it into our message
    server.fail_n, server.fail_status, server.echo_auth = 5, 401, True
    with client(server.url, api_key_env="RLCUSTOM_TEST_KEY") as c, pytest.raises(HTTPRewardError) as ei:
        c.score(["p"], ["ab"])
    msg = str(ei.value)
    assert "HTTP 401" in msg and "Bearer ***" in msg and "s3cret" not in msg


def test_missing_api_key_env_names_the_variable(monkeypatch):
    monkeypatch.delenv("RLCUSTOM_MISSING_KEY", raising=False)
    with pytest.raises(HTTPRewardError, match="'RLCUSTOM_MISSING_KEY'"):
        HTTPRewardClient("http://127.0.0.1:9/score", api_key_env="RLCUSTOM_MISSING_KEY")


def test_connection_refused_is_retried_then_reported():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with client(f"http://127.0.0.1:{port}/x", max_retries=1) as c, pytest.raises(HTTPRewardError) as ei:
        c.score(["p"], ["a"])
    assert "after 2 attempts" in str(ei.value) and "ConnectionError" in str(ei.value)


def test_redact_url():
    assert redact_url("https://user:pw@host:8443/v1/score?key=abc&x=1") == \
        "https://***@host:8443/v1/score?key=***&x=***"
    assert redact_url("http://127.0.0.1:80/s") == "http://127.0.0.1:80/s"


def test_reward_actor_http_kind(server):
    from rlcustom.actors.reward import RewardActor

    r = Rollouts([[1], [1]], [[5, 6], [7]], [[0.0, 0.0], [0.0]], ["stop", "length"], [0, 1],
                 texts=["hello", "hi"], prompts=["q1", "q2"])
    actor = RewardActor("http", url=server.url, timeout_s=2.0, max_retries=1, backoff_s=0.01, api_key_env=None,
                        kwargs={"style": "short"})
    assert actor.score(r) == [5.0, 2.0]
    assert server.requests[0] == {"prompts": ["q1", "q2"], "completions": ["hello", "hi"], "kwargs": {"style": "short"}}
    actor.close()


def test_retry_warnings_never_log_the_key(server, monkeypatch, caplog):
    monkeypatch.setenv("RLCUSTOM_TEST_KEY", "s3cret-key-456")
    server.fail_n, server.fail_status, server.echo_auth = 2, 503, True
    with caplog.at_level("WARNING", logger="rlcustom.rewards.http"):
        with client(server.url, api_key_env="RLCUSTOM_TEST_KEY") as c:
            assert c.score(["p"], ["abcd"]) == [4.0]
    assert caplog.text.count("retrying") == 2
    assert "s3cret" not in caplog.text and "Bearer ***" in caplog.text


@pytest.fixture
def sleeps(monkeypatch):
    """The client's waits between attempts, recorded instead of slept."""
    import rlcustom.rewards.http as H

    out: list[float] = []
    monkeypatch.setattr(H.time, "sleep", out.append)
    return out


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_http_date_is_honoured(server, sleeps, status):
    from email.utils import formatdate

    server.fail_n, server.fail_status = 1, status
    server.retry_after = formatdate(time.time() + 30, usegmt=True)  # RFC 9110 HTTP-date, 30 s ahead
    with client(server.url, max_backoff_s=60.0) as c:
        assert c.score(["p"], ["abc"]) == [3.0]
    # the date has 1 s resolution and the request took a little time: 28..30 s, not the 0.01 s backoff
    assert len(sleeps) == 1 and 28.0 <= sleeps[0] <= 30.0


def test_retry_after_seconds_and_cap(server, sleeps):
    from email.utils import formatdate

    server.fail_n, server.fail_status, server.retry_after = 1, 503, "7"
    with client(server.url, max_backoff_s=60.0) as c:
        assert c.score(["p"], ["ab"]) == [2.0]
    server.fail_n, server.retry_after = 1, formatdate(time.time() + 3600, usegmt=True)
    with client(server.url, max_backoff_s=0.5) as c:
        assert c.score(["p"], ["ab"]) == [2.0]
    assert sleeps == [7.0, 0.5]  # an hour ahead is capped at max_backoff_s


def test_backoff_doubles_without_retry_after(server, sleeps):
    server.fail_n, server.fail_status = 3, 500
    with client(server.url, backoff_s=0.1, max_backoff_s=10.0, jitter=0.0, max_retries=3) as c:
        assert c.score(["p"], ["ab"]) == [2.0]
    assert sleeps == pytest.approx([0.0, 0.2, 0.4])  # urllib3: no wait before the 1st retry, then b * 2**(k-1)
