"""Token-aware pacing on real clients against the loopback server's token quota (issue 14).

Time is injected (FakeTime): the library's sleeps move the fake clock and are asserted on; the
server's quota refills on its own clock, so the quotas here are small enough that it never matters.
"""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

import bedrock_hooks
from bedrock_hooks import pacing, ratelimit, tokens
from bedrock_hooks.model_limits import limits_of
from bedrock_hooks.testing import Reply

from conftest import make_client, new_session
from _shared_state import fresh_shared_state  # noqa: F401  (autouse)

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
OTHER = "amazon.nova-lite-v1:0"
SONNET_4 = "anthropic.claude-sonnet-4-20250514-v1:0"
HELLO = [{"role": "user", "content": [{"text": "hello there"}]}]


def converse(client, model: str = MODEL, max_tokens: int | None = 100, **kwargs):
    extra = {"inferenceConfig": {"maxTokens": max_tokens}} if max_tokens is not None else {}
    return client.converse(modelId=model, messages=HELLO, **extra, **kwargs)


def hooked(server, fake_time, **options):
    client = make_client(new_session(), server)
    bedrock_hooks.install(client, runtime=fake_time.runtime(), **options)
    return client


def the_bucket(target: str = MODEL) -> ratelimit.Bucket:
    (bucket,) = [b for (scope, _clock), b in ratelimit.buckets().items() if scope.target == f"model:{target}"]
    return bucket


def booked_units(monkeypatch) -> list[float]:
    """Every unit booked in any bucket: reservations and settlements (their sum is what the meter saw)."""
    units: list[float] = []
    real = ratelimit.Bucket._apply

    def spy(self, operation, *args):
        if operation.__name__ in ("reserve", "settle"):
            units.append(args[0])
        return real(self, operation, *args)

    monkeypatch.setattr(ratelimit.Bucket, "_apply", spy)
    return units


def test_a_user_quota_paces_in_tokens_and_settles_with_the_real_usage(server, fake_time, monkeypatch):
    """120 tokens/min: a level of 120 tokens, then sends spaced by their expected charge at 2 tokens/s.
    Every answer's usage (from the server's own count) replaces what was booked for it."""
    client = hooked(server, fake_time, quotas=f"{MODEL}=120/min")
    units = booked_units(monkeypatch)
    charged = 0.0
    for _ in range(30):
        usage = converse(client, max_tokens=50)["usage"]
        charged += usage["inputTokens"] + usage["outputTokens"]
    assert usage["outputTokens"] < 50
    bucket = the_bucket()
    assert bucket.engaged and bucket.rate == pytest.approx(2.0)
    assert sum(units) == pytest.approx(charged)  # bookings corrected to the real usage, request by request
    assert bucket.output_avg == pytest.approx(usage["outputTokens"])  # learned from the answers
    assert fake_time.sleeps, "a full level must pace"
    # once the output size is known, a send books input + ~7 output tokens, not the 50 it may write
    assert max(fake_time.sleeps[-3:]) < 50 / 2.0
    # in steady state each send waits for exactly the previous answer's real charge at 2 tokens/s
    assert fake_time.sleeps[-1] == pytest.approx((usage["inputTokens"] + usage["outputTokens"]) / 2.0)


def test_a_quota_never_paces_another_model(server, fake_time, monkeypatch):
    client = hooked(server, fake_time, quotas=f"{MODEL}=60/min")
    for _ in range(10):
        converse(client)
    assert fake_time.sleeps  # the control: MODEL is paced
    fake_time.sleeps.clear()
    calls = []
    real = tokens.estimate_body
    monkeypatch.setattr(ratelimit, "estimate_body", lambda b: calls.append(b) or real(b))
    for _ in range(10):
        converse(client, OTHER)
    assert fake_time.sleeps == [] and calls == []  # no sleep, no body even parsed
    assert {scope.target for scope, _clock in ratelimit.buckets()} == {f"model:{MODEL}"}


def test_the_idle_path_parses_no_body_and_makes_no_bucket(server, fake_time, monkeypatch):
    client = hooked(server, fake_time)
    calls = []
    monkeypatch.setattr(ratelimit, "estimate_body", lambda b: calls.append(b))
    for _ in range(5):
        converse(client)
        client.invoke_model(modelId=MODEL, body=json.dumps({"max_tokens": 10, "messages": []}))
    assert calls == [] and ratelimit.buckets() == {} and fake_time.sleeps == []


def test_invoke_model_settles_from_its_token_count_headers(server, fake_time):
    client = hooked(server, fake_time, quotas=f"{MODEL}=6000/min")
    response = client.invoke_model(modelId=MODEL, body=json.dumps({
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 300,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 400}]}]}))
    response["body"].read()
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    used = int(headers["x-amzn-bedrock-input-token-count"]) + int(headers["x-amzn-bedrock-output-token-count"])
    assert the_bucket().state()["sent"] == pytest.approx(used)


