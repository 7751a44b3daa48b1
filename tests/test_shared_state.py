"""Defect #5: process-wide state is keyed by quota scope (account, Region, model, endpoint).

Bedrock quotas are per account, Region and model. Two accounts (two sessions with different static
keys) and two models share one loopback server and one process here: throttling one must never pace
(counted as injected sleeps) or reroute the other. No wall clock is involved.
"""

from __future__ import annotations

import logging
import threading

import boto3
import pytest
from botocore.credentials import RefreshableCredentials

import bedrock_hooks
from bedrock_hooks import fallbacks, ratelimit
from bedrock_hooks.testing import Reply, sigv4_scope
from conftest import converse, make_client, new_session
from _shared_state import fresh_shared_state  # noqa: F401  (autouse)

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
OTHER_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
FALLBACK = "anthropic.claude-3-sonnet-20240229-v1:0"
ACCOUNT_A = ("AKIDACCOUNTAAAAAAAAA", "secretA/K7MDENG+bPxRfiCYEXAMPLEKEYaaaaa")
ACCOUNT_B = ("AKIDACCOUNTBBBBBBBBB", "secretB/K7MDENG+bPxRfiCYEXAMPLEKEYbbbbb")



def account_session(keys: tuple[str, str]) -> boto3.Session:
    return boto3.Session(region_name="us-east-1", aws_access_key_id=keys[0], aws_secret_access_key=keys[1])


def attempt(client, model: str = MODEL) -> None:
    try:
        converse(client, model)
    except Exception:
        pass  # throttled: what matters is what the library did around it


def storm(clients: list, fake_time, model: str = MODEL) -> None:
    """A quota storm on ``model``: 20 throttled answers seen on this thread over a second, then throttles
    on two live threads at once (thread ids are reused once a thread ends), which engages pacing."""
    for _ in range(20):
        attempt(clients[0], model)
        fake_time.now += 0.05
    first_done, release = threading.Event(), threading.Event()

    def first() -> None:
        attempt(clients[0], model)
        first_done.set()
        release.wait(5)

    t = threading.Thread(target=first)
    t.start()
    first_done.wait(5)
    second = threading.Thread(target=attempt, args=(clients[-1], model))
    second.start()
    second.join()
    release.set()
    t.join()


def engaged_scopes() -> list:
    return [key[0] for key, bucket in ratelimit.buckets().items() if bucket.engaged]


def two_accounts(server, fake_time, **options) -> tuple[list, object]:
    """Two clients of account A (throttled by the server), one of account B (never throttled)."""
    a_session, b_session = account_session(ACCOUNT_A), account_session(ACCOUNT_B)
    for session in (a_session, b_session):
        bedrock_hooks.install(session, runtime=fake_time.runtime(), max_attempts=1, **options)
    server.handler = lambda request: (Reply.throttling() if sigv4_scope(request).get("access_key") == ACCOUNT_A[0]
                                      else None)
    return [make_client(a_session, server), make_client(a_session, server)], make_client(b_session, server)


def test_throttled_account_never_paces_another_account(server, fake_time):
    a_clients, b_client = two_accounts(server, fake_time)
    storm(a_clients, fake_time)
    assert engaged_scopes()
    fake_time.sleeps.clear()
    attempt(a_clients[0])
    assert fake_time.sleeps  # account A is paced (the control)...
    fake_time.sleeps.clear()
    for _ in range(10):
        converse(b_client, MODEL)
    assert fake_time.sleeps == []  # ...account B, same model, same Region, same process: never


def test_open_circuit_of_one_account_never_reroutes_another(server, fake_time):
    a_clients, b_client = two_accounts(server, fake_time, fallbacks={MODEL: [FALLBACK]}, circuit_threshold=3)
    for _ in range(3):
        attempt(a_clients[0])
    server.reset()
    attempt(a_clients[1])
    assert [r.model_id for r in server.requests] == [FALLBACK]  # A's circuit for MODEL is open (the control)
    server.reset()
    for _ in range(5):
        assert "BedrockHooks" not in converse(b_client, MODEL)
    assert [r.model_id for r in server.requests] == [MODEL] * 5  # B is served by the model it asked for


