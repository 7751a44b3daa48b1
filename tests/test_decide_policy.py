"""The decision core as a pure function: classify -> decide, one table, no server, no clock.

``RetryPolicy.decide(classification, state, now)`` returns the verdict and the next immutable
``RetryState`` (urllib3's ``Retry.increment`` style). Unary calls and streams use this one path.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from bedrock_hooks.catalog import ENTRIES, Decision
from bedrock_hooks.classification import ErrorFacts, classify
from bedrock_hooks.policy import MAX_DELAY, STANDARD_MAX_ATTEMPTS, Reason, RetryPolicy, Verdict
from bedrock_hooks.state import RetryState

BY_NAME = {e.name: e for e in ENTRIES}
POLICY = RetryPolicy(max_attempts=5)
RNG = random.Random(1)


def facts(status=None, code=None, message="", headers=None, exception=None):
    return ErrorFacts(status=status, code=code, message=message, headers=headers or {}, exception=exception)


# (what arrived, state before, expected reason, expected retry)
TABLE = [
    (facts(429, "ThrottlingException", "Too many requests"), RetryState(attempts=1), Reason.BACKOFF, True),
    (facts(429, "ThrottlingException", "Too many requests"), RetryState(attempts=4), Reason.BACKOFF, True),
    (facts(429, "ThrottlingException", "Too many requests"), RetryState(attempts=5), Reason.MAX_ATTEMPTS, False),
    (facts(503, "ServiceUnavailableException", "x"), RetryState(attempts=2), Reason.BACKOFF, True),
    (facts(503, "ServiceUnavailableException", "x"), RetryState(attempts=3), Reason.MAX_ATTEMPTS, False),
    (facts(429, "ThrottlingException", "Too many tokens per day"), RetryState(attempts=1), Reason.FAIL, False),
    (facts(400, "ValidationException", "Input is too long for requested model."), RetryState(attempts=1),
     Reason.FAIL, False),
    (facts(403, "AccessDeniedException", "Your AWS Marketplace subscription for this model is still being "
                                          "processed. Try again after 15 minutes"), RetryState(attempts=1),
     Reason.WAIT, False),
    (facts(exception=ConnectionResetError()), RetryState(attempts=1), Reason.RECONNECT, True),
    (facts(exception=ConnectionResetError()), RetryState(attempts=2, reconnected=True), Reason.BACKOFF, True),
    (facts(403, "ExpiredTokenException", "The security token included in the request is expired"),
     RetryState(attempts=1), Reason.REMEDY_UNAVAILABLE, False),  # no remedy given
    (facts(403, "ExpiredTokenException", "The security token included in the request is expired"),
     RetryState(attempts=1, remedy_used=True), Reason.REMEDY_USED, False),
    (facts(429, "ThrottlingException", "x", {"Retry-After": "3"}), RetryState(attempts=1), Reason.RETRY_AFTER, True),
]


@pytest.mark.parametrize("arrived,state,reason,retry", TABLE)
def test_classify_then_decide(arrived, state, reason, retry):
    classification = classify(arrived)
    verdict, after = POLICY.decide(classification, state, 100.0, rng=RNG)
    assert (verdict.reason, verdict.retry) == (reason, retry)
    assert after.first_failure == (state.first_failure or 100.0)


def test_state_is_a_value_and_decide_returns_the_next_one():
    state = RetryState(attempts=1)
    classification = classify(facts(exception=ConnectionResetError()))
    verdict, after = POLICY.decide(classification, state, 5.0)
    assert verdict == Verdict(True, 0.0, Reason.RECONNECT)
    assert state == RetryState(attempts=1)  # unchanged
    assert after.reconnected and after.first_failure == 5.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.attempts = 2  # type: ignore[misc]


def test_reasons_are_enums_that_keep_their_words():
    assert Reason.MAX_ATTEMPTS == "max-attempts" and Reason.MAX_ATTEMPTS.value == "max-attempts"
    assert {r.value for r in Reason} >= {"backoff", "reconnect", "remedy", "fail", "wait", "not-idempotent",
                                         "deadline", "retry-quota", "content-delivered", "not-recoverable"}


def test_remedy_is_applied_only_when_every_earlier_check_passed():
    applied = []
    expired = classify(facts(403, "ExpiredTokenException", "The security token included in the request is expired"))
    verdict, after = POLICY.decide(expired, RetryState(attempts=1), 0.0, remedy=lambda: applied.append(1) or True)
    assert verdict == Verdict(True, 0.0, Reason.REMEDY) and after.remedy_used and applied == [1]
    verdict, _ = POLICY.decide(expired, RetryState(attempts=5), 0.0, remedy=lambda: applied.append(2) or True)
    assert verdict.reason is Reason.MAX_ATTEMPTS and applied == [1]


def test_the_budget_is_charged_last_and_only_for_a_retry():
    charges = []
    throttled = classify(facts(429, "ThrottlingException", "x"))
    verdict, after = POLICY.decide(throttled, RetryState(attempts=1), 0.0, budget=lambda: charges.append(5) or 5)
    assert verdict.retry and after.charged == 5
    verdict, _ = POLICY.decide(throttled, RetryState(attempts=5), 0.0, budget=lambda: charges.append(5) or 5)
    assert not verdict.retry and charges == [5]
    verdict, after = POLICY.decide(throttled, RetryState(attempts=1), 0.0, budget=lambda: None)
    assert verdict == Verdict(False, reason=Reason.RETRY_QUOTA) and after.charged == 0


def test_ambiguous_failures_of_mutating_calls_are_not_resent():
    for arrived in (facts(500, "InternalServerException", "x"), facts(502, None, "<html>"),
                    facts(504, None, "<html>"), facts(exception=ConnectionResetError()),
                    facts(exception=TimeoutError())):
        verdict, _ = POLICY.decide(classify(arrived), RetryState(attempts=1), 0.0, resend_safe=False)
        assert verdict.reason is Reason.NOT_IDEMPOTENT, arrived
    for arrived in (facts(503, "ServiceUnavailableException", "x"), facts(429, "ThrottlingException", "x")):
        verdict, _ = POLICY.decide(classify(arrived), RetryState(attempts=1), 0.0, resend_safe=False)
        assert verdict.retry, arrived  # an answer that says nothing was done


def test_transient_errors_get_botocore_standard_attempts_unless_configured():
    import botocore.retries.standard

    from bedrock_hooks.config import load_settings

    assert STANDARD_MAX_ATTEMPTS == botocore.retries.standard.DEFAULT_MAX_ATTEMPTS
    default = RetryPolicy.from_settings(load_settings({}))
    assert (default.max_attempts, default.transient_attempts) == (5, 3)
    explicit = RetryPolicy.from_settings(load_settings({"BEDROCK_HOOKS_MAX_ATTEMPTS": "7"}), client_max_attempts=2)
    assert (explicit.max_attempts, explicit.transient_attempts) == (7, 7)
    client = RetryPolicy.from_settings(load_settings({}), client_max_attempts=6)
    assert (client.max_attempts, client.transient_attempts) == (6, 6)


@pytest.mark.parametrize("retry_number", [1, 64, 1100, 10**6])
def test_huge_settings_never_overflow_a_delay(retry_number):
    """Issue 11 #12: accepted values of 1e12 s made the backoff sleep raise OverflowError."""
    policy = RetryPolicy(max_attempts=10**7, transient_attempts=10**7, backoff_base=1e12,
                         throttle_backoff_base=1e12, backoff_cap=1e12, deadline=1e13)
    for entry in (BY_NAME["ThrottlingException"], BY_NAME["InternalFailure"]):
        delay = policy.backoff(entry, retry_number, RNG)
        assert 0.0 <= delay <= MAX_DELAY


