"""Handing botocore's retry slot over and back (issue 11: defect 4, second half; "take over only when verified").

* While threads call, install/uninstall loops swap botocore's retry handler and ours: a request
  must never find *no* retry handler (the old unregister-then-register gap let a 500 through).
* When botocore's handler cannot be verified in its ``retry-config-<service>`` slot, nothing is
  registered under botocore's id and nothing is unregistered: the client keeps botocore's retries,
  during and after the installation, and the reason is exposed.
"""

from __future__ import annotations

import collections
import random
import threading
import time
import types

import botocore.endpoint
import botocore.hooks
import pytest
from botocore.exceptions import ClientError

import bedrock_hooks
from bedrock_hooks import installation, retry
from bedrock_hooks.features import Runtime
from bedrock_hooks.retry import botocore_retry_handler
from bedrock_hooks.testing import Reply
from conftest import make_client, new_session

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]
JOIN = 60.0


@pytest.fixture(autouse=True)
def _no_botocore_sleep(monkeypatch):
    # Plain botocore (between installs) sleeps its own backoff for real; the test is about the swap.
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=lambda seconds: None))


def no_sleep() -> Runtime:
    return Runtime(sleep=lambda seconds: None, rng=random.Random(1))


def first_attempt_fails(request) -> Reply | None:
    """Every call's first attempt is a 500; any retry handler at all turns the call into a success."""
    header = next((v for k, v in request.headers.items() if k.lower() == "amz-sdk-request"), "")
    return Reply.internal_server() if header.startswith("attempt=1;") or header == "attempt=1" else None


@pytest.fixture
def slow_unregister(monkeypatch):
    """Widen any window between taking one handler out and putting the other in (as a busy host would)."""
    original = botocore.hooks.HierarchicalEmitter.unregister

    def unregister(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        time.sleep(0.001)
        return result

    monkeypatch.setattr(botocore.hooks.HierarchicalEmitter, "unregister", unregister)


def test_no_request_runs_without_a_retry_handler_while_install_and_uninstall_loop(server, slow_unregister):
    server.handler = first_attempt_fails
    session = new_session()
    clients = [make_client(session, server) for _ in range(3)]
    stop = threading.Event()
    outcomes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def caller(index: int) -> None:
        client = clients[index % len(clients)]
        while not stop.is_set():
            try:
                client.converse(modelId=MODEL, messages=MESSAGES)
                outcome = "ok"
            except ClientError as exc:
                outcome = exc.response.get("Error", {}).get("Code", "?")
            with lock:
                outcomes[outcome] += 1

    def toggler() -> None:
        for round_ in range(40):
            target = clients[round_ % len(clients)]
            hooks = bedrock_hooks.install(target, runtime=no_sleep())
            time.sleep(0.002)
            hooks.uninstall()
            time.sleep(0.002)

    callers = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(6)]
    for thread in callers:
        thread.start()
    toggle = threading.Thread(target=toggler, daemon=True)
    toggle.start()
    toggle.join(JOIN)
    stop.set()
    for thread in callers:
        thread.join(JOIN)
    assert not toggle.is_alive() and not any(t.is_alive() for t in callers)
    assert outcomes["ok"] > 40, outcomes
    assert set(outcomes) == {"ok"}, f"calls that found no retry handler: {dict(outcomes)}"


class _HiddenSlots(dict):
    """A unique-id table our lookup cannot read (as if a botocore release changed its layout), while
    the emitter itself still enforces it: the situation in which a blind takeover goes wrong."""

    def get(self, key, default=None):
        return default


def _hide_retry_slot(client) -> None:
    emitter = client.meta.events._emitter
    emitter._unique_id_handlers = _HiddenSlots(emitter._unique_id_handlers)


def _call_through_a_500(client, server) -> int:
    server.reset()
    server.script(Reply.internal_server())
    client.converse(modelId=MODEL, messages=MESSAGES)
    return len(server.requests)


def test_an_unverifiable_retry_slot_is_left_to_botocore(server, fake_time, caplog, monkeypatch):
    monkeypatch.setattr(retry, "_refusals", set())  # the reason is logged once per process
    client = make_client(new_session(), server)
    _hide_retry_slot(client)
    before = dict.get(client.meta.events._emitter._unique_id_handlers, "retry-config-bedrock-runtime")
    hooks = bedrock_hooks.install(client, runtime=fake_time.runtime())
    retry_hooks = next(f for f in installation.attached_features(client) if hasattr(f, "on_needs_retry"))
    assert _call_through_a_500(client, server) == 2 and fake_time.sleeps == []  # botocore retried, not us
    hooks.uninstall()
    after = dict.get(client.meta.events._emitter._unique_id_handlers, "retry-config-bedrock-runtime")
    assert after is before, "uninstall removed botocore's retry handler"
    assert _call_through_a_500(client, server) == 2
    # ...and the reason is there for `doctor`, logged once
    assert retry_hooks.retry_refusal and "retry-config-bedrock-runtime" in retry_hooks.retry_refusal
    assert any("keep botocore's own retries" in r.getMessage() for r in caplog.records)


def test_a_verified_slot_is_taken_over_and_handed_back(server, fake_time):
    client = make_client(new_session(), server)
    botocore_handler = botocore_retry_handler(client.meta.events, "bedrock-runtime")
    hooks = bedrock_hooks.install(client, runtime=fake_time.runtime())
    retry_hooks = next(f for f in installation.attached_features(client) if hasattr(f, "on_needs_retry"))
    assert retry_hooks.retry_refusal is None and retry_hooks._botocore_retry == botocore_handler
    assert botocore_retry_handler(client.meta.events, "bedrock-runtime") is None  # out of the way while ours decides
    assert _call_through_a_500(client, server) == 2 and len(fake_time.sleeps) == 1
    hooks.uninstall()
    assert botocore_retry_handler(client.meta.events, "bedrock-runtime") == botocore_handler
