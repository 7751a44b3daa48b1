"""Async clients share the fleet's pacing on Redis (BEDROCK_HOOKS_STATE_URL=redis://), awaited, never blocking
the event loop: REAL aiobotocore clients, a real ``redis-server``, real processes, the loopback BedrockServer;
time injected everywhere.

A storm is driven by an async worker process (``subprocess``, its own aiobotocore session and event loop, a
fake clock); this test process's async client then sees its first 429 and is paced at once by the state the
worker's answers built, where with ``memory://`` it starts a bucket of its own and sends unpaced. Redis down
or stalled: calls go on, paced by this process's own copy, with one warning; a stalled Redis costs an
awaited call at most a few store timeouts, during which the loop runs other tasks.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

import bedrock_hooks
from bedrock_hooks import pacing_ops, ratelimit, store
from bedrock_hooks.features import Runtime
from bedrock_hooks.fleet_pacing import FleetBucket
from bedrock_hooks.quota_scope import QuotaScope
from bedrock_hooks.testing import Reply
from _aio import aconverse, aio_botocore_time, aio_client, aiobotocore_session  # noqa: F401 (fixture)
from _redis import _redis_session, free_port, own_redis, redis_server  # noqa: F401  (fixtures)
from _requires import require
from _shared_state import fresh_shared_state  # noqa: F401  (autouse)
from conftest import CREDS, FakeTime

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
T0 = 1_800_000_000.0  #: the fake wall clock every process of these tests starts from

#: An async fleet worker under a storm: ``calls`` throttled calls on one aiobotocore client, 50 ms apart on
#: its fake clock (its wall clock too).
ASYNC_STORM = r"""
import asyncio
import sys
from aiobotocore.session import AioSession
from botocore.config import Config
import bedrock_hooks
from bedrock_hooks.features import Runtime

class Fake:
    now = float(sys.argv[3])
    def clock(self):
        return self.now
    def sleep(self, seconds):
        raise AssertionError("an async client slept with the blocking Runtime.sleep")
    async def async_sleep(self, seconds):
        self.now += seconds

fake = Fake()
bedrock_hooks.install(runtime=Runtime(clock=fake.clock, wall=fake.clock, sleep=fake.sleep,
                                      async_sleep=fake.async_sleep),
                      max_attempts=1, state_url=sys.argv[2], state_timeout=0.5)

async def main():
    async with AioSession().create_client("bedrock-runtime", region_name="us-east-1", endpoint_url=sys.argv[1],
                                          aws_access_key_id=sys.argv[4], aws_secret_access_key=sys.argv[5],
                                          config=Config(retries={"mode": "standard"})) as client:
        for _ in range(int(sys.argv[6])):
            try:
                await client.converse(modelId="%s", messages=[{"role": "user", "content": [{"text": "hi"}]}])
            except Exception:
                pass
            fake.now += 0.05

