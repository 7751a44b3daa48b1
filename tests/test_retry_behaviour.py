"""Retry decisions against real boto3 clients: budgets, botocore retry modes, remedies, delegation."""

from __future__ import annotations

import datetime
import logging
import time

import botocore.endpoint
import pytest
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

import bedrock_hooks
import bedrock_hooks.classification as classify_module
from bedrock_hooks.budget import budget_for
from bedrock_hooks.testing import Reply
from conftest import converse, make_client, new_session

MODES = ["legacy", "standard", "adaptive"]


@pytest.mark.parametrize("mode", MODES)
def test_throttling_backs_off_longer_than_transient_errors(mode, server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), backoff_base=0.1, throttle_backoff_base=10,
                          backoff_cap=1000, retry_deadline=10_000, max_attempts=5)
    client = make_client(session, server, mode=mode)
    server.script(*[Reply.service_unavailable()] * 4)
    converse(client)
    transient = list(fake_time.sleeps)
    fake_time.sleeps.clear()
    server.script(*[Reply.throttling()] * 4)
    converse(client)
    throttle = list(fake_time.sleeps)
    assert len(transient) == len(throttle) == 4
    # Full jitter bounds: uniform(0, base * 2**n)
    assert all(0 <= s <= 0.1 * 2 ** i for i, s in enumerate(transient))
    assert all(0 <= s <= 10 * 2 ** i for i, s in enumerate(throttle))
    assert sum(throttle) > 10 * sum(transient)


@pytest.mark.parametrize("mode", MODES)
def test_max_attempts_bounds_retries_and_marks_the_error(mode, server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), max_attempts=3)
    client = make_client(session, server, mode=mode)
    server.default = Reply.service_unavailable()
    with pytest.raises(ClientError) as raised:
        converse(client)
    assert len(server.requests) == 3
    assert len(fake_time.sleeps) == 2
    response = raised.value.response
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    assert response["ResponseMetadata"]["MaxAttemptsReached"] is True
    assert "reached max retries: 2" in str(raised.value)
    assert response["BedrockHooks"]["stopped_because"] == "max-attempts"
    assert response["BedrockHooks"]["attempts"] == 3


def test_client_config_attempts_are_honoured_unless_overridden(server, fake_time, monkeypatch):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server, retries={"max_attempts": 1})  # botocore: 1 retry => 2 attempts
    server.default = Reply.service_unavailable()
    with pytest.raises(ClientError):
        converse(client)
    assert len(server.requests) == 2

    bedrock_hooks.uninstall(session)
    server.reset()
    server.default = Reply.service_unavailable()
    monkeypatch.setenv("BEDROCK_HOOKS_MAX_ATTEMPTS", "4")
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server, retries={"max_attempts": 1})
    with pytest.raises(ClientError):
        converse(client)
    assert len(server.requests) == 4


def test_retry_deadline_is_never_slept_past(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(seed=3), max_attempts=50, backoff_base=4,
                          backoff_cap=8, retry_deadline=20)
    client = make_client(session, server)
    server.default = Reply.internal_server()
    with pytest.raises(ClientError) as raised:
        converse(client)
    assert sum(fake_time.sleeps) <= 20
    assert 2 <= len(server.requests) < 50
    assert raised.value.response["BedrockHooks"]["stopped_because"] == "deadline"


@pytest.mark.parametrize("mode", MODES)
def test_fail_wins_where_botocore_would_retry(mode, server, fake_time):
    """A daily token quota arrives as ThrottlingException: botocore retries it, the library does not."""
    daily = Reply.throttling("Too many tokens per day, please wait before trying again.")
    plain = make_client(new_session(), server, mode=mode)
    plain.meta.events.register("needs-retry", lambda **kw: None)  # no-op: plain botocore decides
    server.default = daily
    botocore_sleeps: list[float] = []
    original_sleep = botocore.endpoint.time.sleep
    botocore.endpoint.time.sleep = lambda s: botocore_sleeps.append(s)
    try:
        with pytest.raises(ClientError):
            converse(plain)
        plain_requests = len(server.requests)
        server.reset()
        server.default = daily
        session = new_session()
        bedrock_hooks.install(session, runtime=fake_time.runtime())
        with pytest.raises(ClientError):
            converse(make_client(session, server, mode=mode))
    finally:
        botocore.endpoint.time.sleep = original_sleep
    assert plain_requests > 1
    assert len(server.requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_no_double_sleeping(mode, server, fake_time, monkeypatch):
    """The library sleeps its own backoff and hands botocore a zero, never both."""
    botocore_sleeps: list[float] = []
    monkeypatch.setattr(botocore.endpoint.time, "sleep", lambda s: botocore_sleeps.append(s))
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), max_attempts=5)
    client = make_client(session, server, mode=mode)
    server.script(Reply.throttling(), Reply.internal_server(), Reply.service_unavailable())
    converse(client)
    assert len(fake_time.sleeps) == 3 and sum(fake_time.sleeps) > 0
    assert botocore_sleeps == [0, 0, 0]


