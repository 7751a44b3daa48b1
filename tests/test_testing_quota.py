"""Bedrock's token quota on the loopback server (``bedrock_hooks.testing.quota``), driven by real boto3 clients.

Time is a fake clock given to the server (``quota_clock``): buckets refill only when a test moves it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import botocore.exceptions
import pytest
from botocore.config import Config

from bedrock_hooks.testing import DEFAULT_TEXT, BedrockServer, Reply, TokenQuota, count_tokens, model_limits
from bedrock_hooks.testing.quota import prompt_tokens, requested_max_tokens

SONNET4 = "anthropic.claude-sonnet-4-20250514-v1:0"
HAIKU3 = "anthropic.claude-3-haiku-20240307-v1:0"
NO_RETRY = Config(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=5, connect_timeout=2)
PROMPT = "x" * 40  # 10 tokens
ANSWER = count_tokens(DEFAULT_TEXT)  # 7 tokens


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock: Clock) -> Iterator[BedrockServer]:
    with BedrockServer(quota_clock=clock) as srv:
        yield srv


@pytest.fixture
def client(server: BedrockServer) -> Any:
    return server.client(config=NO_RETRY)


def converse(client: Any, model: str = SONNET4, max_tokens: int | None = 100, text: str = PROMPT) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"inferenceConfig": {"maxTokens": max_tokens}} if max_tokens else {}
    return client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": text}]}], **kwargs)


def anthropic_body(max_tokens: int = 100, text: str = PROMPT, **extra: Any) -> str:
    return json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}], **extra})


def throttled(call: Any) -> botocore.exceptions.ClientError:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call()
    return info.value


# -- reservation -------------------------------------------------------------------------------------


def test_reservation_rejects_max_tokens_too_large_for_the_remaining_quota(server: BedrockServer, client: Any) -> None:
    server.quota(SONNET4, tokens_per_minute=1000)
    converse(client, max_tokens=500)  # reserves 510, settles 10 + 7 x 5 = 45: 955 left
    error = throttled(lambda: converse(client, max_tokens=950))  # 960 > 955
    assert error.response["Error"]["Code"] == "ThrottlingException"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert error.response["Error"]["Message"] == "Too many tokens, please wait before trying again."
    assert error.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"].startswith("ThrottlingException:")
    converse(client, max_tokens=940)  # 950 fits
    stats = server.quota_stats()[SONNET4]
    assert (stats.admitted, stats.throttled, stats.reserved) == (2, 1, 510 + 950)


def test_throttling_wire_format_is_the_scripted_one(server: BedrockServer) -> None:
    """The quota's 429 is byte-for-byte ``Reply.throttling()`` (code header, JSON message body)."""
    server.quota(SONNET4, tokens_per_minute=10)
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
    conn.request("POST", f"/model/{SONNET4}/converse", body=json.dumps({"messages": []}))
    response = conn.getresponse()
    body = response.read()
    conn.close()
    expected = Reply.throttling("Too many tokens, please wait before trying again.")
    assert response.status == 429
    assert body == expected.body
    assert response.getheader("x-amzn-ErrorType") == dict(expected.headers)["x-amzn-ErrorType"]


def test_unset_max_tokens_reserves_the_model_default(server: BedrockServer, client: Any) -> None:
    assert model_limits(SONNET4).max_output == 64_000
    server.quota(SONNET4, tokens_per_minute=64_000)
    throttled(lambda: converse(client, max_tokens=None))  # 10 + 64,000 > 64,000
    converse(client, max_tokens=None, text="")  # 0 + 64,000 fits exactly
    assert server.quota_stats()[SONNET4].reserved == 64_000


def test_unset_max_tokens_reserves_max_output_when_given(server: BedrockServer, client: Any) -> None:
    server.quota(HAIKU3, tokens_per_minute=1000, max_output=200)
    converse(client, HAIKU3, max_tokens=None)
    assert server.quota_stats()[HAIKU3].reserved == 210