asyncio.run(main())
print(fake.now)
""" % MODEL


def async_storm_in_another_process(bedrock_url: str, state_url: str, calls: int = 30) -> float:
    """Runs the async storm worker; returns its fake clock at the end."""
    require("aiobotocore", group="aio")  # the worker imports it: without it, skip (or fail where CI requires it)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEDROCK_HOOKS_") or k.startswith("BEDROCK_HOOKS_TEST_")}
    done = subprocess.run([sys.executable, "-c", ASYNC_STORM, bedrock_url, state_url, str(T0),
                           CREDS["aws_access_key_id"], CREDS["aws_secret_access_key"], str(calls)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip().splitlines()[-1])


class AsyncFake(FakeTime):
    """A fake clock whose sync sleep must never be used by an async client."""

    def sleep(self, seconds: float) -> None:
        raise AssertionError(f"an async client slept {seconds}s with the blocking Runtime.sleep")

    async def async_sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    def runtime(self, seed: int = 7) -> Runtime:
        return Runtime(clock=self.clock, wall=self.clock, sleep=self.sleep, async_sleep=self.async_sleep)


def install_here(fake: AsyncFake, state_url: str, **options):
    session = aiobotocore_session()
    bedrock_hooks.install(session, runtime=fake.runtime(), max_attempts=1, state_url=state_url, **options)
    return session


async def attempt(client) -> None:
    try:
        await aconverse(client, MODEL)
    except Exception:
        pass  # throttled: what matters is how long the library waited before sending


def shared_rate_state(redis_server) -> dict[str, float]:  # noqa: F811
    (key,) = redis_server.client().keys("bedrock-hooks:*:rate")
    return {k.decode(): float(v) for k, v in redis_server.client().hgetall(key).items()}


def run_async_client(server, session, calls, fake: AsyncFake | None = None, between: float = 0.0) -> None:
    async def scenario():
        async with aio_client(session, server) as client:
            for _ in range(calls):
                await attempt(client)
                if fake is not None:
                    fake.now += between

    asyncio.run(scenario())


# -- one schedule for sync and async processes ------------------------------------------------------

@pytest.mark.parametrize("state", ["redis", "memory"])
def test_an_async_client_is_paced_at_once_by_the_storm_another_async_process_saw(state, server, redis_server):  # noqa: F811
    url = redis_server.url if state == "redis" else "memory://"
    server.default = Reply.throttling()
    end = async_storm_in_another_process(server.url, url)
    fake = AsyncFake(now=end)
    session = install_here(fake, url, state_timeout=0.5)

    async def scenario():
        async with aio_client(session, server) as client:
            await attempt(client)  # this process's first 429: its bucket is made now
            fake.sleeps.clear()
            for _ in range(3):
                await attempt(client)

    asyncio.run(scenario())
    if state == "redis":
        assert len(fake.sleeps) == 3 and all(s > 0 for s in fake.sleeps)  # paced by the fleet's learned rate
        (bucket,) = ratelimit.buckets().values()
        assert isinstance(bucket, FleetBucket) and bucket.engaged
        assert not bucket.aio_store.down() and bucket.aio_store.failures == 0
    else:
        assert fake.sleeps == []  # the control: alone, one 429 is no storm; it sends unpaced
    keys = [k.decode() for k in redis_server.client().keys("bedrock-hooks:*:rate")]
    assert len(keys) == (1 if state == "redis" else 0)  # the async worker booked on Redis (or, memory, nowhere)
    assert not any(CREDS["aws_access_key_id"] in k for k in keys)


def test_the_shared_hash_counts_an_async_clients_bookings_and_answers(server, redis_server):  # noqa: F811
    server.default = Reply.throttling()
    end = async_storm_in_another_process(server.url, redis_server.url)
    before = shared_rate_state(redis_server)
    assert before["engaged"] == 1.0 and before["throttles"] >= 20
    fake = AsyncFake(now=end)
    run_async_client(server, install_here(fake, redis_server.url, state_timeout=0.5), 4)
    after = shared_rate_state(redis_server)
    assert after["throttles"] == before["throttles"] + 4  # each of this process's 429s observed on the fleet's state
    assert after["tat"] > before["tat"]  # and each paced send booked on the fleet's schedule
    (bucket,) = ratelimit.buckets().values()
    assert bucket.throttles == 4  # this process's own copy followed every change it made


def test_a_sync_process_is_paced_by_the_storm_an_async_process_saw(server, redis_server):  # noqa: F811
    from conftest import make_client, new_session

    server.default = Reply.throttling()
    end = async_storm_in_another_process(server.url, redis_server.url)
    fake = FakeTime(now=end)
    session = new_session()
    bedrock_hooks.install(session, runtime=Runtime(clock=fake.clock, wall=fake.clock, sleep=fake.sleep),
                          max_attempts=1, state_url=redis_server.url, state_timeout=0.5)
    client = make_client(session, server)
    for _ in range(3):
        try:
            client.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "hi"}]}])
        except Exception:
            pass
    assert len(fake.sleeps) == 2 and all(s > 0 for s in fake.sleeps)  # the second and third sends: the fleet's pace


def test_a_streams_settlement_reaches_the_shared_state(server, redis_server):  # noqa: F811
    server.default = Reply.throttling()
    end = async_storm_in_another_process(server.url, redis_server.url)
    fake = AsyncFake(now=end)
    session = install_here(fake, redis_server.url, state_timeout=0.5)
    server.default = Reply.ok()
    server.script(Reply.throttling())
    seen: dict[str, float] = {}

    async def scenario():
        async with aio_client(session, server) as client:
            await attempt(client)  # this process's first 429: its bucket of the (engaged) shared scope is made
            stream = (await client.converse_stream(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "hi"}]}]))["stream"]
            (bucket,) = ratelimit.buckets().values()
            seen["shared"], seen["local"] = shared_rate_state(redis_server)["sent"], bucket.state()["sent"]
            async for _ in stream:
                pass
            for _ in range(100):  # the shared settlement runs as a task of this loop
                if not ratelimit._background:
                    break
                await asyncio.sleep(0.001)
            seen["shared_after"], seen["local_after"] = shared_rate_state(redis_server)["sent"], bucket.state()["sent"]

    asyncio.run(scenario())
    delta = seen["local_after"] - seen["local"]
    assert delta != 0  # the stream's usage was settled against what its send booked...
    assert seen["shared_after"] - seen["shared"] == pytest.approx(delta)  # ...on the fleet's state too


# -- Redis down or slow: the call goes on ----------------------------------------------------------

def test_redis_down_async_calls_go_on_paced_in_process_with_one_warning(server, caplog):
    require("redis", group="redis")
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    server.default = Reply.throttling()
    fake = AsyncFake(now=T0)
    session = install_here(fake, f"redis://127.0.0.1:{free_port()}/0", state_timeout=0.05)  # nothing listens there
    run_async_client(server, session, 40, fake, between=0.05)
    assert len(server.requests) == 40  # every call was sent
    assert len([r for r in caplog.records if "shared state" in r.getMessage()]) == 1
    (bucket,) = ratelimit.buckets().values()
    assert isinstance(bucket, FleetBucket) and bucket.aio_store.down()
    assert bucket.engaged and any(s > 0 for s in fake.sleeps)  # this process's own copy paced the storm


def test_a_stalled_redis_costs_an_awaited_call_a_few_timeouts_and_never_blocks_the_loop(own_redis, server, caplog):  # noqa: F811
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    timeout = 0.05
    server.default = Reply.throttling()
    end = async_storm_in_another_process(server.url, own_redis.url)
    fake = AsyncFake(now=end)
    session = install_here(fake, own_redis.url, state_timeout=timeout)
    ticks: list[int] = [0]
    awaited: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            ticks[0] += 1
            await asyncio.sleep(0.001)

    async def scenario():
        async with aio_client(session, server) as client:
            await attempt(client)  # joins the fleet's engaged scope while Redis answers
            (bucket,) = ratelimit.buckets().values()
            own_redis.stall()
            stop = asyncio.Event()
            tick = asyncio.ensure_future(ticker(stop))
            try:
                started, before = time.perf_counter(), ticks[0]
                wait = await bucket.before_send_async(fake.now, 5.0, 100.0)  # the shared reservation, Redis stalled
                awaited.append(time.perf_counter() - started)
                assert ticks[0] > before  # while it was awaited, the loop ran the ticker
                assert wait >= 0.0 and bucket.aio_store.down()  # answered by this process's own copy
                for _ in range(3):
                    await attempt(client)  # calls go on
            finally:
                stop.set()
                await tick
                own_redis.resume()

    asyncio.run(scenario())
    assert awaited[0] < 20 * timeout  # generous: the bound is ROUND_TRIPS x timeout
    assert len([r for r in caplog.records if "shared state" in r.getMessage()]) == 1
    assert len(server.requests) == 30 + 4


# -- the async store itself ----------------------------------------------------------------------

SCOPE = QuotaScope("unsigned", "us-east-1", f"model:{MODEL}", "https://bedrock-runtime.us-east-1.amazonaws.com")


def _reserve(aio_store) -> tuple[float, ...]:
    return asyncio.run(aio_store.apply(pacing_ops.RESERVE, pacing_ops.FAMILY, SCOPE, T0, (1.0, 5.0,
                                       *pacing_ops.config_args(ratelimit.TOKEN_CONFIG)), 60.0))


def test_one_store_serves_loop_after_loop_and_loops_in_threads(redis_server):  # noqa: F811
    from bedrock_hooks.store_aio import AsyncRedisStore

    aio_store = AsyncRedisStore(redis_server.url, timeout=0.5)
    _reserve(aio_store)
    _reserve(aio_store)  # a second asyncio.run: a new loop, never the first loop's connection
    errors: list[BaseException] = []

    def in_a_thread() -> None:
        try:
            for _ in range(5):
                _reserve(aio_store)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=in_a_thread) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and aio_store.failures == 0 and not aio_store.down()
    sync_store = store.RedisStore(redis_server.url, timeout=0.5)
    key = sync_store.key(pacing_ops.FAMILY, SCOPE)
    assert aio_store.key(pacing_ops.FAMILY, SCOPE) == key  # the sync store's key: one state for both kinds
    assert float(redis_server.client().hget(key, "sent")) == 12.0  # 12 reservations of 1 unit, all on Redis


def test_the_async_store_answers_from_its_fallback_while_redis_is_down(own_redis, caplog):  # noqa: F811
    from bedrock_hooks.store_aio import AsyncRedisStore

    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    aio_store = AsyncRedisStore(own_redis.url, timeout=0.05)
    _reserve(aio_store)
    own_redis.stop()
    for _ in range(3):
        _reserve(aio_store)
    assert aio_store.down() and aio_store.failures == 1  # one try, then the fallback for RETRY_AFTER seconds
    (warning,) = [r.getMessage() for r in caplog.records if "shared state" in r.getMessage()]
    assert f"shared state at {own_redis.url} unavailable" in warning
    ((_, state),) = aio_store.fallback.snapshot(pacing_ops.FAMILY, T0)
    assert state["sent"] == 3.0  # the three reservations made while Redis was down, in process


def test_a_forked_child_never_uses_its_parents_redis_connections(redis_server):  # noqa: F811
    from bedrock_hooks.store_aio import AsyncRedisStore

    aio_store = AsyncRedisStore(redis_server.url, timeout=0.5)
    loop = asyncio.new_event_loop()  # the parent's loop stays open, its connection too, across the fork
    loop.run_until_complete(aio_store.apply(pacing_ops.RESERVE, pacing_ops.FAMILY, SCOPE, T0, (1.0, 5.0,
                            *pacing_ops.config_args(ratelimit.TOKEN_CONFIG)), 60.0))
    assert len(aio_store._clients) == 1
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            if not aio_store._clients:  # the parent's clients (and their sockets) forgotten...
                gc.collect()  # ...and never collected here (regression: that unregistered the parent's socket)
                _reserve(aio_store)
                code = 0 if aio_store.failures == 0 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    try:
        assert os.waitstatus_to_exitcode(status) == 0
        assert float(redis_server.client().hget(aio_store.key(pacing_ops.FAMILY, SCOPE), "sent")) == 2.0
        loop.run_until_complete(aio_store.apply(pacing_ops.RESERVE, pacing_ops.FAMILY, SCOPE, T0, (1.0, 5.0,
                                *pacing_ops.config_args(ratelimit.TOKEN_CONFIG)), 60.0))
        assert aio_store.failures == 0  # the parent's connection still serves the parent
    finally:
        loop.close()