def test_standard_mode_retry_quota_is_charged_and_refunded_as_botocore_does(server, fake_time, monkeypatch):
    """The library's retries draw from the client's own quota exactly as botocore's would (issue 11 #18)."""
    monkeypatch.setattr(botocore.endpoint.time, "sleep", lambda s: None)  # plain botocore's backoff
    left = {}
    for hooked in (False, True):
        session = new_session()
        if hooked:
            bedrock_hooks.install(session, runtime=fake_time.runtime())
        client = make_client(session, server, mode="standard")
        for _ in range(20):
            server.script(Reply.throttling(), Reply.service_unavailable())
            converse(client)
        left[hooked] = budget_for(client).available
    assert left[True] == left[False] < 500


def test_unknown_errors_are_left_to_botocore(server, fake_time):
    """A code the catalog does not know gets botocore's own decision (standard retries RequestTimeout)."""
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server, mode="standard")
    server.script(Reply.error(400, "RequestTimeoutException", "Request timed out"))
    response = converse(client)
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert fake_time.sleeps == []  # botocore's own backoff, not ours

    server.script(Reply.error(418, "TeapotException", "I am a teapot"))
    with pytest.raises(ClientError) as raised:
        converse(client)
    assert "BedrockHooks" not in raised.value.response
    assert "[bedrock-hooks]" not in str(raised.value)


def test_reset_is_retried_at_once_then_with_backoff(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), max_attempts=5)
    client = make_client(session, server)
    server.script(Reply.reset(), Reply.reset(), Reply.reset())
    converse(client)  # max_attempts=5 above: a reset is not a throttle, it gets 3 attempts by default
    assert len(server.requests) == 4
    assert len(fake_time.sleeps) == 2  # the first retry was immediate
    assert len({r.connection_id for r in server.requests}) == 4


def test_final_connection_failure_carries_the_idle_hint(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), max_attempts=2)
    client = make_client(session, server)
    server.default = Reply.reset()
    with pytest.raises(ConnectionClosedError) as raised:
        converse(client)
    info = raised.value.bedrock_hooks
    assert info["entry"] == "IdleConnectionReset"
    assert "350 s" in info["cause"]
    assert str(raised.value).splitlines()[-1].startswith("[bedrock-hooks] IdleConnectionReset")


def test_read_timeout_is_retried_and_hinted(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server, read_timeout=0.3)
    server.script(Reply.delay(1.0))
    assert converse(client)["ResponseMetadata"]["RetryAttempts"] == 1
    server.default = Reply.delay(1.0)
    with pytest.raises(ReadTimeoutError) as raised:
        converse(client)
    assert raised.value.bedrock_hooks["entry"] == "ReadTimeout"
    assert "read_timeout" in str(raised.value)


# -- fix-and-retry --------------------------------------------------------------------------------

def _x_amz_date(request) -> datetime.datetime:
    stamp = request.headers["X-Amz-Date"]
    return datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)


@pytest.mark.needs_internals("clock-skew")
@pytest.mark.parametrize("code,message", [
    ("InvalidSignatureException", "Signature expired: 20250714T201419Z is now earlier than 20250714T202350Z "
                                  "(20250714T202850Z - 5 min.)"),
    ("RequestExpired", "Request has expired."),
])
def test_clock_skew_is_measured_corrected_and_retried_once(code, message, server, fake_time):
    ahead = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=10)
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    server.script(Reply.with_date(Reply.error(403, code, message), ahead))
    converse(client)
    first, second = server.requests
    assert abs((_x_amz_date(first) - ahead).total_seconds()) > 500
    assert abs((_x_amz_date(second) - ahead).total_seconds()) < 30
    assert fake_time.sleeps == []  # retried immediately
    converse(client)  # later calls of the same client are signed with the corrected clock
    assert abs((_x_amz_date(server.requests[-1]) - ahead).total_seconds()) < 30
    # ...but another client (and any non-Bedrock client) keeps the real clock
    other = make_client(new_session(), server)
    converse(other)
    assert abs((_x_amz_date(server.requests[-1]) - ahead).total_seconds()) > 500


@pytest.mark.needs_internals("clock-skew")
def test_clock_skew_that_persists_fails_with_the_measured_skew(server, fake_time):
    ahead = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=10)
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    server.default = Reply.with_date(Reply.error(403, "InvalidSignatureException", "Signature expired: x"), ahead)
    with pytest.raises(ClientError) as raised:
        converse(client)
    assert len(server.requests) == 2
    info = raised.value.response["BedrockHooks"]
    assert info["entry"] == "RequestExpired" and info["decision"] == "fix-and-retry"
    assert 590 < info["details"]["clock_skew_seconds"] < 610
    assert "behind AWS" in str(raised.value)


