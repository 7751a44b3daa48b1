"""Retry storms (issue 11 #18): every retry the library decides is paid from the client's retry quota.

The 40-call outage: every request answers 503. Counted on the server, a hooked client in any retry
mode sends no more requests than a plain botocore client in standard mode with the same retry
configuration, while throttling still gets more (and longer-spaced) attempts than botocore gives it.
"""

from __future__ import annotations

import botocore.endpoint
import pytest
from botocore.exceptions import ClientError

import bedrock_hooks
from bedrock_hooks.testing import Reply
from conftest import converse, make_client, new_session

MODES = ["legacy", "standard", "adaptive"]
CALLS = 40


@pytest.fixture(autouse=True)
def _no_botocore_sleep(monkeypatch):
    """Plain botocore sleeps its own backoff for real (up to seconds): the counts do not depend on it."""
    monkeypatch.setattr(botocore.endpoint.time, "sleep", lambda seconds: None)


def outage(server, client, handler=None, errors=ClientError) -> int:
    """Requests the server saw for CALLS calls that all fail with 503 (or what ``handler`` answers)."""
    server.reset()
    server.default = Reply.service_unavailable()
    server.handler = handler
    for _ in range(CALLS):
        with pytest.raises(errors):
            converse(client)
    return len(server.requests)


@pytest.mark.parametrize("retries", [{}, {"max_attempts": 5}], ids=["default-attempts", "max_attempts=5"])
@pytest.mark.parametrize("mode", MODES)
def test_outage_never_costs_more_requests_than_plain_standard_mode(mode, retries, server, fake_time):
    plain = outage(server, make_client(new_session(), server, mode="standard", retries=dict(retries)))
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    hooked = outage(server, make_client(session, server, mode=mode, retries=dict(retries)))
    assert hooked <= plain
    assert hooked > CALLS  # retries still happen while the quota lasts


def test_an_outage_drains_the_quota_and_the_hint_says_so(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server, mode="legacy", retries={"max_attempts": 5})
    outage(server, client)
    server.reset()
    server.default = Reply.service_unavailable()
    with pytest.raises(ClientError) as raised:
        converse(client)
    assert len(server.requests) == 1
    info = raised.value.response["BedrockHooks"]
    assert info["stopped_because"] == "retry-quota"
    assert raised.value.response["ResponseMetadata"]["RetryQuotaReached"] is True
    assert "retry quota is spent" in " ".join(info["details"]["notes"])


def test_successes_refund_the_legacy_mode_quota(server, fake_time):
    """Legacy mode has no botocore quota: the library's own one is refunded as botocore refunds its own."""
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server, mode="legacy")
    for _ in range(150):  # 150 retries cost more than the whole quota: only refunds keep them going
        server.script(Reply.service_unavailable())
        assert converse(client)["ResponseMetadata"]["RetryAttempts"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_throttling_still_gets_more_attempts_than_botocore(mode, server, fake_time):
    throttled = [Reply.throttling()] * 3
    server.script(*throttled)
    with pytest.raises(ClientError):
        converse(make_client(new_session(), server, mode="standard"))  # botocore: 3 attempts
    server.reset()
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    server.script(*throttled)
    assert converse(make_client(session, server, mode=mode))["ResponseMetadata"]["RetryAttempts"] == 3
    assert len(fake_time.sleeps) == 3
