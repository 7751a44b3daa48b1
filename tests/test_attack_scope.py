"""Two AWS accounts in one process, the way applications really get there (issue 11, defect 5).

tests/test_shared_state.py builds the accounts from two sessions. Applications as often keep one
session and pass credentials per client (``session.client(..., aws_access_key_id=...)``, a
multi-tenant service) under ``install()``: the quota scope must come from each client's own
credentials, never from the session.
"""

from __future__ import annotations

import boto3
from botocore.config import Config

import bedrock_hooks
from bedrock_hooks import ratelimit
from bedrock_hooks.testing import Reply, sigv4_scope
from conftest import converse
from test_shared_state import ACCOUNT_A, ACCOUNT_B, FALLBACK, MODEL, attempt, engaged_scopes, storm
from _shared_state import fresh_shared_state  # noqa: F401  (autouse)


def per_client_accounts(server, fake_time, **options) -> tuple[list, object]:
    """One session; two clients signing as account A (throttled), one as account B (never throttled)."""
    bedrock_hooks.install(runtime=fake_time.runtime(), max_attempts=1, **options)
    session = boto3.Session(region_name="us-east-1")

    def client(keys: tuple[str, str]):
        return session.client("bedrock-runtime", endpoint_url=server.url, aws_access_key_id=keys[0],
                              aws_secret_access_key=keys[1], config=Config(retries={"mode": "standard"}))

    server.handler = lambda request: (Reply.throttling() if sigv4_scope(request).get("access_key") == ACCOUNT_A[0]
                                      else None)
    return [client(ACCOUNT_A), client(ACCOUNT_A)], client(ACCOUNT_B)


def test_per_client_credentials_of_one_session_are_paced_per_account(server, fake_time):
    a_clients, b_client = per_client_accounts(server, fake_time)
    storm(a_clients)
    assert len({scope.account for scope in engaged_scopes()}) == 1
    fake_time.sleeps.clear()
    attempt(a_clients[0])
    assert fake_time.sleeps  # account A is paced (the control)...
    fake_time.sleeps.clear()
    for _ in range(10):
        converse(b_client, MODEL)
    assert fake_time.sleeps == []  # ...account B, from the same session: never
    assert {scope.account for scope, _ in ratelimit.buckets()} == {engaged_scopes()[0].account}


def test_per_client_credentials_of_one_session_have_their_own_circuits(server, fake_time):
    a_clients, b_client = per_client_accounts(server, fake_time, fallbacks={MODEL: [FALLBACK]}, circuit_threshold=3)
    for _ in range(3):
        attempt(a_clients[0])
    server.reset()
    attempt(a_clients[1])
    assert [r.model_id for r in server.requests] == [FALLBACK]  # A's circuit is open (the control)
    server.reset()
    for _ in range(5):
        assert "BedrockHooks" not in converse(b_client, MODEL)
    assert [r.model_id for r in server.requests] == [MODEL] * 5