def test_expired_refreshable_credentials_are_refreshed_and_retried(server, fake_time):
    keys = iter(["AKIDFIRST", "AKIDSECOND", "AKIDTHIRD"])

    def refresh():
        expiry = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).isoformat()
        return {"access_key": next(keys), "secret_key": "s3cr3t", "token": "tok", "expiry_time": expiry}

    session = new_session()
    session._session._credentials = RefreshableCredentials.create_from_metadata(refresh(), refresh, "assume-role")
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    server.script(Reply.error(403, "ExpiredTokenException", "The security token included in the request is expired"))
    converse(client)
    first, second = server.requests
    assert "AKIDFIRST" in first.headers["Authorization"]
    assert "AKIDSECOND" in second.headers["Authorization"]


def test_expired_static_credentials_fail_with_the_credential_source(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    server.default = Reply.error(403, "ExpiredTokenException", "The security token included in the request is expired")
    with pytest.raises(ClientError) as raised:
        converse(client)
    assert len(server.requests) == 1
    info = raised.value.response["BedrockHooks"]
    assert info["entry"] == "ExpiredToken"
    assert info["details"]["credential_source"] == "explicit"
    assert "cannot refresh" in " ".join(info["details"]["notes"])


def test_signature_hint_names_the_botocore_version(server, fake_time):
    import botocore

    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    server.default = Reply.error(403, "InvalidSignatureException", "The request signature we calculated does not match")
    with pytest.raises(ClientError) as raised:
        converse(make_client(session, server))
    assert f"botocore {botocore.__version__}" in str(raised.value)


# -- switches and failures --------------------------------------------------------------------------

def test_hints_off_leaves_messages_exactly_as_botocore_makes_them(server, fake_time, monkeypatch):
    reply = Reply.validation("The provided model identifier is invalid.")
    server.default = reply
    with pytest.raises(ClientError) as plain:
        converse(make_client(new_session(), server))
    monkeypatch.setenv("BEDROCK_HOOKS_HINTS", "off")
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    with pytest.raises(ClientError) as hooked:
        converse(make_client(session, server))
    assert str(hooked.value) == str(plain.value)
    assert "BedrockHooks" not in hooked.value.response


def test_retry_off_leaves_botocore_retry_handler_in_charge(server, fake_time, monkeypatch):
    monkeypatch.setenv("BEDROCK_HOOKS_RETRY", "0")
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server, mode="standard")
    server.default = Reply.throttling("Too many tokens per day, please wait before trying again.")
    with pytest.raises(ClientError) as raised:
        converse(client)
    assert len(server.requests) == 3  # botocore standard: 3 attempts
    assert raised.value.response["BedrockHooks"]["entry"] == "DailyTokenQuotaExceeded"


def test_a_failing_handler_is_logged_once_and_botocore_decides(server, fake_time, monkeypatch, caplog):
    def boom(facts):
        raise RuntimeError("injected")

    monkeypatch.setattr("bedrock_hooks.classification.classify", boom)
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server, mode="standard")
    with caplog.at_level(logging.WARNING, logger="bedrock_hooks"):
        for _ in range(3):
            server.script(Reply.service_unavailable())
            assert converse(client)["ResponseMetadata"]["RetryAttempts"] == 1  # botocore's own retry
    warnings = [r for r in caplog.records if "internal error in needs-retry" in r.getMessage()]
    assert len(warnings) == 1
    assert fake_time.sleeps == []


def test_classification_is_data_driven_and_tolerates_odd_input():
    facts = classify_module.ErrorFacts(status=429, code="throttlingException:http://internal.amazon.com/coral/x",
                                       message="")
    assert classify_module.classify(facts).entry.name == "ThrottlingException"
    assert classify_module.parse_wait("Try your request again in 15 minutes.") == 900
    assert classify_module.parse_wait("please retry after 30 seconds") == 30
    assert classify_module.parse_wait("Too many requests") is None
    assert classify_module.parse_retry_after_header({"Retry-After": "7"}) == 7
    assert classify_module.classify(classify_module.ErrorFacts(status=400, code="SomethingNew")) is None


def test_wall_clock_is_not_used_by_retries(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), backoff_base=30, backoff_cap=60)
    client = make_client(session, server)
    server.script(Reply.internal_server(), Reply.internal_server())
    start = time.monotonic()
    converse(client)
    assert time.monotonic() - start < 5  # 2 backoffs of up to 30/60 s went to the fake clock
    assert len(fake_time.sleeps) == 2
