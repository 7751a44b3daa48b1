"""Two AWS accounts in one process, the way applications really get there (issue 11, defect 5).

tests/test_shared_state.py builds the accounts from two sessions. Applications as often keep one
session and pass credentials per client (``session.client(..., aws_access_key_id=...)``, a
multi-tenant service) under ``install()``: the quota scope must come from each client's own
credentials, never from the session.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config

import bedrock_hooks
import test_shared_state as shared
from bedrock_hooks.testing import Reply, sigv4_scope
from _shared_state import fresh_shared_state  # noqa: F401  (autouse)


def per_client_accounts(server, fake_time, **options) -> tuple[list, object]:
    """One session; two clients signing as account A (throttled), one as account B (never throttled)."""
    bedrock_hooks.install(runtime=fake_time.runtime(), max_attempts=1, **options)
    session = boto3.Session(region_name="us-east-1")

    def client(keys: tuple[str, str]):
        return session.client("bedrock-runtime", endpoint_url=server.url, aws_access_key_id=keys[0],
                              aws_secret_access_key=keys[1], config=Config(retries={"mode": "standard"}))

    throttled_key = shared.ACCOUNT_A[0]
    server.handler = lambda request: Reply.throttling() if sigv4_scope(request).get("access_key") == throttled_key else None
    return [client(shared.ACCOUNT_A), client(shared.ACCOUNT_A)], client(shared.ACCOUNT_B)


@pytest.mark.parametrize("test", [shared.test_throttled_account_never_paces_another_account,
                                  shared.test_open_circuit_of_one_account_never_reroutes_another],
                         ids=lambda test: test.__name__.removeprefix("test_"))
def test_per_client_credentials_of_one_session(test, server, fake_time, monkeypatch):
    """The two-account tests of test_shared_state.py, with the accounts made per client of one session."""
    monkeypatch.setattr(shared, "two_accounts", per_client_accounts)
    test(server, fake_time)