def test_throttled_model_does_not_slow_another_model_of_the_process(server, fake_time):
    session = new_session()
    runtime = fake_time.runtime()
    clients = [make_client(session, server), make_client(session, server)]
    for client in clients:
        bedrock_hooks.install(client, runtime=runtime, max_attempts=1)
    server.handler = lambda request: Reply.throttling() if request.model_id == MODEL else None
    storm(clients, fake_time, MODEL)
    assert len(engaged_scopes()) == 1
    fake_time.sleeps.clear()
    for client in clients * 5:
        converse(client, OTHER_MODEL)
    assert fake_time.sleeps == []  # the unthrottled model keeps its rate: not one paced send
    for client in clients * 3:
        attempt(client, MODEL)
    assert len(fake_time.sleeps) >= 5 and all(s > 0 for s in fake_time.sleeps)  # the throttled one is paced


def test_non_model_operations_get_their_own_scope(server, fake_time):
    client = make_client(new_session(), server)
    bedrock_hooks.install(client, runtime=fake_time.runtime(), max_attempts=1)
    server.default = Reply.throttling()
    try:
        client.apply_guardrail(guardrailIdentifier="g1", guardrailVersion="1", source="INPUT",
                               content=[{"text": {"text": "hi"}}])
    except Exception:
        pass
    attempt(client)
    targets = sorted(scope.target for scope, _clock in ratelimit.buckets())
    assert targets == ["model:" + MODEL, "operation:ApplyGuardrail"]


def test_the_account_is_a_salted_hash_never_the_key_and_never_logged(server, fake_time, caplog):
    caplog.set_level(logging.DEBUG, logger="bedrock_hooks")
    a_session, b_session = account_session(ACCOUNT_A), account_session(ACCOUNT_B)
    runtime = fake_time.runtime()
    clients = []
    for session in (a_session, b_session, account_session(ACCOUNT_A)):
        bedrock_hooks.install(session, runtime=runtime, max_attempts=1)
        clients.append(make_client(session, server))
    server.default = Reply.throttling()
    for client in clients:
        attempt(client)
    accounts = {scope.account for scope, _clock in ratelimit.buckets()}
    assert len(accounts) == 2  # the same static key in two sessions is one account; B is another
    shown = repr(ratelimit.buckets()) + " ".join(r.getMessage() for r in caplog.records)
    for key_id, secret in (ACCOUNT_A, ACCOUNT_B):
        assert key_id not in shown and key_id[4:] not in shown and secret not in shown


def test_refreshed_credentials_keep_their_account_and_are_never_refreshed_to_find_it():
    """Resolved once per credentials object, from botocore's fields: rotation keeps the scope and
    reading it triggers no refresh (which could do I/O inside a handler)."""
    from bedrock_hooks import quota_scope

    calls = []

    def refresh():
        calls.append(1)
        n = len(calls)
        return {"access_key": f"ASIAROTATED{n:09d}", "secret_key": "s", "token": "t",
                "expiry_time": "2999-01-01T00:00:00Z"}

    credentials = RefreshableCredentials.create_from_metadata(refresh(), refresh, "assume-role")
    signer = type("Signer", (), {"_credentials": credentials})()
    first = quota_scope.account_of(signer)
    credentials._access_key = "ASIAROTATED999999999"  # what a refresh does to the object
    assert quota_scope.account_of(signer) == first
    assert calls == [1]  # only the initial fetch
    other = RefreshableCredentials.create_from_metadata(refresh(), refresh, "assume-role")
    assert quota_scope.account_of(type("Signer", (), {"_credentials": other})()) != first
