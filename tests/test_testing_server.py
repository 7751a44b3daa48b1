"""Tests for bedrock_hooks.testing: a real HTTP server driven by real boto3 clients."""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import http.client
import json
import socket
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import botocore.eventstream
import botocore.exceptions
import botocore.retries.standard
import pytest
import urllib3.exceptions
from botocore.config import Config

from bedrock_hooks.testing import (
    DEFAULT_TEXT,
    BedrockServer,
    EventFrame,
    RecordedRequest,
    Reply,
    decode_frames,
    detect_operation,
    http_date,
)

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]

# botocore quirk: in ``retries`` ``max_attempts`` counts *retries* (so 1 means
# two HTTP requests); ``total_max_attempts`` counts requests.
NO_RETRY = Config(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=2, connect_timeout=2)


@pytest.fixture
def server() -> Iterator[BedrockServer]:
    with BedrockServer() as srv:
        yield srv


@pytest.fixture
def client(server: BedrockServer) -> Any:
    return server.client(config=NO_RETRY)


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep retry tests fast: standard-mode backoff would sleep up to ~1 s."""
    monkeypatch.setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda self, ctx: 0)


def converse(client: Any, model: str = MODEL) -> dict[str, Any]:
    return client.converse(modelId=model, messages=MESSAGES)


def raw_request(server: BedrockServer, method: str, path: str, body: bytes = b"") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


# --------------------------------------------------------------------------- #
# Happy path
# --------------------------------------------------------------------------- #


def test_converse_default_reply(server: BedrockServer, client: Any) -> None:
    out = converse(client)
    assert out["output"]["message"] == {"role": "assistant", "content": [{"text": DEFAULT_TEXT}]}
    assert out["stopReason"] == "end_turn"
    assert out["usage"] == {"inputTokens": 5, "outputTokens": 6, "totalTokens": 11}
    assert out["metrics"] == {"latencyMs": 12}

    (req,) = server.requests
    assert req.method == "POST"
    assert req.operation == "Converse"
    assert req.model_id == MODEL
    assert req.path == "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    assert req.json()["messages"] == MESSAGES
    assert req.headers["content-type"] == req.headers["Content-Type"] == "application/json"
    assert "authorization" in req.headers  # SigV4-signed by the real client
    assert req.connection_id == 1 and req.connection_request_index == 0
    assert req.client_port > 0
    assert req.time <= time.monotonic()


def test_ok_with_custom_body_status_and_headers(server: BedrockServer, client: Any) -> None:
    body = {
        "output": {"message": {"role": "assistant", "content": [{"text": "custom"}]}},
        "stopReason": "max_tokens",
        "usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3},
        "metrics": {"latencyMs": 1},
    }
    server.script(Reply.ok(body, headers={"x-custom": "yes", "x-amzn-RequestId": "fixed-id"}))
    out = converse(client)
    assert out["output"]["message"]["content"] == [{"text": "custom"}]
    assert out["stopReason"] == "max_tokens"
    assert out["ResponseMetadata"]["HTTPHeaders"]["x-custom"] == "yes"
    assert out["ResponseMetadata"]["RequestId"] == "fixed-id"


def test_invoke_model_default_is_anthropic_messages(server: BedrockServer, client: Any) -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0"
    resp = client.invoke_model(modelId=arn, body=json.dumps({"messages": []}))
    payload = json.loads(resp["body"].read())
    assert payload["type"] == "message"
    assert payload["content"] == [{"type": "text", "text": DEFAULT_TEXT}]
    assert payload["stop_reason"] == "end_turn"
    assert resp["contentType"] == "application/json"
    req = server.requests[-1]
    assert req.operation == "InvokeModel"
    assert req.model_id == arn  # '%3A' and '%2F' decoded
    assert "%2F" in req.path


def test_list_foundation_models_on_control_plane(server: BedrockServer) -> None:
    bedrock = server.client("bedrock", config=NO_RETRY)
    assert bedrock.list_foundation_models(byProvider="Anthropic")["modelSummaries"] == []
    req = server.requests[-1]
    assert (req.method, req.operation) == ("GET", "ListFoundationModels")
    assert req.query == {"byProvider": ["Anthropic"]}


# --------------------------------------------------------------------------- #
# Errors and headers
# --------------------------------------------------------------------------- #


def test_error_with_header_code_is_parsed_by_botocore(server: BedrockServer, client: Any) -> None:
    server.script(Reply.error(429, "ThrottlingException", "Too many requests, please wait before trying again."))
    with pytest.raises(botocore.exceptions.ClientError) as info:
        converse(client)
    err = info.value.response
    assert err["Error"]["Code"] == "ThrottlingException"
    assert err["Error"]["Message"] == "Too many requests, please wait before trying again."
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert isinstance(info.value, client.exceptions.ThrottlingException)
    headers = err["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-errortype"] == (
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
    )
    uuid.UUID(err["ResponseMetadata"]["RequestId"])


def test_error_with_body_type_only_is_parsed_by_botocore(server: BedrockServer, client: Any) -> None:
    server.script(Reply.error(400, "ValidationException", "bad input", header_code=False, body_code=True))
    with pytest.raises(client.exceptions.ValidationException) as info:
        converse(client)
    err = info.value.response
    assert err["Error"] == {"Code": "ValidationException", "Message": "bad input"}
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "x-amzn-errortype" not in err["ResponseMetadata"]["HTTPHeaders"]


def test_error_without_any_code_falls_back_to_status(server: BedrockServer, client: Any) -> None:
    server.script(Reply.error(400, "Ignored", "msg", header_code=False, message_key="Message"))
    with pytest.raises(botocore.exceptions.ClientError) as info:
        converse(client)
    assert info.value.response["Error"] == {"Code": "400", "Message": "msg"}


def test_wire_headers_are_complete_and_correct(server: BedrockServer) -> None:
    server.script(Reply.error(503, "ServiceUnavailableException", "nope", body_code=True))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
    conn.request("POST", "/model/m/converse", body=b"{}")
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 503
    assert resp.version == 11
    assert json.loads(body) == {"message": "nope", "__type": "ServiceUnavailableException"}
    assert int(resp.headers["Content-Length"]) == len(body)
    assert resp.headers["Content-Type"] == "application/json"
    uuid.UUID(resp.headers["x-amzn-RequestId"])
    sent = email.utils.parsedate_to_datetime(resp.headers["Date"]).timestamp()
    assert abs(sent - time.time()) < 5
    assert resp.headers["Date"].endswith(" GMT")


def test_date_header_can_be_forced(server: BedrockServer, client: Any) -> None:
    ahead = http_date(time.time() + 600)
    server.script(
        Reply.with_date(Reply.ok(), ahead),
        Reply.error(429, "ThrottlingException", "x", date=ahead),
        Reply.ok(headers={"Date": None}),
    )
    assert converse(client)["ResponseMetadata"]["HTTPHeaders"]["date"] == ahead
    with pytest.raises(botocore.exceptions.ClientError) as info:
        converse(client)
    assert info.value.response["ResponseMetadata"]["HTTPHeaders"]["date"] == ahead
    assert "date" not in converse(client)["ResponseMetadata"]["HTTPHeaders"]

    server.clock_skew = -3600
    skewed = converse(client)["ResponseMetadata"]["HTTPHeaders"]["date"]
    assert abs(email.utils.parsedate_to_datetime(skewed).timestamp() - (time.time() - 3600)) < 5


def test_raw_html_502_becomes_client_error(server: BedrockServer, client: Any) -> None:
    html = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    server.script(Reply.raw(502, html, {"Content-Type": "text/html"}))
    with pytest.raises(botocore.exceptions.ClientError) as info:
        converse(client)
    resp = info.value.response
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 502
    assert resp["Error"]["Code"] == "502"
    assert resp["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "text/html"
    assert "x-amzn-requestid" not in resp["ResponseMetadata"]["HTTPHeaders"]


# --------------------------------------------------------------------------- #
# Transport faults
# --------------------------------------------------------------------------- #


def test_reset_raises_connection_closed(server: BedrockServer, client: Any) -> None:
    server.script(Reply.reset())
    with pytest.raises(botocore.exceptions.ConnectionClosedError) as info:
        converse(client)
    assert isinstance(info.value.kwargs["error"].args[1], ConnectionResetError)
    assert converse(client)["stopReason"] == "end_turn"  # client recovers on a new connection
    assert [r.connection_id for r in server.requests] == [1, 2]


def test_close_raises_connection_closed(server: BedrockServer, client: Any) -> None:
    server.script(Reply.close())
    with pytest.raises(botocore.exceptions.ConnectionClosedError) as info:
        converse(client)
    assert isinstance(info.value.kwargs["error"].args[1], http.client.RemoteDisconnected)


def test_truncated_body(server: BedrockServer, client: Any) -> None:
    # On the wire: the full Content-Length is promised, 10 bytes come, the connection ends. (What botocore
    # makes of that depends on its version: 1.43.115+ no longer checks Content-Length for JSON bodies.)
    server.script(Reply.truncated(Reply.ok(), 10))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
    conn.request("POST", f"/model/{MODEL}/converse", body=b"{}")
    resp = conn.getresponse()
    promised = int(resp.headers["Content-Length"])
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    conn.close()
    assert promised > 10 and len(info.value.partial) == 10 and info.value.expected == promised - 10

    # InvokeModel's body is streamed lazily: the call succeeds, read() fails.
    server.script(Reply.truncated(Reply.ok(), 10))
    resp = client.invoke_model(modelId=MODEL, body=b"{}")
    with pytest.raises(botocore.exceptions.ResponseStreamingError):
        resp["body"].read()


def test_delay_triggers_read_timeout_and_stop_is_prompt() -> None:
    server = BedrockServer().start()
    try:
        server.script(Reply.delay(30))
        client = server.client(config=Config(retries={"total_max_attempts": 1}, read_timeout=0.3))
        with pytest.raises(botocore.exceptions.ReadTimeoutError):
            converse(client)
        assert server.open_connections == 1  # the server is still holding its 30 s delay
    finally:
        server.stop()
    # The 30 s delay was interrupted: its connection thread ended within stop()'s join deadline.
    # (How long stop() takes is a figure for bench/testing_server.py, not an assertion.)
    assert server.open_connections == 0
    assert not server.running


def test_short_delay_then_answers(server: BedrockServer, client: Any) -> None:
    server.script(Reply.delay(0.2, Reply.error(500, "InternalServerException", "boom")))
    started = time.monotonic()
    with pytest.raises(client.exceptions.InternalServerException):
        converse(client)
    assert time.monotonic() - started >= 0.2


# --------------------------------------------------------------------------- #
# Connections, retries, dynamic behaviour
# --------------------------------------------------------------------------- #


def test_persistent_connection_is_reused(server: BedrockServer, client: Any) -> None:
    converse(client)
    converse(client)
    first, second = server.requests
    assert first.connection_id == second.connection_id
    assert first.client_port == second.client_port
    assert second.connection_request_index == 1
    assert server.connections == 1
    assert server.open_connections == 1


def test_standard_retries_follow_the_script(server: BedrockServer, no_backoff: None) -> None:
    client = server.client(config=Config(retries={"mode": "standard", "max_attempts": 3}))
    server.script(
        Reply.throttling(),
        Reply.close(),
        Reply.raw(502, b"<html>bad gateway</html>", {"Content-Type": "text/html"}),
        Reply.ok(),
    )
    out = converse(client)
    assert out["ResponseMetadata"]["RetryAttempts"] == 3
    assert server.pending == 0
    ids = [r.connection_id for r in server.requests]
    assert ids[0] == ids[1] and ids[2] != ids[1] and ids[2] == ids[3]


def test_handler_implements_a_quota(server: BedrockServer, client: Any) -> None:
    allowed = {"tokens": 2}

    def quota(request: RecordedRequest) -> Reply | None:
        if request.operation != "Converse":
            return None
        if allowed["tokens"] == 0:
            return Reply.throttling()
        allowed["tokens"] -= 1
        return None  # fall through to script/default

    server.handler = quota
    server.script(Reply.ok({"stopReason": "scripted"}))
    assert converse(client)["stopReason"] == "scripted"
    assert converse(client)["stopReason"] == "end_turn"
    with pytest.raises(client.exceptions.ThrottlingException):
        converse(client)


def test_handler_exception_becomes_500_and_is_recorded(server: BedrockServer, client: Any) -> None:
    def broken(request: RecordedRequest) -> Reply:
        raise RuntimeError("oops")

    server.handler = broken
    with pytest.raises(client.exceptions.InternalServerException):
        converse(client)
    assert [type(e) for e in server.errors] == [RuntimeError]


def test_reset_clears_state(server: BedrockServer, client: Any) -> None:
    server.script(Reply.throttling(), Reply.throttling())
    server.default = Reply.validation()
    server.handler = lambda r: None
    server.clock_skew = 100
    with pytest.raises(client.exceptions.ThrottlingException):
        converse(client)
    server.reset()
    assert server.requests == [] and server.pending == 0 and server.handler is None
    assert server.default == Reply.ok() and server.clock_skew == 0
    assert converse(client)["stopReason"] == "end_turn"
    assert server.connections == 1  # transport facts survive reset()


def test_concurrent_clients_use_separate_connections(server: BedrockServer) -> None:
    server.default = Reply.delay(30)  # held until stop(): nothing is answered while we look
    client = server.client(config=Config(retries={"total_max_attempts": 1}, read_timeout=20))
    errors: list[BaseException] = []

    def call() -> None:
        try:
            converse(client)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    # Served in parallel: all four requests arrive while every one of them is still held.
    requests = server.wait_for_requests(4, timeout=10)
    assert len({r.connection_id for r in requests}) == 4
    assert server.open_connections == 4
    server.stop()  # releases the held connections
    for t in threads:
        t.join(10)
    assert len(errors) == 4 and all(isinstance(e, botocore.exceptions.ConnectionClosedError) for e in errors)


# --------------------------------------------------------------------------- #
# Event streams through boto3
# --------------------------------------------------------------------------- #


def test_converse_stream_events_in_order(server: BedrockServer, client: Any) -> None:
    server.script(Reply.stream(EventFrame.converse_text(["Hel", "lo", "!"]), delay_between=0.01))
    resp = client.converse_stream(modelId=MODEL, messages=MESSAGES)
    events = list(resp["stream"])
    assert [next(iter(e)) for e in events] == [
        "messageStart",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    assert "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e) == "Hello!"
    assert events[-1]["metadata"]["usage"]["totalTokens"] == 8
    assert server.requests[-1].operation == "ConverseStream"
    # chunked framing keeps the connection reusable
    converse(client)
    assert server.connections == 1


def test_converse_stream_default_reply(server: BedrockServer, client: Any) -> None:
    resp = client.converse_stream(modelId=MODEL, messages=MESSAGES)
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in resp["stream"] if "contentBlockDelta" in e)
    assert text == DEFAULT_TEXT


def test_stream_without_chunked_encoding(server: BedrockServer, client: Any) -> None:
    server.script(Reply.stream(EventFrame.converse_text(["a", "b"]), chunked=False))
    events = list(client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"])
    assert len(events) == 6
    converse(client)
    assert server.connections == 2  # server closed after the unframed stream


def test_exception_frame_mid_stream(server: BedrockServer, client: Any) -> None:
    frames = EventFrame.converse_text(["partial"])[:2] + [
        EventFrame.exception("throttlingException", "Too many tokens, please wait before trying again.")
    ]
    server.script(Reply.stream(frames))
    seen = []
    with pytest.raises(botocore.exceptions.EventStreamError) as info:
        for event in client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"]:
            seen.append(event)
    assert len(seen) == 2
    assert info.value.response["Error"]["Code"] == "throttlingException"
    assert info.value.response["Error"]["Message"] == "Too many tokens, please wait before trying again."


def test_error_frame_mid_stream(server: BedrockServer, client: Any) -> None:
    server.script(Reply.stream([EventFrame.error("InternalFailure", "kaput")]))
    with pytest.raises(botocore.exceptions.EventStreamError) as info:
        list(client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"])
    assert info.value.response["Error"] == {"Code": "InternalFailure", "Message": "kaput"}


def test_error_before_stream_starts(server: BedrockServer, client: Any) -> None:
    server.script(Reply.throttling())
    with pytest.raises(client.exceptions.ThrottlingException):
        client.converse_stream(modelId=MODEL, messages=MESSAGES)


def test_reset_mid_stream(server: BedrockServer, client: Any) -> None:
    server.script(Reply.stream(EventFrame.converse_text(["a"])[:2] + [EventFrame.reset()]))
    seen = []
    # botocore does not wrap transport errors raised while iterating a stream:
    # the raw urllib3 ProtocolError surfaces.
    stream = client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"]
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for event in stream:
            seen.append(event)
    stream.close()
    assert len(seen) == 2


def test_stall_mid_stream_times_out(server: BedrockServer) -> None:
    client = server.client(config=Config(retries={"total_max_attempts": 1}, read_timeout=0.3))
    server.script(Reply.stream(EventFrame.converse_text(["a"])[:1] + [EventFrame.stall(30)]))
    stream = client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"]
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        list(stream)
    stream.close()


def test_corrupt_frame_is_rejected_by_botocore(server: BedrockServer, client: Any) -> None:
    good = EventFrame.event("messageStart", {"role": "assistant"}).encode()
    bad = good[:-1] + bytes([good[-1] ^ 0xFF])
    server.script(Reply.stream([EventFrame.raw(bad)]))
    with pytest.raises(botocore.eventstream.ChecksumMismatch):
        list(client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"])


def test_invoke_model_with_response_stream_chunks(server: BedrockServer, client: Any) -> None:
    payloads = [{"type": "content_block_delta", "delta": {"text": t}} for t in ("x", "y")]
    server.script(Reply.stream(EventFrame.invoke_chunks(payloads)))
    resp = client.invoke_model_with_response_stream(modelId=MODEL, body=b"{}")
    assert [json.loads(e["chunk"]["bytes"]) for e in resp["body"]] == payloads
    assert server.requests[-1].operation == "InvokeModelWithResponseStream"

    # default reply: a full Anthropic Messages stream
    resp = client.invoke_model_with_response_stream(modelId=MODEL, body=b"{}")
    types = [json.loads(e["chunk"]["bytes"])["type"] for e in resp["body"]]
    assert types[0] == "message_start" and types[-1] == "message_stop"


# --------------------------------------------------------------------------- #
# Encoder / decoder
# --------------------------------------------------------------------------- #


def test_encoder_round_trip_and_layout() -> None:
    frame = EventFrame.event("contentBlockDelta", {"delta": {"text": "hi"}, "contentBlockIndex": 0})
    data = frame.encode()
    total, headers_len, prelude_crc = struct.unpack(">III", data[:12])
    assert total == len(data)
    assert prelude_crc == zlib.crc32(data[:8])
    assert struct.unpack(">I", data[-4:])[0] == zlib.crc32(data[:-4])
    assert data[12 : 12 + 1 + len(":event-type")] == bytes([11]) + b":event-type"

    (decoded,) = decode_frames(data)
    assert decoded["headers"] == {
        ":event-type": "contentBlockDelta",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(decoded["payload"]) == {"delta": {"text": "hi"}, "contentBlockIndex": 0}
    assert 12 + headers_len + len(decoded["payload"]) + 4 == total


def test_decoder_validates_crcs_and_lengths() -> None:
    data = EventFrame.exception("throttlingException", "slow").encode()
    for index in (5, len(data) - 10):  # inside prelude, inside payload
        corrupt = bytearray(data)
        corrupt[index] ^= 0x01
        with pytest.raises(ValueError):
            decode_frames(bytes(corrupt))
    with pytest.raises(ValueError):
        decode_frames(data[:-1])
    frames = decode_frames(b"".join(f.encode() for f in EventFrame.converse_text(["a", "b"])))
    assert [f["headers"][":event-type"] for f in frames] == [
        "messageStart",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]


def test_exception_and_chunk_frames() -> None:
    (exc,) = decode_frames(EventFrame.exception("modelStreamErrorException", "bad").encode())
    assert exc["headers"][":message-type"] == "exception"
    assert exc["headers"][":exception-type"] == "modelStreamErrorException"
    assert json.loads(exc["payload"]) == {"message": "bad"}

    (chunk,) = decode_frames(EventFrame.invoke_chunks([{"a": 1}])[0].encode())
    assert chunk["headers"][":event-type"] == "chunk"
    assert json.loads(base64.b64decode(json.loads(chunk["payload"])["bytes"])) == {"a": 1}


def test_custom_header_types_round_trip() -> None:
    headers: dict[str, str | bytes | bool | int] = {"s": "text", "b": b"\x00\x01", "t": True, "f": False, "i": -7, "l": 2**40}
    (decoded,) = decode_frames(EventFrame.message(headers, b"payload").encode())
    assert decoded["headers"] == headers
    assert decoded["payload"] == b"payload"
    assert EventFrame.stall(1).encode() == b"" and EventFrame.reset().encode() == b""


# --------------------------------------------------------------------------- #
# API shape, lifecycle, misc protocol handling
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("method", "path", "operation", "model_id"),
    [
        ("POST", "/model/m/converse", "Converse", "m"),
        ("POST", "/model/m/converse-stream", "ConverseStream", "m"),
        ("POST", "/model/a.b-v1%3A0/invoke", "InvokeModel", "a.b-v1:0"),
        ("POST", "/model/m/invoke-with-response-stream", "InvokeModelWithResponseStream", "m"),
        ("POST", "/model/m/count-tokens", "CountTokens", "m"),
        ("POST", "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fp/converse", "Converse",
         "arn:aws:bedrock:us-east-1:1:inference-profile/p"),
        ("GET", "/foundation-models?byProvider=x", "ListFoundationModels", None),
        ("POST", "/guardrail/g1/version/1/apply", "ApplyGuardrail", None),
        ("GET", "/nope", "Unknown:GET /nope", None),
        ("GET", "/model/m/converse", "Unknown:GET /model/m/converse", None),
    ],
)
def test_detect_operation(method: str, path: str, operation: str, model_id: str | None) -> None:
    assert detect_operation(method, path) == (operation, model_id)


def test_unknown_path_gets_empty_json(server: BedrockServer) -> None:
    resp = raw_request(server, "POST", "/something/else", b"{}")
    assert resp.status == 200
    assert server.requests[-1].operation == "Unknown:POST /something/else"


def test_replies_are_immutable_and_validated() -> None:
    reply = Reply.ok()
    with pytest.raises(dataclasses.FrozenInstanceError):
        reply.status = 500  # type: ignore[misc]
    with pytest.raises(ValueError):
        Reply.truncated(Reply.reset(), 1)
    with pytest.raises(ValueError):
        Reply.delay(-1)
    with pytest.raises(TypeError):
        Reply.stream(["not a frame"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        BedrockServer().script("nope")  # type: ignore[arg-type]
    assert Reply.with_date(Reply.delay(1), "X").then.date == "X"  # type: ignore[union-attr]


def test_start_stop_lifecycle() -> None:
    server = BedrockServer()
    with pytest.raises(RuntimeError):
        server.url
    assert server.start() is server
    assert server.url.startswith("http://127.0.0.1:") and server.running
    with pytest.raises(RuntimeError):
        server.start()
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=2)
    try:
        server.stop()
        server.stop()  # idempotent
        assert server.open_connections == 0  # the idle connection's thread ended within stop()
        try:  # open connections were shut down (FIN, or RST if never accepted)
            assert idle.recv(1) == b""
        except ConnectionResetError:
            pass
    finally:
        idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1)


def test_expect_100_continue(server: BedrockServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(
            b"POST /model/m/converse HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"{}")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
    assert server.requests[-1].body == b"{}"


def test_chunked_request_body(server: BedrockServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
    conn.request("POST", "/model/m/invoke", body=iter([b'{"a"', b":1}"]), encode_chunked=True)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 200
    assert server.requests[-1].json() == {"a": 1}


def test_wait_for_requests_times_out(server: BedrockServer) -> None:
    with pytest.raises(TimeoutError):
        server.wait_for_requests(1, timeout=0.05)


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = BedrockServer(host="::1").start()
    except OSError:
        pytest.skip("IPv6 loopback unavailable")
    try:
        assert server.url.startswith("http://[::1]:")
        assert converse(server.client(config=NO_RETRY))["stopReason"] == "end_turn"
    finally:
        server.stop()


def test_bench_testing_server_smoke() -> None:
    """The timing figures these tests no longer assert are produced by bench/testing_server.py."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "testing_server.py"
    spec = importlib.util.spec_from_file_location("bench_testing_server", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.run(smoke=True)
    assert set(results) == set(bench.MEASURES)
    assert all(r["median_ms"] >= 0 and r["runs"] == 2 for r in results.values())
    assert bench.table(results).count("\n") == 1 + len(results)
