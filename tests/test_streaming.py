"""ConverseStream / InvokeModelWithResponseStream: errors before, at the start of, and inside a stream."""

from __future__ import annotations

import base64
import json

import pytest
from botocore.eventstream import EventStream
from botocore.exceptions import ClientError, EventStreamError
from urllib3.exceptions import ProtocolError, ReadTimeoutError

import bedrock_hooks
from bedrock_hooks.testing import EventFrame, Reply
from conftest import make_client, new_session

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]


def converse_stream(client):
    return client.converse_stream(modelId=MODEL, messages=MESSAGES)


def text_of(events) -> str:
    return "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)


def hooked_client(server, fake_time, **overrides):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), **overrides)
    return make_client(session, server, read_timeout=overrides.pop("read_timeout", 5))


def exc_frame(kind: str = "throttlingException", message: str = "Too many requests, please wait before trying again."):
    return EventFrame.exception(kind, message)


# -- errors before the stream starts: same as any call ---------------------------------------------

@pytest.mark.parametrize("operation", ["converse_stream", "invoke_model_with_response_stream"])
def test_errors_before_the_stream_get_the_usual_decisions(operation, server, fake_time):
    client = hooked_client(server, fake_time)
    kwargs = {"modelId": MODEL, "messages": MESSAGES} if operation == "converse_stream" else \
        {"modelId": MODEL, "body": json.dumps({"messages": []})}
    server.script(Reply.throttling(), Reply.service_unavailable())
    response = getattr(client, operation)(**kwargs)
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    list(response["stream" if operation == "converse_stream" else "body"])
    server.script(Reply.error(400, "ValidationException", "Malformed input request, please reformat your input."))
    with pytest.raises(ClientError) as raised:
        getattr(client, operation)(**kwargs)
    assert raised.value.response["BedrockHooks"]["entry"] == "ValidationError"
    assert len(server.requests) == 4


# -- transparent recovery ------------------------------------------------------------------------------

def test_error_at_frame_zero_is_recovered_into_one_clean_stream(server, fake_time):
    client = hooked_client(server, fake_time)
    server.script(Reply.stream([exc_frame()]), Reply.stream(EventFrame.converse_text(["Hel", "lo"])))
    response = converse_stream(client)
    assert isinstance(response["stream"], EventStream)
    events = list(response["stream"])
    assert text_of(events) == "Hello"
    assert [next(iter(e)) for e in events][:1] == ["messageStart"]
    assert len(server.requests) == 2
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert len(fake_time.sleeps) == 1  # throttling backoff before the re-issue


