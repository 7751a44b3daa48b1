"""Concurrency: install/uninstall while other threads are calling, and install() racing itself.

* One thread installs and uninstalls the hooks on a session over and over, creating clients both
  while installed and after an uninstall, while 8 threads call those clients against a server that
  throttles and fails a third of the time: nothing but the scripted botocore errors reaches the
  callers, nothing deadlocks (every join is bounded), and after the final uninstall every client is
  plain botocore again -- registrations, retry handler, pool classes, signing clock, behaviour.
* Many threads calling ``install(session)`` (or ``install(client)``) at the same moment get one and
  the same Installation, and each client carries one set of handlers.
"""

from __future__ import annotations

import collections
import importlib
import random
import sys
import threading
import time
import types

import botocore.auth
import botocore.endpoint
import pytest
from botocore.exceptions import ClientError

import bedrock_hooks
from bedrock_hooks import keepalive
from bedrock_hooks.patches import CREATE_CLIENT, SIGNING_CLOCK, State
from bedrock_hooks.features import Runtime
from bedrock_hooks.retry import botocore_retry_handler
from bedrock_hooks.testing import Reply
from conftest import make_client, new_session

install_module = importlib.import_module("bedrock_hooks.installation")
ORIGINAL_CLOCK = getattr(botocore.auth, "get_current_datetime", None)  # absent before botocore 1.40.2

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]
WORKERS = 8
TOGGLES = 60
JOIN_TIMEOUT = 60.0
SCRIPTED_CODES = {"ThrottlingException", "ServiceUnavailableException"}


@pytest.fixture(autouse=True)
def _no_botocore_sleep(monkeypatch):
    # Plain botocore (between installs) sleeps its own backoff for real; the tests are about races.
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=lambda seconds: None))


def no_sleep_runtime() -> Runtime:
    return Runtime(sleep=lambda seconds: None, rng=random.Random(5))


def flaky(seed: int = 11):
    rng = random.Random(seed)

    def handler(request):
        request_roll = rng.random()
        if request_roll < 0.15:
            return Reply.throttling()
        if request_roll < 0.3:
            return Reply.service_unavailable()
        return None

    return handler


def our_handler_ids(client) -> list[str]:
    emitter = client.meta.events._emitter
    return [k for k in emitter._unique_id_handlers if k.startswith("bedrock-hooks")]


def ours_on_needs_retry(client) -> int:
    handlers = client.meta.events._emitter._handlers.prefix_search("needs-retry.bedrock-runtime.Converse")
    return sum(1 for h in handlers if type(getattr(h, "__self__", None)).__module__ == "bedrock_hooks.retry")


def assert_plain(client) -> None:
    assert not our_handler_ids(client)
    handler = botocore_retry_handler(client.meta.events, "bedrock-runtime")
    assert handler is not None and getattr(handler, "__module__", "").startswith("botocore")
    http_session = client._endpoint.http_session
    for cls in http_session._pool_classes_by_scheme.values():
        assert not issubclass(cls, getattr(keepalive, "_HygienicPool", ())), cls
    assert install_module.attached_features(client) == [] and bedrock_hooks.installation_for(client) is None