def test_in_flight_reservation_holds_quota_until_the_answer_is_written(server: BedrockServer, clock: Clock) -> None:
    """A delayed answer keeps its whole reservation; a second request meanwhile does not fit."""
    import threading

    server.quota(HAIKU3, tokens_per_minute=1000)
    server.script(Reply.delay(5.0))  # held until the server stops or 5 s pass: the test stops it
    slow_client, fast_client = server.client(config=NO_RETRY), server.client(config=NO_RETRY)
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(_call(lambda: converse(slow_client, HAIKU3, 900))))
    worker.start()
    server.wait_for_requests(1)
    stats = server.quota_stats()[HAIKU3]
    assert (stats.in_flight, stats.in_flight_tokens) == (1, 910)
    assert throttled(lambda: converse(fast_client, HAIKU3, 100)).response["Error"]["Code"] == "ThrottlingException"
    server.stop(timeout=2)
    worker.join(5)
    assert server.quota_stats()[HAIKU3].in_flight == 0


def _call(fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:
        return exc


# -- settlement --------------------------------------------------------------------------------------


def test_settlement_refunds_the_unused_reservation(server: BedrockServer, client: Any) -> None:
    server.quota(HAIKU3, tokens_per_minute=1000)
    converse(client, HAIKU3, max_tokens=900)  # reserves 910, costs 10 + 7 = 17
    stats = server.quota_stats()[HAIKU3]
    assert (stats.reserved, stats.settled, stats.available) == (910, 17, 1000 - 17)
    converse(client, HAIKU3, max_tokens=900)  # would not fit without the refund
    assert server.quota_stats()[HAIKU3].available == 1000 - 34


def test_burndown_is_5x_for_claude_4_and_1x_for_claude_3(server: BedrockServer, client: Any) -> None:
    for model in (SONNET4, HAIKU3):
        server.quota(model, tokens_per_minute=10_000, output_tokens=20)
        out = converse(client, model)
        assert out["usage"] == {"inputTokens": 10, "outputTokens": 20, "totalTokens": 30}
    stats = server.quota_stats()
    assert stats[SONNET4].settled == 10 + 20 * 5
    assert stats[HAIKU3].settled == 10 + 20


@pytest.mark.parametrize("model, burndown", [
    ("anthropic.claude-opus-4-20250514-v1:0", 5.0),
    ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", 5.0),
    ("global.anthropic.claude-haiku-4-5-20251001-v1:0", 5.0),
    ("anthropic.claude-opus-4-1-20250805-v1:0", 5.0),
    ("anthropic.claude-3-7-sonnet-20250219-v1:0", 1.0),
    ("anthropic.claude-3-5-sonnet-20240620-v1:0", 1.0),
    ("amazon.nova-pro-v1:0", 1.0),
    ("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc", 1.0),
])
def test_model_table_burndown(model: str, burndown: float) -> None:
    assert model_limits(model).burndown == burndown


def test_settlement_beyond_the_reservation_puts_the_quota_in_debt(server: BedrockServer, client: Any,
                                                                 clock: Clock) -> None:
    """Claude 4 writing all of max_tokens costs 5x the output part of its reservation."""
    server.quota(SONNET4, tokens_per_minute=600, output_tokens=10**6)
    out = converse(client, max_tokens=100)  # reserves 110, costs 10 + 100 x 5 = 510
    assert out["stopReason"] == "max_tokens" and out["usage"]["outputTokens"] == 100
    assert server.quota_stats()[SONNET4].available == 600 - 510
    throttled(lambda: converse(client, max_tokens=100))  # 110 > 90
    clock.now += 2.0  # +20 tokens (600 per minute)
    converse(client, max_tokens=100)


def test_quota_refills_continuously_on_the_injected_clock(server: BedrockServer, client: Any, clock: Clock) -> None:
    server.quota(HAIKU3, tokens_per_minute=600, output_tokens=0)  # 10 tokens per second
    converse(client, HAIKU3, max_tokens=590)  # reserves 600, costs 10
    converse(client, HAIKU3, max_tokens=580)  # 590 of 590
    converse(client, HAIKU3, max_tokens=570)  # 580 of 580
    throttled(lambda: converse(client, HAIKU3, max_tokens=570))  # 580 > 570
    clock.now += 0.5
    throttled(lambda: converse(client, HAIKU3, max_tokens=570))  # 575
    clock.now += 0.5
    converse(client, HAIKU3, max_tokens=570)  # 580


def test_burst_caps_the_bucket() -> None:
    clock = Clock()
    bucket = TokenQuota(6000, burst=100, clock=clock)
    assert bucket.available == 100
    assert not bucket.try_reserve(101)
    assert bucket.try_reserve(100)
    clock.now += 60
    assert bucket.available == 100
    bucket.settle(100, 30)
    assert bucket.available == 100  # a refund never overfills


def test_different_models_are_independent(server: BedrockServer, client: Any) -> None:
    other = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    server.quota("anthropic.claude-sonnet-4*", tokens_per_minute=1000, output_tokens=150)  # a bucket per model
    converse(client, SONNET4, max_tokens=900)  # costs 10 + 150 x 5 = 760: 240 left
    throttled(lambda: converse(client, SONNET4, max_tokens=900))
    converse(client, other, max_tokens=900)
    converse(client, HAIKU3, max_tokens=None)  # no quota: unlimited
    stats = server.quota_stats()
    assert set(stats) == {SONNET4, other}
    assert (stats[SONNET4].throttled, stats[other].throttled) == (1, 0)


def test_quota_applies_to_handler_replies_not_to_scripted_errors(server: BedrockServer, client: Any) -> None:
    server.quota(HAIKU3, tokens_per_minute=100)
    server.script(Reply.internal_server())
    with pytest.raises(botocore.exceptions.ClientError) as info:
        converse(client, HAIKU3, max_tokens=1000)  # would not fit, but the scripted 500 comes first
    assert info.value.response["Error"]["Code"] == "InternalServerException"
    server.handler = lambda request: Reply.delay(0.0)  # generated answer behind a delay: counted
    converse(client, HAIKU3, max_tokens=50)
    assert server.quota_stats()[HAIKU3].admitted == 1


def test_reset_clears_quotas(server: BedrockServer, client: Any) -> None:
    server.quota(HAIKU3, tokens_per_minute=10)
    server.reset()
    out = converse(client, HAIKU3)
    assert out["usage"] == {"inputTokens": 5, "outputTokens": 6, "totalTokens": 11}  # the fixed default
    assert server.quota_stats() == {}


# -- usage in the four operations --------------------------------------------------------------------


def test_converse_usage(server: BedrockServer, client: Any) -> None:
    server.quota(HAIKU3, tokens_per_minute=10_000, output_tokens=lambda request: 30)
    out = converse(client, HAIKU3, max_tokens=100)
    assert out["usage"] == {"inputTokens": 10, "outputTokens": 30, "totalTokens": 40}
    assert count_tokens(out["output"]["message"]["content"][0]["text"]) == 30
    assert out["stopReason"] == "end_turn" and out["metrics"]["latencyMs"] >= 1


def test_invoke_model_usage_headers_and_body(server: BedrockServer, client: Any) -> None:
    server.quota(SONNET4, tokens_per_minute=10_000)
    response = client.invoke_model(modelId=SONNET4, body=anthropic_body(100, system="s" * 8))
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-input-token-count"] == "12"
    assert headers["x-amzn-bedrock-output-token-count"] == str(ANSWER)
    body = json.loads(response["body"].read())
    assert body["usage"] == {"input_tokens": 12, "output_tokens": ANSWER}
    assert body["content"] == [{"type": "text", "text": DEFAULT_TEXT}]
    assert server.quota_stats()[SONNET4].settled == 12 + ANSWER * 5


def test_invoke_model_usage_in_titan_shape(server: BedrockServer, client: Any) -> None:
    titan = "amazon.titan-text-express-v1"
    server.quota(titan, tokens_per_minute=10_000, output_tokens=9)
    body = {"inputText": PROMPT, "textGenerationConfig": {"maxTokenCount": 50}}
    response = client.invoke_model(modelId=titan, body=json.dumps(body))
    payload = json.loads(response["body"].read())
    assert payload["inputTextTokenCount"] == 10
    assert payload["results"][0]["tokenCount"] == 9 and payload["results"][0]["completionReason"] == "FINISH"
    assert server.quota_stats()[titan].reserved == 10 + 50


def test_converse_stream_usage_in_metadata(server: BedrockServer, client: Any) -> None:
    server.quota(SONNET4, tokens_per_minute=10_000, output_tokens=40)
    response = client.converse_stream(modelId=SONNET4, messages=[{"role": "user", "content": [{"text": PROMPT}]}],
                                      inferenceConfig={"maxTokens": 100})
    events = list(response["stream"])
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    metadata = events[-1]["metadata"]
    assert metadata["usage"] == {"inputTokens": 10, "outputTokens": 40, "totalTokens": 50}
    assert metadata["metrics"]["latencyMs"] >= 1
    assert count_tokens(text) == 40
    stats = server.quota_stats()[SONNET4]
    assert (stats.settled, stats.in_flight) == (10 + 40 * 5, 0)


def test_invoke_model_with_response_stream_metrics_in_last_chunk(server: BedrockServer, client: Any) -> None:
    server.quota(SONNET4, tokens_per_minute=10_000, output_tokens=3)
    response = client.invoke_model_with_response_stream(modelId=SONNET4, body=anthropic_body(100))
    chunks = [json.loads(event["chunk"]["bytes"]) for event in response["body"]]
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert (metrics["inputTokenCount"], metrics["outputTokenCount"]) == (10, 3)
    assert chunks[0]["message"]["model"] == SONNET4
    assert chunks[-2]["usage"] == {"output_tokens": 3}
    assert server.quota_stats()[SONNET4].settled == 10 + 3 * 5


# -- prompt caching ----------------------------------------------------------------------------------


def _add_cache_point_on_the_wire(client: Any) -> None:
    """Append ``{"cachePoint": ...}`` to the serialized ``system`` (what Bedrock receives): the oldest botocore
    CI tests has no cachePoint in its Converse model and would refuse it as a parameter."""
    def add(request: Any, **_: Any) -> None:
        body = json.loads(request.body)
        body["system"].append({"cachePoint": {"type": "default"}})
        request.data = json.dumps(body).encode()

    client.meta.events.register("before-sign.bedrock-runtime.Converse", add)


def test_cache_point_writes_then_reads_and_cache_reads_are_refunded(server: BedrockServer, client: Any) -> None:
    server.quota(SONNET4, tokens_per_minute=10_000, output_tokens=0)
    system = [{"text": "s" * 400}]  # 100 cached tokens, once the cache point is added to the wire body
    _add_cache_point_on_the_wire(client)
    kwargs = dict(modelId=SONNET4, system=system, messages=[{"role": "user", "content": [{"text": PROMPT}]}],
                  inferenceConfig={"maxTokens": 50})
    first, second = client.converse(**kwargs), client.converse(**kwargs)
    parsed = client.meta.service_model.shape_for("TokenUsage").members  # the oldest botocore drops cache fields
    assert first["usage"] == {k: v for k, v in {"inputTokens": 10, "outputTokens": 0, "totalTokens": 110,
                              "cacheReadInputTokens": 0, "cacheWriteInputTokens": 100}.items() if k in parsed}
    assert second["usage"] == {k: v for k, v in {"inputTokens": 10, "outputTokens": 0, "totalTokens": 110,
                               "cacheReadInputTokens": 100, "cacheWriteInputTokens": 0}.items() if k in parsed}
    stats = server.quota_stats()[SONNET4]
    assert stats.reserved == 2 * (110 + 50)  # reads and writes are reserved...
    assert stats.settled == (10 + 100) + 10  # ...a write is charged, a read is refunded


def test_anthropic_cache_control_headers(server: BedrockServer, client: Any) -> None:
    server.quota(SONNET4, tokens_per_minute=10_000)
    system = [{"type": "text", "text": "s" * 400, "cache_control": {"type": "ephemeral"}}]
    client.invoke_model(modelId=SONNET4, body=anthropic_body(50, system=system))
    response = client.invoke_model(modelId=SONNET4, body=anthropic_body(50, system=system))
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-cache-read-input-token-count"] == "100"
    assert json.loads(response["body"].read())["usage"]["cache_read_input_tokens"] == 100


# -- counting ----------------------------------------------------------------------------------------


def test_token_count_is_ceil_chars_over_four() -> None:
    assert [count_tokens(t) for t in ("", "a", "abcd", "abcde")] == [0, 1, 1, 2]
    body = {"system": [{"text": "abcd"}], "messages": [{"role": "user", "content": [{"text": "abcdefgh"}]}],
            "inferenceConfig": {"maxTokens": 7, "temperature": 0.5}}
    assert prompt_tokens(body).tokens == 3  # "user" is a role, not text
    assert requested_max_tokens(body) == 7
    assert requested_max_tokens({"max_gen_len": 12, "prompt": "x"}) == 12
    assert requested_max_tokens({"messages": []}) is None


def test_invoke_stream_answer_has_the_output_tokens(server: BedrockServer, client: Any) -> None:
    """A long answer is streamed in several deltas whose text has exactly the reported tokens."""
    server.quota(HAIKU3, tokens_per_minute=10_000, output_tokens=100)
    response = client.invoke_model_with_response_stream(modelId=HAIKU3, body=anthropic_body(200))
    texts = [json.loads(e["chunk"]["bytes"]).get("delta", {}).get("text", "") for e in response["body"]]
    assert len([t for t in texts if t]) > 1
    assert count_tokens("".join(texts)) == 100


# -- the benchmark server process --------------------------------------------------------------------


def test_bench_server_process_takes_quotas_from_the_command_line() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from _common import ServerProcess, new_session  # type: ignore[import-not-found]
    from _serve import parse_quota  # type: ignore[import-not-found]

    assert parse_quota("m*=600,burndown=5,output_tokens=3") == {
        "model": "m*", "tokens_per_minute": 600.0, "burndown": 5.0, "output_tokens": 3}
    # 600 tokens of burst refilled at 0.1 token/s: the real clock of the child process cannot matter
    with ServerProcess(quotas=[f"{SONNET4}=6,burst=600,output_tokens=20"]) as process:
        for _ in range(2):  # the quota survives scenario resets
            process.scenario("ok")
            client = new_session().client("bedrock-runtime", endpoint_url=process.url, config=NO_RETRY)
            out = converse(client, max_tokens=100)  # costs 10 + 20 x 5 = 110 of 600
            assert out["usage"] == {"inputTokens": 10, "outputTokens": 20, "totalTokens": 30}
            for _ in range(4):
                converse(client, max_tokens=100)  # 5 x 110 = 550 of 600
            throttled(lambda: converse(client, max_tokens=100))
            stats = process.quota_stats()[SONNET4]
            assert (stats["admitted"], stats["throttled"], stats["settled"]) == (5, 1, 550)
        process.scenario("ok", quotas=[])  # a scenario's own quotas replace the command line's
        converse(client, max_tokens=None)
        assert process.quota_stats() == {}


def test_a_failing_output_tokens_function_is_a_500_in_server_errors(server: BedrockServer, client: Any) -> None:
    server.quota(HAIKU3, tokens_per_minute=1000, output_tokens=lambda request: 1 // 0)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        converse(client, HAIKU3)
    assert info.value.response["Error"]["Code"] == "InternalServerException"
    assert isinstance(server.errors[0], ZeroDivisionError)


def test_token_quota_is_thread_safe() -> None:
    import threading

    bucket = TokenQuota(60, burst=1000, clock=Clock())
    taken: list[int] = []

    def worker() -> None:
        for _ in range(200):
            if bucket.try_reserve(3):
                taken.append(3)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(taken) == 999 and bucket.available == 1