def test_error_after_the_preamble_only_is_recovered_without_a_duplicate_message_start(server, fake_time):
    client = hooked_client(server, fake_time)
    start = EventFrame.converse_text(["x"])[0]
    server.script(Reply.stream([start, exc_frame("serviceUnavailableException", "Bedrock is unable to process your request.")]),
                  Reply.stream(EventFrame.converse_text(["fine"])))
    events = list(converse_stream(client)["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds.count("messageStart") == 1
    assert text_of(events) == "fine"


def test_reset_before_content_is_recovered_at_once(server, fake_time):
    client = hooked_client(server, fake_time)
    server.script(Reply.stream([EventFrame.reset()]), Reply.stream(EventFrame.converse_text(["ok"])))
    assert text_of(converse_stream(client)["stream"]) == "ok"
    assert fake_time.sleeps == []  # reconnect: first retry immediate
    assert server.requests[0].connection_id != server.requests[1].connection_id


def test_invoke_model_stream_recovers_before_the_first_chunk(server, fake_time):
    client = hooked_client(server, fake_time)
    chunks = EventFrame.invoke_chunks([{"type": "content_block_delta", "delta": {"text": "yo"}}])
    server.script(Reply.stream([exc_frame("internalServerException", "The system encountered an unexpected error.")]),
                  Reply.stream(chunks))
    response = client.invoke_model_with_response_stream(modelId=MODEL, body=b"{}")
    decoded = [json.loads(e["chunk"]["bytes"]) for e in response["body"]]
    assert decoded == [{"type": "content_block_delta", "delta": {"text": "yo"}}]
    assert len(server.requests) == 2


def test_recovery_is_bounded_by_the_attempt_budget(server, fake_time):
    client = hooked_client(server, fake_time, max_attempts=3)
    server.default = Reply.stream([exc_frame()])
    response = converse_stream(client)
    with pytest.raises(EventStreamError) as raised:
        list(response["stream"])
    assert len(server.requests) == 3
    info = raised.value.response["BedrockHooks"]
    assert info["stopped_because"] == "max-attempts" and info["attempts"] == 3


def test_reissue_failing_before_streaming_raises_what_iterating_a_stream_raises(server, fake_time):
    client = hooked_client(server, fake_time)
    server.script(Reply.stream([exc_frame()]), Reply.validation("Malformed input request, please reformat your input."))
    stream = converse_stream(client)["stream"]
    with pytest.raises(EventStreamError) as raised:  # botocore raises only this (or transport errors) mid-stream
        list(stream)
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert raised.value.response["BedrockHooks"]["entry"] == "ValidationError"
    assert str(raised.value).splitlines()[-1].startswith("[bedrock-hooks] ValidationError")
    assert len(server.requests) == 2


# -- never re-issue after content --------------------------------------------------------------------

@pytest.mark.parametrize("kind,entry", [
    ("throttlingException", "ThrottlingException"),
    ("serviceUnavailableException", "ServiceUnavailable"),
    ("internalServerException", "InternalFailure"),
    ("modelStreamErrorException", "ModelStreamErrorException"),
    ("modelTimeoutException", "ModelTimeoutException"),
    ("validationException", "ValidationError"),
])
def test_error_after_content_is_raised_with_a_hint_and_not_reissued(kind, entry, server, fake_time):
    client = hooked_client(server, fake_time)
    frames = EventFrame.converse_text(["partial"])[:2] + [exc_frame(kind, "boom")]
    server.script(Reply.stream(frames))
    seen = []
    with pytest.raises(EventStreamError) as raised:
        for event in converse_stream(client)["stream"]:
            seen.append(event)
    assert text_of(seen) == "partial"
    assert len(server.requests) == 1
    info = raised.value.response["BedrockHooks"]
    assert info["entry"] == entry
    assert str(raised.value).splitlines()[-1].startswith(f"[bedrock-hooks] {entry}")
    if info["retryable"]:
        assert info["stopped_because"] == "content-delivered"
        assert "already delivered" in str(raised.value)


def test_non_retryable_error_at_frame_zero_is_not_reissued(server, fake_time):
    client = hooked_client(server, fake_time)
    server.script(Reply.stream([exc_frame("validationException", "Input is too long for requested model.")]))
    with pytest.raises(EventStreamError) as raised:
        list(converse_stream(client)["stream"])
    assert raised.value.response["BedrockHooks"]["entry"] == "InputTooLong"
    assert len(server.requests) == 1


def test_reset_after_content_raises_the_transport_error_with_a_hint(server, fake_time):
    client = hooked_client(server, fake_time)
    server.script(Reply.stream(EventFrame.converse_text(["a"])[:2] + [EventFrame.reset()]))
    with pytest.raises(ProtocolError) as raised:
        list(converse_stream(client)["stream"])
    assert raised.value.bedrock_hooks["entry"] == "IdleConnectionReset"
    assert len(server.requests) == 1


def test_read_timeout_mid_stream_says_which_timeout_fired(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server, read_timeout=0.3)
    server.script(Reply.stream(EventFrame.converse_text(["a"])[:2] + [EventFrame.stall(2.0)] +
                               EventFrame.converse_text(["a"])[2:]))
    with pytest.raises(ReadTimeoutError) as raised:
        list(converse_stream(client)["stream"])
    assert "Config(read_timeout=0.3)" in str(raised.value)
    assert raised.value.bedrock_hooks["entry"] == "ReadTimeout"


# -- switches -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("switch", ["BEDROCK_HOOKS_STREAM_RETRY", "BEDROCK_HOOKS_RETRY"])
def test_stream_retry_off_does_not_reissue_but_still_hints(switch, server, fake_time, monkeypatch):
    # BEDROCK_HOOKS_RETRY=off hands retries to botocore, which never re-issues a stream: neither do we.
    monkeypatch.setenv(switch, "off")
    client = hooked_client(server, fake_time)
    server.script(Reply.stream([exc_frame()]))
    with pytest.raises(EventStreamError) as raised:
        list(converse_stream(client)["stream"])
    assert len(server.requests) == 1
    assert raised.value.response["BedrockHooks"]["stopped_because"] == "not-recoverable"


def test_stream_retry_and_hints_off_is_plain_botocore(server, fake_time, monkeypatch):
    server.script(Reply.stream([exc_frame()]))
    with pytest.raises(EventStreamError) as plain:
        list(converse_stream(make_client(new_session(), server))["stream"])
    monkeypatch.setenv("BEDROCK_HOOKS_STREAM_RETRY", "off")
    monkeypatch.setenv("BEDROCK_HOOKS_HINTS", "off")
    client = hooked_client(server, fake_time)
    server.script(Reply.stream([exc_frame()]))
    response = converse_stream(client)
    assert type(response["stream"]) is EventStream
    with pytest.raises(EventStreamError) as hooked:
        list(response["stream"])
    assert str(hooked.value) == str(plain.value)


def test_non_streaming_calls_are_unchanged_by_stream_hooks(server, fake_time):
    client = hooked_client(server, fake_time)
    response = client.invoke_model(modelId=MODEL, body=b"{}")
    assert json.loads(response["body"].read())
    assert base64  # imported for symmetry with the chunk decoder; keeps linters quiet
