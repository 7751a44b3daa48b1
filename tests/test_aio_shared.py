"""Async and sync clients in one process share what is process-wide (issue 13), with REAL aiobotocore.

Fallbacks (remembered inference profiles, circuits), Region failover and the rate limiter's buckets
serve aiobotocore clients as they serve boto3 ones, from the same router and the same buckets; the
rate limiter tells asyncio tasks apart as it tells threads apart, and awaits its pacing waits.
"""

from __future__ import annotations

import asyncio


import bedrock_hooks
from bedrock_hooks import ratelimit
from bedrock_hooks.features import Runtime
from bedrock_hooks.testing import BedrockServer, Reply, sigv4_scope
from _aio import aconverse, aio_botocore_time, aio_client, aiobotocore_session  # noqa: F401 (fixture)
from _shared_state import fresh_shared_state  # noqa: F401  (autouse)
from conftest import converse, make_client, new_session

PRIMARY = "anthropic.claude-3-5-sonnet-20240620-v1:0"
SECOND = "anthropic.claude-3-haiku-20240307-v1:0"
ON_DEMAND = Reply.error(400, "ValidationException",
                        f"Invocation of model ID {PRIMARY} with on-demand throughput isn\u2019t supported. Retry your "
                        "request with the ID or ARN of an inference profile that contains this model.")


def by_model(behaviour):
    return lambda request: behaviour.get(request.model_id)


class Sleeps:
    """One fake clock for both kinds of client; their waits recorded apart."""

    def __init__(self, fake_time) -> None:
        self.fake_time = fake_time
        self.sync: list[float] = []
        self.async_: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sync.append(seconds)
        self.fake_time.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.async_.append(seconds)
        self.fake_time.now += seconds
        await asyncio.sleep(0)

    def runtime(self) -> Runtime:
        return Runtime(clock=self.fake_time.clock, sleep=self.sleep, async_sleep=self.async_sleep)


def test_a_profile_learned_by_a_sync_client_routes_the_async_clients_next_call(server, fake_time):
    bedrock_hooks.install(runtime=fake_time.runtime())
    server.handler = by_model({PRIMARY: ON_DEMAND})
    assert converse(make_client(new_session(), server), PRIMARY)["BedrockHooks"]["served_by"]["model"] == \
        f"us.{PRIMARY}"

    async def call():
        async with aio_client(aiobotocore_session(), server) as client:
            return await aconverse(client, PRIMARY)

    asyncio.run(call())
    assert [r.model_id for r in server.requests] == [PRIMARY, f"us.{PRIMARY}", f"us.{PRIMARY}"]


def test_an_async_client_upgrades_to_the_profile_and_the_sync_client_remembers_it(server, fake_time):
    bedrock_hooks.install(runtime=fake_time.runtime())
    server.handler = by_model({PRIMARY: ON_DEMAND})

    async def call():
        async with aio_client(aiobotocore_session(), server) as client:
            return await aconverse(client, PRIMARY)

    assert asyncio.run(call())["BedrockHooks"]["served_by"]["model"] == f"us.{PRIMARY}"
    converse(make_client(new_session(), server), PRIMARY)
    assert [r.model_id for r in server.requests] == [PRIMARY, f"us.{PRIMARY}", f"us.{PRIMARY}"]


def test_a_circuit_opened_by_async_calls_reroutes_sync_calls(server, fake_time):
    bedrock_hooks.install(runtime=fake_time.runtime(), fallbacks={PRIMARY: [SECOND]}, max_attempts=2,
                          circuit_threshold=2, circuit_window=60, circuit_cooldown=30)
    server.handler = by_model({PRIMARY: Reply.service_unavailable()})

    async def calls():
        async with aio_client(aiobotocore_session(), server) as client:
            return [await aconverse(client, PRIMARY) for _ in range(2)]

    replies = asyncio.run(calls())
    assert replies[-1]["BedrockHooks"]["served_by"]["model"] == SECOND
    before = len(server.requests)
    response = converse(make_client(new_session(), server), PRIMARY)
    assert [r.model_id for r in server.requests[before:]] == [SECOND]  # straight to the fallback
    assert response["BedrockHooks"]["route"][0]["reason"] == "circuit open"