def test_install_and_uninstall_while_threads_are_calling(server):
    server.handler = flaky()
    session = new_session()
    clients = [make_client(session, server)]  # created before any install
    clients_lock = threading.Lock()
    stop = threading.Event()
    problems: list[str] = []
    outcomes: collections.Counter[str] = collections.Counter()
    created = collections.Counter()

    def worker(index: int) -> None:
        rng = random.Random(index)
        while not stop.is_set():
            with clients_lock:
                client = rng.choice(clients)
            try:
                client.converse(modelId=MODEL, messages=MESSAGES)
                outcome = "ok"
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                outcome = code
                if code not in SCRIPTED_CODES:
                    problems.append(f"unexpected ClientError {code}: {exc}")
            except Exception as exc:  # noqa: BLE001
                outcome = type(exc).__name__
                problems.append(f"unexpected {type(exc).__module__}.{type(exc).__name__}: {exc!r}")
            with clients_lock:
                outcomes[outcome] += 1

    def toggler() -> None:
        try:
            for round_ in range(TOGGLES):
                installation = bedrock_hooks.install(session, runtime=no_sleep_runtime())
                if round_ % 3 == 0:
                    new = make_client(session, server)  # created while installed
                    with clients_lock:
                        clients.append(new)
                    created["installed"] += 1
                time.sleep(0.01)
                installation.uninstall()
                if round_ % 3 == 1:
                    new = make_client(session, server)  # created after an uninstall
                    with clients_lock:
                        clients.append(new)
                    created["uninstalled"] += 1
                time.sleep(0.005)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"toggler: {exc!r}")

    threads = [threading.Thread(target=worker, args=(i,), daemon=True, name=f"caller-{i}") for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    toggle = threading.Thread(target=toggler, daemon=True, name="toggler")
    toggle.start()
    toggle.join(JOIN_TIMEOUT)
    assert not toggle.is_alive(), "install/uninstall deadlocked"
    stop.set()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    assert not [t.name for t in threads if t.is_alive()], "a caller deadlocked"
    server.handler = None

    print(f"{sum(outcomes.values())} calls during {TOGGLES} install/uninstall rounds; {dict(outcomes)}; "
          f"clients created {dict(created)}", file=sys.stderr)
    assert not problems, problems[:10]
    assert outcomes["ok"] > 50 and sum(outcomes.values()) > 100, outcomes
    assert created["installed"] and created["uninstalled"]

    # After the final uninstall: plain botocore everywhere.
    assert not install_module.is_patched() and CREATE_CLIENT.state() is State.OFF
    assert getattr(botocore.auth, "get_current_datetime", None) is ORIGINAL_CLOCK
    assert SIGNING_CLOCK.state() in (State.OFF, State.UNAVAILABLE)
    for client in clients:
        assert_plain(client)
    plain = make_client(new_session(), server)
    for client in (clients[0], clients[-1]):
        results = []
        for candidate in (plain, client):
            server.reset()
            server.script(*[Reply.service_unavailable()] * 3)
            with pytest.raises(ClientError) as raised:
                candidate.converse(modelId=MODEL, messages=MESSAGES)
            results.append((str(raised.value), "BedrockHooks" in raised.value.response, len(server.requests)))
        assert results[0] == results[1]
        assert results[1][1] is False and results[1][2] == 3


def _race(count: int, func):
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(10)
            results[index] = func()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "install() deadlocked"
    assert not errors, errors
    return results


def test_concurrent_install_on_one_session_returns_one_installation(server):
    session = new_session()
    before = make_client(session, server)
    installs = _race(16, lambda: bedrock_hooks.install(session, runtime=no_sleep_runtime()))
    assert all(i is installs[0] for i in installs)
    assert bedrock_hooks.installation_for(session) is installs[0]
    assert install_module.attached_features(before) == []  # install(session) covers clients created afterwards only

    client = make_client(session, server)
    ids = our_handler_ids(client)
    assert ids and len(ids) == len(set(ids))
    assert ours_on_needs_retry(client) == 1
    server.script(Reply.throttling(), Reply.throttling())  # one decision per attempt: 3 requests
    client.converse(modelId=MODEL, messages=MESSAGES)
    assert len(server.requests) == 3

    # install(client) racing on an existing client: one Installation, one set of handlers.
    clients_installs = _race(16, lambda: bedrock_hooks.install(before, runtime=no_sleep_runtime()))
    assert all(i is clients_installs[0] for i in clients_installs)
    assert bedrock_hooks.installation_for(before) is clients_installs[0]
    ids = our_handler_ids(before)
    assert ids and len(ids) == len(set(ids))
    assert ours_on_needs_retry(before) == 1


def test_concurrent_install_and_calls_on_a_busy_session(server):
    """Installing while many threads already call clients of the session never breaks those calls."""
    session = new_session()
    clients = [make_client(session, server) for _ in range(3)]
    stop = threading.Event()
    problems: list[str] = []

    def caller(index: int) -> None:
        client = clients[index % len(clients)]
        while not stop.is_set():
            try:
                client.converse(modelId=MODEL, messages=MESSAGES)
            except Exception as exc:  # noqa: BLE001
                problems.append(repr(exc))

    callers = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(6)]
    for thread in callers:
        thread.start()
    installs = _race(8, lambda: bedrock_hooks.install(session, runtime=no_sleep_runtime()))
    per_client = _race(8, lambda: [bedrock_hooks.install(c) for c in clients])
    stop.set()
    for thread in callers:
        thread.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in callers)
    assert not problems, problems[:5]
    assert all(i is installs[0] for i in installs)
    for index, client in enumerate(clients):
        owners = {id(result[index]) for result in per_client}
        assert len(owners) == 1
        ids = our_handler_ids(client)
        assert len(ids) == len(set(ids))
