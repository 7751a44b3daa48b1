"""Retries of REAL aiobotocore clients never block the event loop (issue 13), against the loopback server.

Backoff is awaited on the injected async clock (``Runtime.async_sleep``; the sync ``Runtime.sleep`` is
never called for an async client) and aiobotocore is handed a zero, so nothing sleeps twice; a task
cancelled during its backoff stops at once and leaks nothing; many tasks share one client; the remedies
(clock skew, aiobotocore's async refreshable credentials) and the truncated-2xx check work; the retry
budget is aiobotocore's own quota.
"""

from __future__ import annotations

import asyncio
import datetime
import warnings

import pytest
from botocore.exceptions import ClientError

import bedrock_hooks
from bedrock_hooks.budget import budget_for
from bedrock_hooks.features import Runtime
from bedrock_hooks.testing import Reply
from _requires import require
from _aio import aconverse, aio_botocore_time, aio_client, aiobotocore_session  # noqa: F401 (fixture)

EXPIRED = Reply.error(403, "ExpiredTokenException", "The security token included in the request is expired")


def _no_sync_sleep(seconds: float) -> None:
    raise AssertionError(f"the blocking Runtime.sleep({seconds}) was called for an async client")


def async_runtime(fake_time) -> Runtime:
    rt = fake_time.runtime()
    return Runtime(clock=rt.clock, sleep=_no_sync_sleep, async_sleep=rt.async_sleep, wall=rt.wall, rng=rt.rng)


def run(coro):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "coroutine ... was never awaited" fails the test
        return asyncio.run(coro)


def test_backoff_is_awaited_on_the_async_clock_and_aiobotocore_sleeps_nothing(server, fake_time, aio_botocore_time):
    async def scenario():
        session = aiobotocore_session()
        bedrock_hooks.install(session, runtime=async_runtime(fake_time))
        async with aio_client(session, server) as client:
            server.script(Reply.throttling(), Reply.throttling(), Reply.throttling())
            return await aconverse(client)

    reply = run(scenario())
    assert reply["ResponseMetadata"]["RetryAttempts"] == 3
    assert len(fake_time.sleeps) == 3 and all(s > 0 for s in fake_time.sleeps)
    assert all(s == 0 for s in aio_botocore_time.sleeps)  # aiobotocore got zeros: nothing slept twice


def test_the_budget_is_aiobotocores_own_retry_quota(server, fake_time):
    async def scenario():
        session = aiobotocore_session()
        bedrock_hooks.install(session, runtime=fake_time.runtime())
        async with aio_client(session, server) as client:
            budget = budget_for(client)
            before = budget.available
            server.script(Reply.service_unavailable())
            await aconverse(client)
            return budget, before

    budget, before = run(scenario())
    assert not budget.private and type(budget.checker).__module__.startswith("botocore.retries")
    assert before == 500 and budget.available == 500  # charged for the retry, refunded by aiobotocore on success


def test_a_truncated_2xx_is_retried_without_awaiting_inside_a_sync_handler(server, fake_time, caplog):
    async def scenario():
        session = aiobotocore_session()
        bedrock_hooks.install(session, runtime=fake_time.runtime(), max_attempts=2)
        async with aio_client(session, server) as client:
            server.script(Reply.truncated(Reply.ok(), 10))
            ok = await aconverse(client)
            server.script(Reply.truncated(Reply.ok(), 10), Reply.truncated(Reply.ok(), 10))
            with pytest.raises(Exception) as raised:
                await aconverse(client)
            return ok, raised.value

    caplog.set_level("WARNING", logger="bedrock_hooks")
    ok, error = run(scenario())
    assert ok["ResponseMetadata"]["RetryAttempts"] == 1 and ok["output"]
    # aiohttp itself notices a body shorter than its Content-Length: aiobotocore raises it as a closed
    # connection (as botocore did before 1.43.115), retried on a fresh one, with the hint
    assert type(error).__name__ in ("IncompleteReadError", "ConnectionClosedError")
    assert "[bedrock-hooks] TruncatedResponse" in str(error) or "[bedrock-hooks] IdleConnectionReset" in str(error)
    assert not [r for r in caplog.records if r.name.startswith("bedrock_hooks")
                and r.name != "bedrock_hooks.decisions"]  # no handler failed on the way (the final failure's line is fine)