def test_an_async_client_fails_over_to_a_pinned_region(server, fake_time):
    with BedrockServer() as west:
        server.default = Reply.service_unavailable()

        async def call():
            session = aiobotocore_session()
            bedrock_hooks.install(session, runtime=fake_time.runtime(), max_attempts=2,
                                  fallback_regions=f"us-west-2={west.url}")
            async with aio_client(session, server) as client:
                return await aconverse(client, SECOND)

        response = asyncio.run(call())
        assert response["BedrockHooks"]["served_by"] == {"model": SECOND, "region": "us-west-2"}
        assert [sigv4_scope(r)["region"] for r in west.requests] == ["us-west-2"]  # signed for the new Region


def _storm_from_this_thread(client, fake_time, calls: int = 20) -> None:
    for _ in range(calls):  # a second of 429s seen from one caller: one caller alone does not engage
        try:
            converse(client)
        except Exception:
            pass
        fake_time.now += 0.05


def test_each_tasks_answer_counts_for_the_quota_its_own_request_drew_on(server, fake_time):
    """Regression: what a client sent was kept per *thread* from before-send to response-received, and the
    tasks of an event loop interleave on one thread: a 429 for one model was booked to another model's
    quota (whichever task sent last), so the throttled model's bucket missed it and a healthy one was cut."""
    bedrock_hooks.install(runtime=fake_time.runtime(), max_attempts=1, rate_limit=True)
    server.handler = by_model({PRIMARY: Reply.throttling()})  # PRIMARY's quota is exhausted, SECOND's is not

    async def calls():
        async with aio_client(aiobotocore_session(), server, max_pool_connections=20) as client:
            async def one(model):
                try:
                    await aconverse(client, model)
                except Exception:
                    pass

            await asyncio.gather(*(one(model) for _ in range(10) for model in (PRIMARY, SECOND)))

    asyncio.run(calls())
    throttles = {scope.target: bucket.throttles for (scope, _), bucket in ratelimit.buckets().items()}
    assert throttles.get(f"model:{PRIMARY}") == 10 and not throttles.get(f"model:{SECOND}"), throttles


def test_tasks_on_one_thread_engage_pacing(server, fake_time):
    sleeps = Sleeps(fake_time)
    session = aiobotocore_session()
    bedrock_hooks.install(session, runtime=sleeps.runtime(), max_attempts=1, rate_limit=True)
    server.default = Reply.throttling()

    async def storm():
        async with aio_client(session, server) as client:
            async def one():
                try:
                    await aconverse(client)
                except Exception:
                    pass

            for _ in range(20):
                await asyncio.create_task(one())  # each call its own task, as in a server
                fake_time.now += 0.05
            (bucket,) = ratelimit.buckets().values()
            engaged = bucket.engaged
            server.default = Reply.ok()
            await asyncio.gather(*(one() for _ in range(6)))
            return engaged

    assert asyncio.run(storm())
    assert len(sleeps.async_) >= 4 and all(s > 0 for s in sleeps.async_)  # paced: waits awaited
    assert sleeps.sync == []


def test_sync_and_async_clients_of_one_quota_share_one_bucket_and_its_pacing(server, fake_time):
    sleeps = Sleeps(fake_time)
    bedrock_hooks.install(runtime=sleeps.runtime(), max_attempts=1, rate_limit=True)
    sync = make_client(new_session(), server)
    server.default = Reply.throttling()
    _storm_from_this_thread(sync, fake_time)

    async def async_side():
        async with aio_client(aiobotocore_session(), server) as client:
            try:
                await aconverse(client)  # a throttle from another caller (a task): engages the shared bucket
            except Exception:
                pass
            (bucket,) = ratelimit.buckets().values()
            assert bucket.engaged and bucket.throttles == 21
            server.default = Reply.ok()
            for _ in range(3):
                await aconverse(client)
                converse(sync)  # (a sync call inside the loop blocks it: only to interleave the two here)

    asyncio.run(async_side())
    assert sleeps.async_ and sleeps.sync  # both kinds paced by one schedule
    assert all(s > 0 for s in sleeps.async_ + sleeps.sync)


def test_one_bucket_for_both_kinds_of_client_even_without_a_storm(server, fake_time):
    bedrock_hooks.install(runtime=fake_time.runtime(), max_attempts=1, rate_limit=True)
    server.default = Reply.throttling()
    try:
        converse(make_client(new_session(), server))
    except Exception:
        pass

    async def call():
        async with aio_client(aiobotocore_session(), server) as client:
            try:
                await aconverse(client)
            except Exception:
                pass

    asyncio.run(call())
    (bucket,) = ratelimit.buckets().values()
    assert bucket.throttles == 2
