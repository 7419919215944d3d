"""Load: one rollout actor under a queue of many small generate calls, and a reward endpoint that
is slow and failing. Every call is answered in order, memory stays bounded, the run goes on
through transient failures and stops with one line when the endpoint is down for good.

Memory bounds are deliberately generous (they catch a leak per call, not noise): a leak of even
1 KiB per call over the 400 calls here would show as growth in the second half vs. the first.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import ray

from rlcustom.config import ModelConfig
from rlcustom.engines.base import Rollouts, SamplingParams

sys.path.insert(0, str(Path(__file__).parent))
from test_reward_http import RewardServer  # noqa: E402  (the protocol's test server)

pytestmark = pytest.mark.usefixtures("local_ray")


@pytest.fixture
def server():
    s = RewardServer()
    yield s
    s.close()


def test_many_small_generate_calls_in_order_with_bounded_memory(tiny_dir):
    from rlcustom.actors.rollout import RolloutActor

    actor = ray.remote(RolloutActor).options(num_cpus=0.5).remote(ModelConfig(path=str(tiny_dir)), engine="hf",
                                                                  num_threads=1)
    params = SamplingParams(max_new_tokens=2, temperature=1.0, seed=0)
    prompts = [[1, 2 + (i % 500), 3 + (i // 500)] for i in range(400)]

    def burst(ps):  # all queued at once: the actor takes them one by one
        refs = [actor.generate.remote([p], params.with_(seed=i)) for i, p in enumerate(ps)]
        return ray.get(refs, timeout=600)

    burst(prompts[:20])  # warm-up (allocator, caches)
    rss0 = ray.get(actor.rss_bytes.remote())
    first = burst(prompts[:200])
    rss1 = ray.get(actor.rss_bytes.remote())
    second = burst(prompts[200:])
    rss2 = ray.get(actor.rss_bytes.remote())
    out = first + second
    assert len(out) == 400 and all(isinstance(r, Rollouts) and len(r) == 1 for r in out)
    assert [r.prompt_ids[0] for r in out] == prompts  # every call answered, in order
    assert all(1 <= len(r.response_ids[0]) <= 2 for r in out)
    assert rss2 - rss1 < 64 * 2**20, (rss0, rss1, rss2)  # no growth per call (each answer is ~1 KiB)
    assert rss2 < rss0 + 256 * 2**20, (rss0, rss1, rss2)
    ray.kill(actor)


def test_slow_and_failing_endpoint_retried_then_the_run_goes_on(tiny_dir, tmp_path, server):
    """Every other request first answers 503 and the first one is slower than the timeout:
    retries with backoff absorb both; chunks in flight never exceed the client's bound."""
    from rlcustom.config import load_config
    from rlcustom.trainers import run_trainer

    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in ["Say hi.", "Name a color."]))
    calls = []
    orig = server.httpd.RequestHandlerClass.do_POST

    def do_post(handler):  # request 1 hangs past the client's timeout, requests 2 and 3 get 503
        calls.append(len(calls) + 1)
        n = calls[-1]
        if n == 1:
            handler.rfile.read(int(handler.headers["Content-Length"]))
            time.sleep(1.5)
            return None  # the client has given up; no answer
        if n in (2, 3):
            handler.rfile.read(int(handler.headers["Content-Length"]))
            return handler._send(503, b'{"error": "busy"}')
        return orig(handler)

    server.httpd.RequestHandlerClass.do_POST = do_post
    cfg = load_config(None, [
        "trainer=pg", f"model.path={tiny_dir}", f"output_dir={tmp_path / 'run'}", f"data.prompts={p}",
        "data.split=all", "steps=2", "engine=hf", "sampling.max_new_tokens=4", "algo.prompts_per_step=2",
        "reward.spec=http", f"reward.url={server.url}", "reward.timeout_s=0.5", "reward.max_retries=4",
        "tracking.mode=disabled", "roles.learner.zero_stage=0", "roles.learner.cpus=0.5",
        "roles.rollout.cpus=0.5", "roles.reward.cpus=0.5", "cluster.backend=inprocess"])  # retries: the actor's own
    res = run_trainer(cfg)
    assert [h["step"] for h in res["history"]] == [1, 2]
    assert calls == [1, 2, 3, 4, 5]  # step 1: timeout, 503, 503, answered; step 2: answered
    assert len(server.requests) == 2 and server.max_in_flight <= 4  # the client's max_in_flight
    assert all(h["reward/mean"] > 0 for h in res["history"])  # scored by the endpoint (completion length)


def test_endpoint_down_for_good_stops_with_one_line(server):
    """Retries exhausted inside the reward actor: one line naming the URL and the attempts, and the
    actor stays usable (the next call succeeds once the endpoint is back)."""
    from rlcustom.actors.reward import RewardActor
    from rlcustom.rewards.http import HTTPRewardError
    from rlcustom.trainers.base import unwrap_ray_error

    server.fail_n, server.fail_status = 10**6, 500
    actor = ray.remote(RewardActor).options(num_cpus=0.25).remote(
        "http", url=server.url, timeout_s=0.5, max_retries=2, backoff_s=0.01, max_backoff_s=0.05)
    ro = Rollouts([[1, 2]], [[3, 4]], [[0.0, 0.0]], ["length"], [0], texts=["abc"], prompts=["p"])
    with pytest.raises(HTTPRewardError) as ei:
        try:
            ray.get(actor.score.remote(ro), timeout=120)
        except Exception as e:  # noqa: BLE001
            raise unwrap_ray_error(e) from None
    msg = str(ei.value)
    assert "\n" not in msg and f"reward endpoint {server.url} failed after 3 attempts" in msg and "HTTP 500" in msg
    server.fail_n = 0
    assert ray.get(actor.score.remote(ro), timeout=60) == [3.0]
    ray.kill(actor)
