"""Retry storms beyond the plain 503 outage (issue 11, defect 18).

tests/test_budget_outage.py counts a 40-call outage where every answer is 503. Real outages are
messier: 503s and 429s interleaved, throttling alone, connections reset. In each, and in every retry
mode, a hooked client must send no more requests than a plain botocore client in standard mode with
the same retry configuration, give or take throttling's two extra attempts on the outage's first call:
those are made only while no other call of the client is failing (its retry quota is untouched).
"""

from __future__ import annotations

import pytest

import bedrock_hooks
from bedrock_hooks.testing import Reply
from conftest import converse, make_client, new_session
from test_budget_outage import CALLS, _no_botocore_sleep, outage  # noqa: F401  (autouse)

MODES = ["legacy", "standard", "adaptive"]
#: The first throttled call of an outage may make throttling's two extra attempts: nothing tells it yet from a
#: one-off throttle burst on a healthy client (tests/test_budget_outage.py: 3 throttles, then the answer).
EXTRA = 2


def _attempt(request) -> int:
    """The attempt number botocore writes into every request (``amz-sdk-request: attempt=N; max=M``)."""
    header = request.headers.get("amz-sdk-request", "")
    return int(header.split("attempt=", 1)[1].split(";", 1)[0]) if "attempt=" in header else 1


#: What each attempt of every call gets (by botocore's attempt number): the same failures for the plain
#: and the hooked client, whatever number of attempts each makes.
OUTAGES = {
    "503-then-429": lambda n: Reply.service_unavailable() if n % 2 else Reply.throttling(),
    "429-then-503": lambda n: Reply.throttling() if n % 2 else Reply.service_unavailable(),
    "throttling-only": lambda n: Reply.throttling(),
    "two-503-one-429": lambda n: Reply.throttling() if n % 3 == 0 else Reply.service_unavailable(),
    "resets": lambda n: Reply.reset(),
    "500-502-504": lambda n: (Reply.internal_server(), Reply.raw(502, "<html>Bad Gateway</html>"),
                              Reply.raw(504, "<html>Gateway Timeout</html>"))[n % 3],
}


def mixed_outage(server, client, replies) -> int:
    return outage(server, client, lambda request: replies(_attempt(request)), errors=Exception)


@pytest.mark.parametrize("retries", [{}, {"max_attempts": 5}], ids=["default-attempts", "max_attempts=5"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", list(OUTAGES))
def test_a_mixed_outage_never_costs_more_requests_than_plain_standard_mode(kind, mode, retries, server, fake_time):
    plain = mixed_outage(server, make_client(new_session(), server, mode="standard", retries=dict(retries)), OUTAGES[kind])
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    hooked = mixed_outage(server, make_client(session, server, mode=mode, retries=dict(retries)), OUTAGES[kind])
    assert hooked <= plain + EXTRA, f"{kind}, {mode}: {hooked} requests with the hooks, {plain} plain standard mode"
    assert hooked > CALLS


def test_throttling_extra_attempts_need_a_calm_quota():
    from bedrock_hooks.catalog import ENTRIES
    from bedrock_hooks.classification import Classification, ErrorFacts
    from bedrock_hooks.policy import Reason, RetryPolicy
    from bedrock_hooks.state import RetryState

    throttled = Classification(next(e for e in ENTRIES if e.name == "ThrottlingException"), ErrorFacts(status=429))
    policy = RetryPolicy()
    asked: list[int] = []

    def calm(answer: bool):
        return lambda held: asked.append(held) or answer

    within, _ = policy.decide(throttled, RetryState(attempts=2, held=5), 0.0, calm=calm(False))
    assert within.retry and asked == []  # botocore standard mode's own count: never gated
    extra, after = policy.decide(throttled, RetryState(attempts=3, held=10), 0.0, budget=lambda: 5, calm=calm(True))
    assert extra.retry and asked == [10] and after.held == 15
    refused, _ = policy.decide(throttled, RetryState(attempts=3, held=10), 0.0, budget=lambda: 5, calm=calm(False))
    assert not refused.retry and refused.reason is Reason.MAX_ATTEMPTS


def test_a_throttled_call_during_an_outage_gets_standard_attempts_and_says_why(server, fake_time):
    from botocore.exceptions import ClientError

    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    server.script(*[Reply.service_unavailable()] * 3)  # another call failing: its retries hold quota
    with pytest.raises(ClientError):
        converse(client)
    throttled = mixed_outage(server, client, OUTAGES["throttling-only"])
    assert throttled == 3 * CALLS  # botocore standard mode's attempts, not throttling's five
    with pytest.raises(ClientError) as raised:
        converse(client)
    info = raised.value.response["BedrockHooks"]
    assert (info["stopped_because"], info["attempts"]) == ("max-attempts", 3)
    assert "only while no other call of this client is failing" in " ".join(info["details"]["notes"])