@pytest.mark.parametrize("headers,expected", [
    ({"Retry-After": "3"}, 3.0),
    ({"x-amz-retry-after": "1500"}, 1.5),
    ({"x-amz-retry-after": "1500", "Retry-After": "9"}, 1.5),
])
def test_a_stated_wait_within_bounds_is_slept_exactly(headers, expected):
    """Issue 11 #19: Retry-After / x-amz-retry-after change the sleep (0 < wait <= cap)."""
    verdict, _ = POLICY.decide(classify(facts(429, "ThrottlingException", "x", headers)), RetryState(attempts=1), 0.0,
                               rng=RNG)
    assert verdict == Verdict(True, expected, Reason.RETRY_AFTER)


@pytest.mark.parametrize("raw", ["0", "-4", "21", "1e999", "soon"])
def test_a_stated_wait_out_of_bounds_falls_back_to_backoff(raw):
    verdict, _ = POLICY.decide(classify(facts(503, "ServiceUnavailableException", "x", {"Retry-After": raw})),
                               RetryState(attempts=1), 0.0, rng=RNG)
    assert verdict.reason is Reason.BACKOFF and 0.0 <= verdict.delay <= POLICY.backoff_base


def test_every_retryable_entry_has_a_decision_path():
    for entry in ENTRIES:
        arrived = facts(entry.status or None, next(iter(entry.codes), None), "", exception=None)
        classification = classify(arrived) if entry.codes else None
        if classification is None or classification.entry is not entry:
            continue
        verdict, _ = POLICY.decide(classification, RetryState(attempts=1), 0.0, rng=RNG)
        assert verdict.retry == (entry.decision is Decision.RETRY), entry.name