def test_a_task_cancelled_during_its_backoff_stops_at_once_and_leaks_nothing(server):
    """The backoff never ends on its own here: only the cancellation can end it. With one pooled
    connection, a leaked connection would make every later call wait forever (bounded by wait_for)."""
    started = []

    async def endless_backoff(seconds: float) -> None:
        started.append(seconds)
        await asyncio.Event().wait()

    async def scenario():
        session = aiobotocore_session()
        bedrock_hooks.install(session, runtime=Runtime(sleep=_no_sync_sleep, async_sleep=endless_backoff))
        async with aio_client(session, server, max_pool_connections=1) as client:
            budget = budget_for(client)
            server.script(Reply.throttling())
            task = asyncio.create_task(aconverse(client))
            while not started:
                await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=2)
            assert task.cancelled()
            assert asyncio.all_tasks() == {asyncio.current_task()}
            replies = await asyncio.wait_for(asyncio.gather(*(aconverse(client) for _ in range(5))), timeout=10)
            return replies, len(server.requests), budget.available

    replies, requests, available = run(scenario())
    assert len(started) == 1 and all(r["output"] for r in replies)
    assert requests == 1 + 5  # the cancelled call was not re-sent
    assert available is not None and available >= 500 - 5  # at most the one retry's charge stays held


def test_many_concurrent_tasks_share_one_client(server, fake_time):
    tasks = 60

    async def yielding_sleep(seconds: float) -> None:
        fake_time.sleep(seconds)
        await asyncio.sleep(0)  # let the other tasks run while this one "waits"

    async def scenario():
        session = aiobotocore_session()
        bedrock_hooks.install(session, runtime=Runtime(clock=fake_time.clock, sleep=_no_sync_sleep,
                                                         async_sleep=yielding_sleep))
        async with aio_client(session, server, max_pool_connections=20) as client:
            throttled: set[bytes] = set()

            def once_per_task(request):  # each task's first request is throttled, its retry is served
                if request.body in throttled:
                    return None
                throttled.add(request.body)
                return Reply.throttling()

            server.handler = once_per_task
            return await asyncio.gather(*(aconverse(client, text=f"task {n}") for n in range(tasks)))

    replies = run(scenario())
    assert len(replies) == tasks and all(r["output"]["message"] for r in replies)
    assert sum(r["ResponseMetadata"]["RetryAttempts"] for r in replies) == tasks
    assert len(server.requests) == 2 * tasks and len(fake_time.sleeps) == tasks


def _x_amz_date(request) -> datetime.datetime:
    return datetime.datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=datetime.timezone.utc)


@pytest.mark.needs_internals("clock-skew")
def test_clock_skew_is_corrected_for_aiobotocores_signer(server, fake_time):
    ahead = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=10)

    async def scenario():
        session = aiobotocore_session()
        bedrock_hooks.install(session, runtime=fake_time.runtime())
        async with aio_client(session, server) as client, aio_client(aiobotocore_session(), server) as other:
            server.script(Reply.with_date(Reply.error(403, "InvalidSignatureException", "Signature expired: x"),
                                          ahead))
            await aconverse(client)
            await aconverse(client)  # later calls of the corrected client too
            await aconverse(other)  # another client keeps the real clock

    run(scenario())
    first, second, third, other = server.requests
    assert abs((_x_amz_date(first) - ahead).total_seconds()) > 500
    assert abs((_x_amz_date(second) - ahead).total_seconds()) < 30
    assert abs((_x_amz_date(third) - ahead).total_seconds()) < 30
    assert abs((_x_amz_date(other) - ahead).total_seconds()) > 500
    assert fake_time.sleeps == []


