"""The decision core on the wire: bounded sleeps, stated waits, one classification per attempt, the
words a fail-fast decision uses, and the INFO lines retries leave (issues 11 and 12)."""

from __future__ import annotations

import logging

import botocore.endpoint
import pytest
from botocore.exceptions import ClientError

import bedrock_hooks
from bedrock_hooks import classification
from bedrock_hooks.features import Runtime
from bedrock_hooks.testing import Reply
from conftest import converse, make_client, new_session

MARKETPLACE = ("Model access is denied due to IAM user or service role is not authorized to perform the required AWS "
               "Marketplace actions (aws-marketplace:ViewSubscriptions, aws-marketplace:Subscribe) to enable access "
               "to this model. Refer to the Amazon Bedrock documentation for further details. Your AWS Marketplace "
               "subscription for this model cannot be completed at this time. If you recently fixed this issue, try "
               "again after 5 minutes.")


def hooked(server, runtime, mode="standard", **overrides):
    session = new_session()
    bedrock_hooks.install(session, runtime=runtime, **overrides)
    return make_client(session, server, mode=mode)


# -- issue 11 #12: huge accepted values ---------------------------------------------------------------

def test_huge_backoff_settings_never_raise_overflow_into_the_app(server, fake_time):
    slept = []

    def sleep_like_time_sleep(seconds):  # time.sleep's own range check, without the sleeping
        if seconds > 9.2e9:
            raise OverflowError("sleep length is too large")
        slept.append(seconds)

    runtime = Runtime(clock=fake_time.clock, sleep=sleep_like_time_sleep)
    client = hooked(server, runtime, backoff_base=1e12, throttle_backoff_base=1e12, backoff_cap=1e12,
                    retry_deadline=1e13)
    server.script(Reply.service_unavailable(), Reply.throttling())
    assert converse(client)["ResponseMetadata"]["RetryAttempts"] == 2
    assert len(slept) == 2 and all(0 <= s <= 3600 for s in slept)


def test_a_failing_sleep_is_reported_and_botocore_sleeps_the_delay(server, fake_time, monkeypatch, caplog):
    botocore_slept = []
    monkeypatch.setattr(botocore.endpoint.time, "sleep", botocore_slept.append)

    def broken_sleep(seconds):
        raise RuntimeError("injected")

    client = hooked(server, Runtime(clock=fake_time.clock, sleep=broken_sleep))
    server.script(Reply.service_unavailable())
    with caplog.at_level(logging.WARNING, logger="bedrock_hooks"):
        assert converse(client)["ResponseMetadata"]["RetryAttempts"] == 1
    assert len(botocore_slept) == 1 and 0 < botocore_slept[0] <= 0.5
    assert any("internal error in backoff sleep" in r.getMessage() for r in caplog.records)


# -- issue 11 #19: Retry-After ------------------------------------------------------------------------

@pytest.mark.parametrize("headers,expected", [({"Retry-After": "3"}, 3.0), ({"x-amz-retry-after": "1500"}, 1.5)])
def test_a_stated_wait_is_the_sleep(headers, expected, server, fake_time):
    client = hooked(server, fake_time.runtime())
    server.script(Reply.error(429, "ThrottlingException", "Too many requests, please wait.", headers=headers))
    converse(client)
    assert fake_time.sleeps == [expected]


def test_a_stated_wait_past_the_cap_is_not_slept(server, fake_time):
    client = hooked(server, fake_time.runtime())
    server.script(Reply.error(429, "ThrottlingException", "Too many requests", headers={"Retry-After": "3600"}))
    converse(client)
    assert len(fake_time.sleeps) == 1 and fake_time.sleeps[0] <= 2.0  # the throttle backoff's first ceiling


# -- one classification per attempt ----------------------------------------------------------------

def test_each_failed_attempt_is_classified_once_for_every_feature(server, fake_time, monkeypatch):
    """Rate limiter (response-received), retry decision (needs-retry) and hint (after-call) share it."""
    calls = []
    original = classification._match
    monkeypatch.setattr(classification, "_match", lambda facts: calls.append(facts) or original(facts))
    client = hooked(server, fake_time.runtime())
    server.script(Reply.throttling())
    converse(client)
    assert len(calls) == 1
    calls.clear()
    server.script(Reply.validation("Input is too long for requested model."))
    with pytest.raises(ClientError):
        converse(client)
    assert len(calls) == 1


# -- issue 12 §4: stated waits on fail entries, "not retryable", INFO lines ----------------------------

def test_marketplace_permission_message_states_its_wait(server, fake_time):
    client = hooked(server, fake_time.runtime())
    server.script(Reply.error(403, "AccessDeniedException", MARKETPLACE))
    with pytest.raises(ClientError) as raised:
        converse(client)
    info = raised.value.response["BedrockHooks"]
    assert info["entry"] == "MarketplaceSubscribePermissionMissing"
    assert (info["decision"], info["retryable"], info["retry_after"]) == ("fail", False, 300)
    line = str(raised.value).splitlines()[-1]
    assert "Not retryable" in line and "do not retry it in your code or framework" in line
    assert "If you already fixed it, retry after ~300s." in line
    assert len(server.requests) == 1


def test_retries_and_fail_fast_decisions_are_logged_at_info(server, fake_time, caplog):
    client = hooked(server, fake_time.runtime())
    server.script(Reply.throttling())
    with caplog.at_level(logging.INFO, logger="bedrock_hooks"):
        converse(client)
        server.script(Reply.throttling("Too many tokens per day, please wait before trying again."))
        with pytest.raises(ClientError):
            converse(client)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and r.name.startswith("bedrock_hooks")]
    retry = next(line for line in lines if "-> retry" in line)
    assert "Converse: ThrottlingException" in retry and "attempt 1 of 5" in retry
    assert f"in {fake_time.sleeps[0]:.2f}s" in retry
    assert any("Converse: DailyTokenQuotaExceeded -> fail, not retried (fails fast at attempt 1)" in line
               for line in lines)