def test_a_stream_settles_at_its_metadata_event_and_an_abandoned_one_keeps_its_booking(server, fake_time):
    client = hooked(server, fake_time, quotas=f"{MODEL}=6000/min")
    events = list(client.converse_stream(modelId=MODEL, messages=HELLO, inferenceConfig={"maxTokens": 200})["stream"])
    usage = next(e["metadata"]["usage"] for e in events if "metadata" in e)
    bucket = the_bucket()
    assert bucket.state()["sent"] == pytest.approx(usage["inputTokens"] + usage["outputTokens"])
    before = bucket.state()["sent"]
    stream = client.converse_stream(modelId=MODEL, messages=HELLO, inferenceConfig={"maxTokens": 200})["stream"]
    next(iter(stream))  # the application reads one event and walks away
    stream.close()
    booked = bucket.state()["sent"] - before
    assert bucket.output_avg == pytest.approx(usage["outputTokens"])  # the first stream's usage was learned
    expected = tokens.expected_cost(tokens.Estimate(4, 200), limits_of(MODEL), bucket.output_avg)
    assert booked == pytest.approx(expected)  # the booking stands: its end never came, nothing settled it


def test_invoke_stream_settles_from_its_invocation_metrics(server, fake_time):
    client = hooked(server, fake_time, quotas=f"{MODEL}=6000/min")
    response = client.invoke_model_with_response_stream(modelId=MODEL, body=json.dumps({
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 500, "messages": HELLO_ANTHROPIC}))
    chunks = [json.loads(e["chunk"]["bytes"]) for e in response["body"]]
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert the_bucket().state()["sent"] == pytest.approx(metrics["inputTokenCount"] + metrics["outputTokenCount"])


HELLO_ANTHROPIC = [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}]


def test_a_throttle_without_max_tokens_names_the_reservation_as_the_cause(server, fake_time):
    """The server's quota holds less than the model's maximum output: a request that sets no maxTokens
    reserves it all and is refused; the hint says so. The same request with maxTokens fits."""
    server.quota(SONNET_4, tokens_per_minute=1, burst=20_000)
    client = hooked(server, fake_time, max_attempts=1)
    with pytest.raises(ClientError) as caught:
        converse(client, SONNET_4, max_tokens=None)
    message = caught.value.response["Error"]["Message"]
    assert "No maxTokens set" in message and "(64,000 tokens, output counting 5x)" in message
    assert "lets more requests run at once" in str(caught.value)
    assert converse(client, SONNET_4, max_tokens=500)["usage"]["outputTokens"] > 0  # fits now


def test_a_throttle_with_max_tokens_set_gets_no_such_note(server, fake_time):
    server.default = Reply.throttling()
    client = hooked(server, fake_time, max_attempts=1)
    with pytest.raises(ClientError) as caught:
        converse(client, SONNET_4, max_tokens=500)
    assert "maxTokens" not in caught.value.response["Error"]["Message"]
    assert "[bedrock-hooks]" in caught.value.response["Error"]["Message"]  # the hint itself is there


def test_a_token_quota_storm_engages_learned_pacing_in_tokens(server, fake_time):
    """The quota admits one request, then refuses: 25 calls over a second engage pacing for that model,
    at a rate in tokens/s; the next send waits about its expected charge over that rate."""
    server.quota(MODEL, tokens_per_minute=1, burst=205)
    client = hooked(server, fake_time, max_attempts=1)
    for _ in range(25):
        try:
            converse(client, max_tokens=200)
        except ClientError:
            pass
        fake_time.now += 0.04
    bucket = the_bucket()
    assert bucket.engaged and bucket.config.burst == 60.0
    state = bucket.state()
    assert state["cost_avg"] > 200  # units are tokens: input + the 200-token limit (output not learned)
    fake_time.sleeps.clear()
    bucket._state["tat"] = fake_time.now + 60.0  # the level is full
    with pytest.raises(ClientError):
        converse(client, max_tokens=200)
    with pytest.raises(ClientError):
        converse(client, max_tokens=200)
    # the second send waits for the first one's booking: its tokens over the rate (tokens/s) it was booked at
    assert fake_time.sleeps == [pytest.approx(state["cost_avg"] / state["rate"], rel=0.05)]
    floor = pacing._floor(bucket.state(), bucket.config)  # and the fresh 429 for the first cut the rate again,
    assert bucket.rate < state["rate"] or bucket.rate == pytest.approx(floor)  # unless it is at its floor already
    assert limits_of(MODEL).max_output == 4096


def test_without_the_stream_wrapper_a_stream_keeps_its_booking(server, fake_time):
    """Hints and stream re-issue off: streams are not wrapped, nothing sees their end, the booking stands."""
    client = hooked(server, fake_time, quotas=f"{MODEL}=6000/min", hints=False, stream_retry=False)
    list(client.converse_stream(modelId=MODEL, messages=HELLO, inferenceConfig={"maxTokens": 200})["stream"])
    booked = the_bucket().state()["sent"]
    assert booked == pytest.approx(tokens.expected_cost(tokens.Estimate(4, 200), limits_of(MODEL)))


def test_an_invoke_model_body_without_its_output_limit_gets_the_note(server, fake_time):
    server.quota(SONNET_4, tokens_per_minute=1, burst=20_000)
    client = hooked(server, fake_time, max_attempts=1)
    with pytest.raises(ClientError) as caught:
        client.invoke_model(modelId=SONNET_4, body=json.dumps({"anthropic_version": "bedrock-2023-05-31",
                                                                "messages": HELLO_ANTHROPIC}))
    assert "No maxTokens set" in caught.value.response["Error"]["Message"]
    assert any("No maxTokens set" in note for note in caught.value.response["BedrockHooks"]["details"]["notes"])