class AsyncProvider:
    """An async credential provider (aiobotocore's refresh is awaited) counting its calls."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def metadata(self, n: int) -> dict[str, str]:
        expiry = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).isoformat()
        return {"access_key": f"AKID{n}", "secret_key": "s3cr3t", "token": f"tok{n}", "expiry_time": expiry}

    async def __call__(self) -> dict[str, str]:
        self.calls += 1
        await asyncio.sleep(0.001)  # a real await: other tasks run meanwhile
        if self.fail:
            raise RuntimeError("sts is down")
        return self.metadata(self.calls)


def _refreshable_aio_session(provider: AsyncProvider):
    from aiobotocore.credentials import AioRefreshableCredentials

    session = aiobotocore_session()
    session._credentials = AioRefreshableCredentials.create_from_metadata(provider.metadata(0), provider,
                                                                          "assume-role")
    return session


def _expire(server, key: str) -> None:
    server.handler = lambda request: EXPIRED if f"Credential={key}/" in request.headers.get("Authorization", "") \
        else None


def test_expired_async_credentials_are_refreshed_once_for_a_herd_of_tasks(server, fake_time):
    require("aiobotocore.credentials", group="aio")
    provider = AsyncProvider()
    herd = 20

    async def scenario():
        session = _refreshable_aio_session(provider)
        bedrock_hooks.install(session, runtime=Runtime(sleep=_no_sync_sleep, async_sleep=fake_time.async_sleep))
        async with aio_client(session, server, max_pool_connections=herd, session_credentials=True) as client:
            _expire(server, "AKID0")
            return await asyncio.gather(*(aconverse(client) for _ in range(herd)))

    replies = run(scenario())
    assert len(replies) == herd and provider.calls == 1
    signed = [r.headers.get("Authorization", "") for r in server.requests]
    assert sum("Credential=AKID0/" in a for a in signed) == herd
    assert sum("Credential=AKID1/" in a for a in signed) == herd


def failing_refresh_call(server, fake_time, provider: AsyncProvider) -> tuple[ClientError, int]:
    """One call of a hooked aio client whose credentials expired and whose provider fails to refresh them:
    the error raised, and the client's retry quota afterwards (tests/test_telemetry_aio.py uses it too)."""
    async def scenario():
        session = _refreshable_aio_session(provider)
        bedrock_hooks.install(session, runtime=fake_time.runtime())
        async with aio_client(session, server, session_credentials=True) as client:
            budget = budget_for(client)
            _expire(server, "AKID0")
            with pytest.raises(ClientError) as raised:
                await aconverse(client)
            return raised.value, budget.available

    return run(scenario())


def test_a_failing_async_refresh_is_not_retried_and_says_why(server, fake_time):
    require("aiobotocore.credentials", group="aio")
    provider = AsyncProvider(fail=True)
    error, available = failing_refresh_call(server, fake_time, provider)
    assert provider.calls == 1 and len(server.requests) == 1
    info = error.response["BedrockHooks"]
    assert info["entry"] == "ExpiredToken" and info["stopped_because"] == "remedy-unavailable"
    assert "refresh failed" in str(error)
    assert available == 500  # the retry's charge was given back


@pytest.mark.filterwarnings("ignore:aiobotocore's httpx backend:DeprecationWarning")  # aiobotocore's, not ours
def test_the_httpx_backend_is_served_alike(server, fake_time, monkeypatch):
    """aiobotocore's httpx backend (``AioConfig(http_session_cls=HttpxSession)``: AnyioEndpoint, anyio retry
    handler): backoff on the injected async clock, a cut body retried on a fresh connection."""
    require("aiobotocore.session", group="aio")  # httpx alone (the frameworks env has it) is not enough
    require("httpx", group="httpx")  # aiobotocore's optional httpx backend (.ci/envs: the aio environment)
    from aiobotocore import httpxsession
    from aiobotocore.config import AioConfig
    from aiobotocore.httpxsession import HttpxSession

    if hasattr(httpxsession, "_LEGACY_HTTPX_WARNED"):  # aiobotocore warns once per process about legacy httpx:
        monkeypatch.setattr(httpxsession, "_LEGACY_HTTPX_WARNED", True)  # leave that once to tests that expect it

    from conftest import CREDS

    async def scenario():
        session = aiobotocore_session()
        bedrock_hooks.install(session, runtime=async_runtime(fake_time))
        config = AioConfig(http_session_cls=HttpxSession, retries={"mode": "standard"}, read_timeout=5)
        async with session.create_client("bedrock-runtime", region_name="us-east-1", endpoint_url=server.url,
                                         config=config, **CREDS) as client:
            server.script(Reply.throttling(), Reply.truncated(Reply.ok(), 10))
            return await aconverse(client)

    reply = run(scenario())
    assert reply["ResponseMetadata"]["RetryAttempts"] == 2 and len(fake_time.sleeps) == 1
