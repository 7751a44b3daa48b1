"""Shared state on a real ``redis-server``: several real processes share circuits and remembered profiles,
and a Redis that is down or stalled (SIGSTOP) never fails or stalls a call: one warning, in-process
state, Redis again once it is back.

No fake Redis: the server is a real ``redis-server`` on a free loopback port (tests/_redis.py), the
processes are real (``subprocess``), the Bedrock endpoint is the loopback ``BedrockServer``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading

import pytest

import bedrock_hooks
from bedrock_hooks import circuit, fallbacks, store
from bedrock_hooks.features import Runtime
from bedrock_hooks.quota_scope import QuotaScope
from bedrock_hooks.testing import Reply
from conftest import CREDS, FakeTime, converse, make_client, new_session
from _redis import _redis_session, own_redis, redis_server  # noqa: F401  (fixtures)
from _shared_state import WORKER, fresh_shared_state  # noqa: F401  (autouse)

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
FALLBACK = "anthropic.claude-3-haiku-20240307-v1:0"
ON_DEMAND = (f"Invocation of model ID {MODEL} with on-demand throughput isn\u2019t supported. Retry your request with "
             "the ID or ARN of an inference profile that contains this model.")
HANG = 20.0  #: seconds after which a call still running counts as stalled (a hang detector, not a timing bound)


def run_workers(n: int, bedrock_url: str, state_url: str, calls: int = 1, model: str = MODEL, **env: str) -> list:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BEDROCK_HOOKS_") or k.startswith(
        "BEDROCK_HOOKS_TEST_")}
    environ.update(BEDROCK_HOOKS_STATE_URL=state_url, BEDROCK_HOOKS_STATE_TIMEOUT="0.5", **env)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, bedrock_url, model, str(calls),
                               CREDS["aws_access_key_id"], CREDS["aws_secret_access_key"]],
                              env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_a_profile_learned_by_one_process_is_used_by_the_others(server, redis_server):  # noqa: F811
    server.handler = lambda request: (Reply.error(400, "ValidationException", ON_DEMAND)
                                      if request.model_id == MODEL else None)
    (first,) = run_workers(1, server.url, redis_server.url)
    assert first == [f"us.{MODEL}"] and [r.model_id for r in server.requests] == [MODEL, f"us.{MODEL}"]
    before = len(server.requests)
    others = run_workers(3, server.url, redis_server.url)
    assert others == [[f"us.{MODEL}"]] * 3
    assert [r.model_id for r in server.requests[before:]] == [f"us.{MODEL}"] * 3  # not one more wasted 400
    keys = [k.decode() for k in redis_server.client().keys("bedrock-hooks:*")]
    assert any(k.endswith(":profile") for k in keys)
    assert not any(CREDS["aws_access_key_id"] in k or CREDS["aws_access_key_id"][4:] in k for k in keys)


def test_processes_share_one_circuit(server, redis_server):  # noqa: F811
    """Threshold 4: four processes throttled once each open the circuit together; a fifth goes to the fallback."""
    server.handler = lambda request: Reply.throttling() if request.model_id == MODEL else None
    env = {"BEDROCK_HOOKS_FALLBACKS": f"{MODEL}={FALLBACK}", "BEDROCK_HOOKS_CIRCUIT_THRESHOLD": "4"}
    for _ in range(4):  # one after the other: each sees one throttle, none alone reaches the threshold
        run_workers(1, server.url, redis_server.url, **env)
    before = len(server.requests)
    assert run_workers(1, server.url, redis_server.url, **env) == [[FALLBACK]]
    assert [r.model_id for r in server.requests[before:]] == [FALLBACK]  # the throttled model is not hammered


def test_without_redis_each_process_learns_alone(server):
    """The control: with memory:// the same four processes never open the circuit."""
    server.handler = lambda request: Reply.throttling() if request.model_id == MODEL else None
    env = {"BEDROCK_HOOKS_FALLBACKS": f"{MODEL}={FALLBACK}", "BEDROCK_HOOKS_CIRCUIT_THRESHOLD": "4"}
    for _ in range(4):
        run_workers(1, server.url, "memory://", **env)
    before = len(server.requests)
    assert run_workers(1, server.url, "memory://", **env) == [[FALLBACK]]
    assert [r.model_id for r in server.requests[before:]] == [MODEL, FALLBACK]  # throttled first, again


def shared_router(url: str, fake: FakeTime, **options) -> tuple[fallbacks.Router, Runtime]:
    settings = bedrock_hooks.config.load_settings({}, state_url=url, fallbacks={MODEL: [FALLBACK]},
                                                  circuit_threshold=2, **options)
    return fallbacks.Router(settings), Runtime(clock=fake.clock, wall=fake.clock, sleep=fake.sleep)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "shared state" in r.getMessage()]


def run_with_hang_detector(work) -> None:
    done = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        done.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert done.wait(HANG), "a call stalled on Redis"
    assert errors == []


