"""Async clients share circuits and remembered inference profiles on Redis (issue 14), awaited, never blocking the
event loop: REAL aiobotocore clients in this process, REAL boto3 clients in other processes (``subprocess``), a real
``redis-server``, the loopback BedrockServer.

A circuit another process opened sends this process's async call to the fallback at once, and a circuit async calls
opened sends another process's call there; an inference profile one side learned spares the other its 400. With
``memory://`` (the controls) each process learns alone, as before. Redis down or stalled: async calls go on with
in-process state and one warning, and a ticker task shows the loop kept running while the store was awaited.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time

import pytest

import bedrock_hooks
from bedrock_hooks import fallbacks, store
from bedrock_hooks.features import Runtime
from bedrock_hooks.installation import attached_features
from bedrock_hooks.testing import Reply
from _aio import aconverse, aio_botocore_time, aio_client, aiobotocore_session  # noqa: F401 (fixture)
from _redis import _redis_session, free_port, own_redis, redis_server  # noqa: F401  (fixtures)
from _requires import require
from _shared_state import WORKER, fresh_shared_state  # noqa: F401  (autouse)
from conftest import CREDS, FakeTime

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
FALLBACK = "anthropic.claude-3-haiku-20240307-v1:0"
ON_DEMAND = Reply.error(400, "ValidationException",
                        f"Invocation of model ID {MODEL} with on-demand throughput isn\u2019t supported. Retry your "
                        "request with the ID or ARN of an inference profile that contains this model.")
CIRCUIT = {"BEDROCK_HOOKS_FALLBACKS": f"{MODEL}={FALLBACK}", "BEDROCK_HOOKS_CIRCUIT_THRESHOLD": "2"}

#: A sync fleet worker in its own process: install from the environment, make ``calls`` calls, print who served them.
def another_process(bedrock_url: str, state_url: str, calls: int = 1, **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BEDROCK_HOOKS_") or k.startswith(
        "BEDROCK_HOOKS_TEST_")}
    environ.update(BEDROCK_HOOKS_STATE_URL=state_url, BEDROCK_HOOKS_STATE_TIMEOUT="0.5", **env)
    done = subprocess.run([sys.executable, "-c", WORKER, bedrock_url, MODEL, str(calls), CREDS["aws_access_key_id"],
                           CREDS["aws_secret_access_key"]], env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def install_here(state_url: str, runtime: Runtime | None = None, **options):
    """An aiobotocore session of this process with the library installed (real wall clock unless told)."""
    require("aiobotocore", group="aio")
    session = aiobotocore_session()
    runtime = runtime or Runtime(sleep=_no_blocking_sleep, async_sleep=_no_wait)
    bedrock_hooks.install(session, runtime=runtime, max_attempts=1, state_url=state_url, **options)
    return session


def _no_blocking_sleep(seconds: float) -> None:
    raise AssertionError(f"an async client slept {seconds}s with the blocking Runtime.sleep")


async def _no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


def async_calls(server, session, calls: int, hooks: list | None = None) -> list[str]:
    """``calls`` converse calls of one async client: who served each (or the error's name); its fallback feature
    appended to ``hooks``."""
    async def scenario():
        seen = []
        async with aio_client(session, server) as client:
            if hooks is not None:
                hooks.extend(f for f in attached_features(client) if isinstance(f, fallbacks.FallbackHooks))
            for _ in range(calls):
                try:
                    out = await aconverse(client, MODEL)
                    seen.append(out.get("BedrockHooks", {}).get("served_by", {}).get("model", MODEL))
                except Exception as exc:
                    seen.append(type(exc).__name__)
        return seen

    return asyncio.run(scenario())


def state_url_of(state: str, redis_server) -> str:  # noqa: F811
    return redis_server.url if state == "redis" else "memory://"


def shared_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "shared state" in r.getMessage()]


# -- (a) circuits ------------------------------------------------------------------------------------

@pytest.mark.parametrize("state", ["redis", "memory"])
def test_a_circuit_another_process_opened_sends_an_async_call_to_the_fallback_at_once(state, server, redis_server):  # noqa: F811
    url = state_url_of(state, redis_server)
    server.handler = lambda request: Reply.throttling() if request.model_id == MODEL else None
    assert another_process(server.url, url, calls=2, **CIRCUIT) == [FALLBACK, FALLBACK]  # its 2 throttles: open
    before = len(server.requests)
    session = install_here(url, fallbacks={MODEL: [FALLBACK]}, circuit_threshold=2)
    assert async_calls(server, session, 1) == [FALLBACK]
    if state == "redis":
        assert [r.model_id for r in server.requests[before:]] == [FALLBACK]  # the throttled model is not hammered
    else:
        assert [r.model_id for r in server.requests[before:]] == [MODEL, FALLBACK]  # alone: throttled first, again


@pytest.mark.parametrize("state", ["redis", "memory"])
def test_a_circuit_async_calls_opened_sends_another_process_to_the_fallback_at_once(state, server, redis_server):  # noqa: F811
    url = state_url_of(state, redis_server)
    server.handler = lambda request: Reply.throttling() if request.model_id == MODEL else None
    session = install_here(url, fallbacks={MODEL: [FALLBACK]}, circuit_threshold=2)
    assert async_calls(server, session, 2) == [FALLBACK, FALLBACK]  # two throttles seen by async calls: open
    before = len(server.requests)
    assert another_process(server.url, url, **CIRCUIT) == [FALLBACK]
    expected = [FALLBACK] if state == "redis" else [MODEL, FALLBACK]
    assert [r.model_id for r in server.requests[before:]] == expected


# -- (b) remembered inference profiles ---------------------------------------------------------------

@pytest.mark.parametrize("state", ["redis", "memory"])
def test_a_profile_another_process_learned_spares_the_async_client_its_400(state, server, redis_server):  # noqa: F811
    url = state_url_of(state, redis_server)
    server.handler = lambda request: ON_DEMAND if request.model_id == MODEL else None
    assert another_process(server.url, url) == [f"us.{MODEL}"]
    before = len(server.requests)
    assert async_calls(server, install_here(url), 2) == [f"us.{MODEL}"] * 2
    expected = [f"us.{MODEL}"] * 2 if state == "redis" else [MODEL, f"us.{MODEL}", f"us.{MODEL}"]
    assert [r.model_id for r in server.requests[before:]] == expected  # (memory: one wasted 400, then its own)


def test_a_profile_an_async_client_learned_spares_another_process_its_400(server, redis_server):  # noqa: F811
    server.handler = lambda request: ON_DEMAND if request.model_id == MODEL else None
    assert async_calls(server, install_here(redis_server.url), 1) == [f"us.{MODEL}"]
    assert [r.model_id for r in server.requests] == [MODEL, f"us.{MODEL}"]
    keys = [k.decode() for k in redis_server.client().keys("bedrock-hooks:*")]
    assert any(k.endswith(":profile") for k in keys) and not any(CREDS["aws_access_key_id"] in k for k in keys)
    before = len(server.requests)
    assert another_process(server.url, redis_server.url) == [f"us.{MODEL}"]
    assert [r.model_id for r in server.requests[before:]] == [f"us.{MODEL}"]


def test_async_clients_use_the_awaited_store_and_sync_clients_the_blocking_one(server, redis_server):  # noqa: F811
    from bedrock_hooks.store_aio import AsyncRedisStore
    from conftest import make_client, new_session

    async def scenario():
        async with aio_client(install_here(redis_server.url, fallbacks={MODEL: [FALLBACK]}), server) as client:
            (hooks,) = [f for f in attached_features(client) if isinstance(f, fallbacks.FallbackHooks)]
            return hooks

    hooks = asyncio.run(scenario())
    assert isinstance(hooks.aio_store, AsyncRedisStore)
    session = new_session()
    bedrock_hooks.install(session, state_url=redis_server.url, fallbacks={MODEL: [FALLBACK]}, max_attempts=1)
    (sync_hooks,) = [f for f in attached_features(make_client(session, server)) if isinstance(f, fallbacks.FallbackHooks)]
    assert isinstance(sync_hooks.router.store, store.RedisStore) and sync_hooks.aio_store is None


# -- (c) Redis down or stalled: calls go on, the loop runs ----------------------------------------------

def test_redis_down_async_calls_go_on_with_in_process_circuits_and_one_warning(server, caplog):
    require("redis", group="redis")
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    server.handler = lambda request: Reply.throttling() if request.model_id == MODEL else None
    session = install_here(f"redis://127.0.0.1:{free_port()}/0", state_timeout=0.05, fallbacks={MODEL: [FALLBACK]},
                           circuit_threshold=2)  # nothing listens there
    hooks: list = []
    assert async_calls(server, session, 4, hooks) == [FALLBACK] * 4  # every call served
    assert hooks[0].aio_store.down() and hooks[0].aio_store.failures == 1  # tried once, then in process
    # this process's own circuit opened after two throttles: the last two went straight to the fallback
    assert [r.model_id for r in server.requests] == [MODEL, FALLBACK, MODEL, FALLBACK, FALLBACK, FALLBACK]
    assert len(shared_warnings(caplog)) == 1


def test_a_stalled_redis_never_blocks_the_loop_beyond_the_store_timeout(own_redis, server, caplog):  # noqa: F811
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    timeout = 0.2
    fake = FakeTime(now=time.time())
    session = install_here(own_redis.url, Runtime(wall=fake.clock, sleep=_no_blocking_sleep, async_sleep=_no_wait),
                           state_timeout=timeout, fallbacks={MODEL: [FALLBACK]}, circuit_threshold=2)
    server.handler = lambda request: Reply.throttling() if request.model_id == MODEL else None
    gaps: list[float] = []
    seen: list[str] = []

    async def ticker(stop: asyncio.Event) -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async def scenario():
        async with aio_client(session, server) as client:
            await aconverse(client, FALLBACK)  # Redis answers: this loop's connection is open
            (hooks,) = [f for f in attached_features(client) if isinstance(f, fallbacks.FallbackHooks)]
            own_redis.stall()
            fake.now += 2 * fallbacks.HOT_SYNC  # the next call reads the fleet's hot models: from a stalled server
            stop = asyncio.Event()
            tick = asyncio.ensure_future(ticker(stop))
            try:
                await asyncio.sleep(0)
                for _ in range(3):
                    out = await aconverse(client, MODEL)
                    seen.append(out["BedrockHooks"]["served_by"]["model"])
            finally:
                stop.set()
                await tick
                own_redis.resume()
            return hooks

    hooks = asyncio.run(scenario())
    assert seen == [FALLBACK] * 3  # every call served (the circuit opened in process: the third went straight there)
    assert len(gaps) > 10  # the loop ran the ticker while the stalled store was awaited...
    assert max(gaps) < timeout  # ...and never stopped for a blocking socket's timeout
    assert hooks.aio_store.down() and hooks.aio_store.failures == 1
    assert len(shared_warnings(caplog)) == 1


# -- (d) memory:// unchanged ---------------------------------------------------------------------------

def test_with_memory_async_clients_keep_the_in_process_store(server):
    async def scenario():
        async with aio_client(install_here("memory://", fallbacks={MODEL: [FALLBACK]}), server) as client:
            (hooks,) = [f for f in attached_features(client) if isinstance(f, fallbacks.FallbackHooks)]
            return hooks

    hooks = asyncio.run(scenario())
    assert isinstance(hooks.router.store, store.MemoryStore) and hooks.aio_store is None
