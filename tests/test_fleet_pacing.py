"""Pacing shared by the processes of a fleet (BEDROCK_HOOKS_STATE_URL=redis://): one bucket per quota scope
on a real ``redis-server``, several real processes, the loopback BedrockServer; time injected everywhere.

The storm is driven by a worker process (``subprocess``) with a fake clock; this test process then sees
its first 429 and is paced at once by the state the worker's answers built, where with ``memory://`` it
would start a bucket of its own and send unpaced. Redis stalled (SIGSTOP) or down: calls go on, paced by
this process's own copy of the state, with one warning.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

import pytest

import bedrock_hooks
from bedrock_hooks import ratelimit, store
from bedrock_hooks.features import Runtime
from bedrock_hooks.fleet_pacing import FleetBucket
from bedrock_hooks.testing import Reply
from conftest import CREDS, FakeTime, converse, make_client, new_session
from _redis import _redis_session, own_redis, redis_server  # noqa: F401  (fixtures)
from _shared_state import fresh_shared_state  # noqa: F401  (autouse)

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
T0 = 1_800_000_000.0  #: the fake wall clock every process of these tests starts from
HANG = 20.0

#: A fleet worker under a storm: ``calls`` throttled calls, 50 ms apart on its fake clock (its wall clock too).
STORM = r"""
import sys
import boto3
from botocore.config import Config
import bedrock_hooks
from bedrock_hooks.features import Runtime

class Fake:
    now = float(sys.argv[3])
    def clock(self):
        return self.now
    def sleep(self, seconds):
        self.now += seconds

fake = Fake()
session = boto3.Session(region_name="us-east-1", aws_access_key_id=sys.argv[4], aws_secret_access_key=sys.argv[5])
bedrock_hooks.install(session, runtime=Runtime(clock=fake.clock, wall=fake.clock, sleep=fake.sleep), max_attempts=1,
                      state_url=sys.argv[2], state_timeout=0.5)
client = session.client("bedrock-runtime", endpoint_url=sys.argv[1], config=Config(retries={"mode": "standard"}))
for _ in range(int(sys.argv[6])):
    try:
        client.converse(modelId="%s", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    except Exception:
        pass
    fake.now += 0.05
print(fake.now)
""" % MODEL


def storm_in_another_process(bedrock_url: str, state_url: str, calls: int = 30) -> float:
    """Runs the storm worker; returns its fake clock at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEDROCK_HOOKS_") or k.startswith("BEDROCK_HOOKS_TEST_")}
    done = subprocess.run([sys.executable, "-c", STORM, bedrock_url, state_url, str(T0), CREDS["aws_access_key_id"],
                           CREDS["aws_secret_access_key"], str(calls)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip().splitlines()[-1])


def hooked_here(server, fake: FakeTime, state_url: str, **options):
    session = new_session()
    runtime = Runtime(clock=fake.clock, wall=fake.clock, sleep=fake.sleep)
    bedrock_hooks.install(session, runtime=runtime, max_attempts=1, state_url=state_url, **options)
    return make_client(session, server)


def attempt(client) -> None:
    try:
        converse(client, MODEL)
    except Exception:
        pass  # throttled: what matters is how long the library waited before sending


@pytest.mark.parametrize("state", ["redis", "memory"])
def test_a_process_is_paced_at_once_by_the_storm_the_fleet_saw(state, server, redis_server):  # noqa: F811
    url = redis_server.url if state == "redis" else "memory://"
    server.default = Reply.throttling()
    end = storm_in_another_process(server.url, url)
    fake = FakeTime(now=end)
    client = hooked_here(server, fake, url, state_timeout=0.5)
    attempt(client)  # this process's first 429: its bucket is made now
    fake.sleeps.clear()
    for _ in range(3):
        attempt(client)
    if state == "redis":
        assert len(fake.sleeps) == 3 and all(s > 0 for s in fake.sleeps)  # paced by the fleet's learned rate
        (bucket,) = ratelimit.buckets().values()
        assert isinstance(bucket, FleetBucket) and bucket.engaged
    else:
        assert fake.sleeps == []  # the control: alone, one 429 is no storm; it sends unpaced
    keys = [k.decode() for k in redis_server.client().keys("bedrock-hooks:*:rate")]
    assert len(keys) == (1 if state == "redis" else 0)
    assert not any(CREDS["aws_access_key_id"] in k for k in keys)


def test_nothing_is_sent_to_redis_while_nothing_is_throttled(server, redis_server):  # noqa: F811
    client = hooked_here(server, FakeTime(now=T0), redis_server.url, state_timeout=0.5)
    converse(client, MODEL)  # the first call: the fleet's hot models are read once (fallbacks, once a second)
    watcher = redis_server.client()
    before = watcher.info("stats")["total_commands_processed"]
    for _ in range(20):
        converse(client, MODEL)
    after = watcher.info("stats")["total_commands_processed"]
    assert after - before <= 1  # the first INFO itself: not one command for 20 calls
    assert ratelimit.buckets() == {}


def test_a_stalled_redis_never_stalls_a_paced_call(own_redis, server, caplog):  # noqa: F811
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    server.default = Reply.throttling()
    end = storm_in_another_process(server.url, own_redis.url)
    fake = FakeTime(now=end)
    client = hooked_here(server, fake, own_redis.url, state_timeout=0.005)
    attempt(client)
    own_redis.stall()
    done = threading.Event()

    def calls() -> None:
        for _ in range(5):
            attempt(client)
        done.set()

    threading.Thread(target=calls, daemon=True).start()
    finished = done.wait(HANG)
    own_redis.resume()
    assert finished, "a call stalled on Redis"
    assert len([r for r in caplog.records if "shared state" in r.getMessage()]) == 1
    (bucket,) = ratelimit.buckets().values()
    assert bucket.store.down()  # serving from this process's own copy until Redis answers again


def test_memory_state_makes_plain_buckets(server, fake_time):
    server.default = Reply.throttling()
    client = hooked_here(server, fake_time, "memory://")
    attempt(client)
    (bucket,) = ratelimit.buckets().values()
    assert type(bucket) is ratelimit.Bucket
    assert not store.store_for(bedrock_hooks.config.load_settings({})).shared