def test_redis_down_means_in_process_state_and_one_warning_then_redis_again(own_redis, caplog):  # noqa: F811
    caplog.set_level(logging.DEBUG, logger="bedrock_hooks")
    clock = FakeTime()
    url = own_redis.url
    redis_store = store.RedisStore(url.replace("redis://", "redis://:hunter2-pass@"), timeout=0.05,
                                   clock=clock.clock)
    scope = QuotaScope("unsigned", "us-east-1", f"model:{MODEL}", "https://x")
    own_redis.stop()

    def while_down() -> None:
        for i in range(50):
            redis_store.apply(circuit.PRESSURE, circuit.FAMILY, scope, 1.0 + i, (3.0, 60.0, 30.0), 90.0)
    run_with_hang_detector(while_down)
    assert redis_store.failures == 1  # one attempt; the other 49 went straight to the in-process state
    assert redis_store.fallback.size(circuit.FAMILY) == 1  # ...which counted them (and opened the circuit)
    shown = warnings_of(caplog)
    assert len(shown) == 1 and "using in-process state" in shown[0]
    assert "hunter2" not in " ".join(r.getMessage() for r in caplog.records)
    clock.now += store.RETRY_AFTER + 1  # cool-down over: the next operation tries Redis again (still down)
    redis_store.apply(circuit.STATUS, circuit.FAMILY, scope, 60.0, (), 90.0)
    assert redis_store.failures == 2 and len(warnings_of(caplog)) == 2  # a second outage window, one more line


def test_redis_stalled_by_sigstop_never_stalls_a_call(own_redis, server, caplog):  # noqa: F811
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    fake = FakeTime()
    session = new_session()
    runtime = Runtime(clock=fake.clock, wall=fake.clock, sleep=fake.sleep)
    bedrock_hooks.install(session, runtime=runtime, state_url=own_redis.url, state_timeout=0.005,
                          fallbacks={MODEL: [FALLBACK]}, circuit_threshold=2, max_attempts=1)
    client = make_client(session, server)
    server.handler = lambda request: Reply.throttling() if request.model_id == MODEL else None
    router = fallbacks.router_for(bedrock_hooks.config.load_settings({}, state_url=own_redis.url,
                                                                     state_timeout=0.005,
                                                                     fallbacks={MODEL: [FALLBACK]},
                                                                     circuit_threshold=2, max_attempts=1))
    own_redis.stall()

    def calls() -> None:
        for _ in range(3):
            try:
                converse(client, MODEL)
            except Exception:
                pass
    run_with_hang_detector(calls)
    own_redis.resume()
    # throttled, moved to the fallback; again, which opens the in-process circuit; then straight to the fallback
    assert [r.model_id for r in server.requests] == [MODEL, FALLBACK, MODEL, FALLBACK, FALLBACK]
    assert router.store.failures >= 1
    assert len(warnings_of(caplog)) == 1


def test_a_forked_child_uses_its_own_connection(redis_server):  # noqa: F811
    redis_store = store.RedisStore(redis_server.url, timeout=2.0)
    scope = QuotaScope("unsigned", "us-east-1", f"model:{MODEL}", "https://x")
    redis_store.put_text("profile", scope, "parent", 1.0, 60.0)
    parent_client = redis_store._client
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a fresh client, and the shared state is still there
        try:
            value = redis_store.get_text("profile", scope, 2.0, 60.0)
            fresh = redis_store._client is not parent_client
            os.write(write, json.dumps([value, fresh, redis_store.failures]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = json.loads(pipe.read() or "null")
    os.waitpid(pid, 0)
    assert child == ["parent", True, 0]
    assert redis_store.get_text("profile", scope, 3.0, 60.0) == "parent" and redis_store.failures == 0


def test_install_with_a_redis_url_shares_state_through_the_router(redis_server, server):  # noqa: F811
    fake = FakeTime()
    router, runtime = shared_router(redis_server.url, fake)
    assert isinstance(router.store, store.RedisStore) and router.wall_clock
    other, _ = shared_router(redis_server.url, fake)  # another router of the same URL: as another process would
    scope = QuotaScope("unsigned", "us-east-1", f"model:{MODEL}", "https://x")
    assert not router.record_pressure(scope, fake.now)
    assert router.record_pressure(scope, fake.now + 1)
    assert other.circuit_open(scope, fake.now + 2)
    other.sync(fake.now + 2)
    assert MODEL in other.hot


@pytest.mark.parametrize("bad", ["redis://127.0.0.1:1/0"])
def test_an_unreachable_redis_at_install_costs_nothing_but_one_warning(bad, server, caplog, fake_time):
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), state_url=bad, fallbacks={MODEL: [FALLBACK]})
    client = make_client(session, server)
    run_with_hang_detector(lambda: [converse(client, MODEL) for _ in range(5)])
    assert len(warnings_of(caplog)) <= 1


def test_async_clients_share_through_the_awaited_store_an_event_loop_never_waits_on_redis(redis_server, server, fake_time):  # noqa: F811
    import asyncio

    from _requires import require

    require("aiobotocore", group="aio")
    from _aio import aio_client, aiobotocore_session
    from bedrock_hooks.installation import attached_features

    async def scenario():
        async with aio_client(aiobotocore_session(), server) as client:
            bedrock_hooks.install(client, runtime=fake_time.runtime(), state_url=redis_server.url,
                                  fallbacks={MODEL: [FALLBACK]})
            (hooks,) = [f for f in attached_features(client) if isinstance(f, fallbacks.FallbackHooks)]
            return hooks.aio_store  # the router's state, awaited (tests/test_aio_fallbacks_shared.py)

    from bedrock_hooks.store_aio import AsyncRedisStore

    assert isinstance(asyncio.run(scenario()), AsyncRedisStore)
    session = new_session()  # the control: a sync client of the same configuration shares through Redis
    bedrock_hooks.install(session, runtime=fake_time.runtime(), state_url=redis_server.url,
                          fallbacks={MODEL: [FALLBACK]})
    (sync_hooks,) = [f for f in attached_features(make_client(session, server)) if isinstance(f, fallbacks.FallbackHooks)]
    assert isinstance(sync_hooks.router.store, store.RedisStore)
