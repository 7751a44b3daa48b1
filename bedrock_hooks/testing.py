"""A real, loopback HTTP/1.1 server that speaks Amazon Bedrock's wire format.

Why this exists
---------------
Mocking ``botocore`` at the Python level (``Stubber``, ``moto``, patched
``_make_api_call``) skips exactly the layers where production failures happen:
connection pooling, keep-alive reuse, retries, read timeouts, response parsing
of odd bodies, event-stream framing and CRCs.  :class:`BedrockServer` instead
listens on a real TCP socket and answers the *actual* bytes Bedrock would send,
so a completely unmodified boto3 client exercises its whole stack::

    from bedrock_hooks.testing import BedrockServer, Reply

    with BedrockServer() as server:
        server.script(Reply.throttling(), Reply.ok())
        client = server.client()            # real boto3 client, dummy creds
        client.converse(modelId="m", messages=[...])   # retried once, succeeds
        assert [r.operation for r in server.requests] == ["Converse"] * 2

Replies are chosen per request in this order: ``server.handler`` (if set and it
returns a reply), then the FIFO queue filled by :meth:`BedrockServer.script`,
then ``server.default``.  Besides well-formed answers, replies can inject
transport faults (stall, TCP reset, clean close, truncated body) and streams can
contain mid-stream faults, because those are the cases a resilience layer must
be tested against.

Only the standard library is used; :meth:`BedrockServer.client` imports boto3
lazily as a convenience.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime as _dt
import email.utils
import hmac
import http
import http.server
import itertools
import json
import re
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Optional, Union
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "BedrockServer",
    "Reply",
    "EventFrame",
    "RecordedRequest",
    "Headers",
    "Handler",
    "decode_frames",
    "encode_frame",
    "detect_operation",
    "STREAMING_OPERATIONS",
    "http_date",
    "DEFAULT_TEXT",
]

#: The assistant text used by every generated default response.
DEFAULT_TEXT = "Hello from the test server"

_ERROR_TYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
_EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
_JSON = "application/json"

# Limits enforced by botocore's event-stream decoder; encoding anything larger
# would only produce a confusing client-side error far away from the test.
_MAX_FRAME_PAYLOAD = 16 * 1024 * 1024
_MAX_FRAME_HEADERS = 128 * 1024

DateLike = Union[str, _dt.datetime, float, int]
HeaderValue = Union[str, bytes, bool, int]


def http_date(when: DateLike | None = None) -> str:
    """Format ``when`` as an RFC 7231 ``Date`` header value (IMF-fixdate, GMT).

    Accepts an epoch timestamp, a ``datetime`` (naive values are taken as UTC)
    or an already formatted string (returned unchanged), so clock-skew tests can
    write ``http_date(time.time() + 600)`` without remembering the format.
    """
    if when is None:
        return email.utils.formatdate(time.time(), usegmt=True)
    if isinstance(when, str):
        return when
    if isinstance(when, _dt.datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=_dt.timezone.utc)
        return email.utils.format_datetime(when.astimezone(_dt.timezone.utc), usegmt=True)
    return email.utils.formatdate(float(when), usegmt=True)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


# --------------------------------------------------------------------------- #
# Case-insensitive headers
# --------------------------------------------------------------------------- #


class Headers(Mapping[str, str]):
    """Immutable, case-insensitive view of HTTP headers.

    HTTP header names are case-insensitive and botocore's casing differs from
    what people type in assertions (``X-Amz-Target`` vs ``x-amz-target``), so
    lookups ignore case while iteration keeps the casing seen on the wire.
    Repeated headers are joined with ``", "`` as RFC 9110 allows.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        merged: dict[str, tuple[str, str]] = {}
        for name, value in pairs:
            key = name.lower()
            if key in merged:
                merged[key] = (merged[key][0], f"{merged[key][1]}, {value}")
            else:
                merged[key] = (name, value)
        self._items = merged

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self)!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return {k.lower(): v for k, v in self.items()} == {
                str(k).lower(): v for k, v in other.items()
            }
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------- #
# Operation detection
# --------------------------------------------------------------------------- #

_MODEL_SUFFIXES = {
    "converse": "Converse",
    "converse-stream": "ConverseStream",
    "invoke": "InvokeModel",
    "invoke-with-response-stream": "InvokeModelWithResponseStream",
    "invoke-with-bidirectional-stream": "InvokeModelWithBidirectionalStream",
    "count-tokens": "CountTokens",
}

#: Operations whose successful response is an event stream.
STREAMING_OPERATIONS = frozenset({"ConverseStream", "InvokeModelWithResponseStream"})


def detect_operation(method: str, path: str) -> tuple[str, Optional[str]]:
    """Map an HTTP method and request-target to ``(operation, model_id)``.

    Bedrock is rest-json, so the operation is only recoverable from the URL.
    The path is split *before* percent-decoding because botocore encodes the
    ``/`` inside inference-profile ARNs as ``%2F``; the model id is then
    decoded (``%3A`` -> ``:``).  Unrecognised requests map to
    ``"Unknown:<METHOD> <path>"`` rather than raising, so a test can assert on
    them instead of the server failing.
    """
    method = method.upper()
    raw_path = urlsplit(path).path or "/"
    parts = raw_path.split("/")[1:]
    if parts and parts[-1] == "":
        parts = parts[:-1]

    if len(parts) == 3 and parts[0] == "model" and method == "POST":
        op = _MODEL_SUFFIXES.get(parts[2])
        if op is not None:
            return op, unquote(parts[1])
    if parts == ["foundation-models"] and method == "GET":
        return "ListFoundationModels", None
    if len(parts) == 2 and parts[0] == "foundation-models" and method == "GET":
        return "GetFoundationModel", unquote(parts[1])
    if len(parts) == 5 and parts[0] == "guardrail" and parts[2] == "version" and parts[4] == "apply":
        if method == "POST":
            return "ApplyGuardrail", None
    if parts == ["async-invoke"]:
        if method == "POST":
            return "StartAsyncInvoke", None
        if method == "GET":
            return "ListAsyncInvokes", None
    if len(parts) == 2 and parts[0] == "async-invoke" and method == "GET":
        return "GetAsyncInvoke", None
    return f"Unknown:{method} {raw_path}", None


# --------------------------------------------------------------------------- #
# Recorded requests
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the server received it.

    Everything a resilience test typically asserts on is captured: which
    operation and model were called, on which TCP connection (to prove
    keep-alive reuse or reconnects), and when (``time.monotonic()``, to check
    back-off spacing).
    """

    method: str
    path: str
    headers: Headers
    body: bytes
    operation: str
    model_id: Optional[str]
    connection_id: int
    client_port: int
    time: float
    #: 0 for the first request on a TCP connection, 1 for the second, ...
    connection_request_index: int = 0

    @property
    def query(self) -> dict[str, list[str]]:
        """Query-string parameters (values are lists, as in ``parse_qs``)."""
        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)

    def json(self) -> Any:
        """Decode the body as JSON (raises ``ValueError`` if it is not JSON)."""
        return json.loads(self.body.decode("utf-8"))


# --------------------------------------------------------------------------- #
# Event-stream frames
# --------------------------------------------------------------------------- #


def _encode_header_value(value: HeaderValue) -> bytes:
    # bool must be tested before int (bool is an int subclass).
    if isinstance(value, bool):
        return bytes([0 if value else 1])
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return b"\x04" + struct.pack(">i", value)
        return b"\x05" + struct.pack(">q", value)
    if isinstance(value, str):
        raw = value.encode("utf-8")
        type_byte = 7
    elif isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        type_byte = 6
    else:  # pragma: no cover - guarded by typing
        raise TypeError(f"unsupported event-stream header value: {value!r}")
    if len(raw) > 0xFFFF:
        raise ValueError("event-stream header value longer than 65535 bytes")
    return bytes([type_byte]) + struct.pack(">H", len(raw)) + raw


def encode_frame(headers: Sequence[tuple[str, HeaderValue]], payload: bytes) -> bytes:
    """Encode one AWS event-stream message (prelude, headers, payload, CRCs)."""
    encoded_headers = bytearray()
    for name, value in headers:
        raw_name = name.encode("utf-8")
        if not 0 < len(raw_name) <= 255:
            raise ValueError(f"event-stream header name must be 1..255 bytes: {name!r}")
        encoded_headers += bytes([len(raw_name)]) + raw_name + _encode_header_value(value)
    if len(encoded_headers) > _MAX_FRAME_HEADERS:
        raise ValueError("event-stream headers exceed 128 KiB")
    if len(payload) > _MAX_FRAME_PAYLOAD:
        raise ValueError("event-stream payload exceeds 16 MiB")
    total = 12 + len(encoded_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded_headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + bytes(encoded_headers) + payload
    return message + struct.pack(">I", zlib.crc32(message))


@dataclasses.dataclass(frozen=True)
class EventFrame:
    """One item of an event stream: an encoded message or a transport fault.

    ``action`` is ``"frame"`` (a normal message built from ``headers`` and
    ``payload``), ``"raw"`` (``payload`` written verbatim, e.g. a frame with a
    corrupted CRC), ``"stall"`` (pause ``seconds`` mid-stream) or ``"reset"``
    (abort the TCP connection with RST).  Build instances with the class
    methods rather than the constructor.
    """

    headers: tuple[tuple[str, HeaderValue], ...] = ()
    payload: bytes = b""
    action: str = "frame"
    seconds: float = 0.0

    # -- constructors ------------------------------------------------------ #

    @classmethod
    def message(
        cls, headers: Mapping[str, HeaderValue] | Sequence[tuple[str, HeaderValue]], payload: bytes | Mapping[str, Any] = b""
    ) -> EventFrame:
        """A frame with arbitrary headers (in order) and payload (dict -> JSON)."""
        items = tuple(headers.items()) if isinstance(headers, Mapping) else tuple(headers)
        body = payload if isinstance(payload, (bytes, bytearray)) else _json_bytes(payload)
        frame = cls(headers=items, payload=bytes(body))
        frame.encode()  # validate eagerly so errors point at the test, not the server thread
        return frame

    @classmethod
    def event(cls, event_type: str, payload: Mapping[str, Any] | bytes) -> EventFrame:
        """A normal ``:message-type: event`` frame, as Bedrock sends for data."""
        return cls.message(
            [(":event-type", event_type), (":content-type", _JSON), (":message-type", "event")],
            payload,
        )

    @classmethod
    def exception(cls, exception_type: str, message: str) -> EventFrame:
        """A modelled in-stream exception (botocore raises ``EventStreamError``).

        ``exception_type`` is the union member name, e.g. ``throttlingException``,
        ``modelStreamErrorException``, ``validationException``,
        ``serviceUnavailableException`` or ``internalServerException``.
        """
        return cls.message(
            [(":exception-type", exception_type), (":content-type", _JSON), (":message-type", "exception")],
            {"message": message},
        )

    @classmethod
    def error(cls, code: str, message: str) -> EventFrame:
        """A generic ``:message-type: error`` frame (``:error-code``/``:error-message``)."""
        return cls.message(
            [(":error-code", code), (":error-message", message), (":message-type", "error")], b""
        )

    @classmethod
    def raw(cls, data: bytes) -> EventFrame:
        """Bytes written verbatim into the stream (corrupt CRCs, partial frames)."""
        return cls(payload=bytes(data), action="raw")

    @classmethod
    def stall(cls, seconds: float) -> EventFrame:
        """Pause the stream (to trigger client read timeouts mid-stream)."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return cls(action="stall", seconds=float(seconds))

    @classmethod
    def reset(cls) -> EventFrame:
        """Abort the connection with a TCP RST at this point of the stream."""
        return cls(action="reset")

    # -- realistic sequences ---------------------------------------------- #

    @classmethod
    def converse_text(
        cls,
        texts: Sequence[str],
        *,
        stop_reason: str = "end_turn",
        input_tokens: int = 5,
        output_tokens: int | None = None,
        latency_ms: int = 1,
    ) -> list[EventFrame]:
        """A complete ConverseStream answer that streams ``texts`` as deltas."""
        out_tokens = max(1, len(texts)) if output_tokens is None else output_tokens
        frames = [cls.event("messageStart", {"role": "assistant"})]
        frames += [
            cls.event("contentBlockDelta", {"delta": {"text": text}, "contentBlockIndex": 0})
            for text in texts
        ]
        frames += [
            cls.event("contentBlockStop", {"contentBlockIndex": 0}),
            cls.event("messageStop", {"stopReason": stop_reason}),
            cls.event(
                "metadata",
                {
                    "usage": {
                        "inputTokens": input_tokens,
                        "outputTokens": out_tokens,
                        "totalTokens": input_tokens + out_tokens,
                    },
                    "metrics": {"latencyMs": latency_ms},
                },
            ),
        ]
        return frames

    @classmethod
    def invoke_chunks(cls, payloads: Sequence[Mapping[str, Any] | bytes]) -> list[EventFrame]:
        """InvokeModelWithResponseStream ``chunk`` events (payload base64-wrapped).

        Each payload (dict -> JSON) becomes ``{"bytes": base64(payload)}``; boto3
        hands the decoded bytes back as ``event["chunk"]["bytes"]``.
        """
        frames = []
        for item in payloads:
            raw = item if isinstance(item, (bytes, bytearray)) else _json_bytes(item)
            frames.append(cls.event("chunk", {"bytes": base64.b64encode(raw).decode("ascii")}))
        return frames

    @classmethod
    def anthropic_text(
        cls,
        texts: Sequence[str],
        *,
        model: str = "claude-3-haiku-20240307",
        input_tokens: int = 5,
        stop_reason: str = "end_turn",
    ) -> list[EventFrame]:
        """A realistic Anthropic Messages stream for InvokeModelWithResponseStream."""
        out_tokens = max(1, len(texts))
        chunks: list[Mapping[str, Any]] = [
            {
                "type": "message_start",
                "message": {
                    "id": "msg_bdrk_" + uuid.uuid4().hex[:24],
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": 1},
                },
            },
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ]
        chunks += [
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
            for t in texts
        ]
        chunks += [
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": out_tokens},
            },
            {
                "type": "message_stop",
                "amazon-bedrock-invocationMetrics": {
                    "inputTokenCount": input_tokens,
                    "outputTokenCount": out_tokens,
                    "invocationLatency": 12,
                    "firstByteLatency": 5,
                },
            },
        ]
        return cls.invoke_chunks(chunks)

    # -- encoding ---------------------------------------------------------- #

    def encode(self) -> bytes:
        """The bytes this item puts on the wire (empty for stall/reset)."""
        if self.action == "frame":
            return encode_frame(self.headers, self.payload)
        if self.action == "raw":
            return self.payload
        return b""


def decode_frames(data: bytes) -> list[dict[str, Any]]:
    """Decode concatenated event-stream messages, verifying both CRCs.

    Returns ``[{"headers": {...}, "payload": bytes}, ...]``.  Raises
    ``ValueError`` on a CRC mismatch, inconsistent lengths or trailing partial
    data, so tests can prove the encoder emits what a strict client accepts.
    """
    frames: list[dict[str, Any]] = []
    view = memoryview(bytes(data))
    offset = 0
    while offset < len(view):
        if len(view) - offset < 16:
            raise ValueError(f"truncated event-stream prelude at offset {offset}")
        total, headers_len = struct.unpack_from(">II", view, offset)
        (prelude_crc,) = struct.unpack_from(">I", view, offset + 8)
        if zlib.crc32(view[offset : offset + 8]) != prelude_crc:
            raise ValueError(f"prelude CRC mismatch at offset {offset}")
        if total < 16 or headers_len > total - 16 or offset + total > len(view):
            raise ValueError(f"invalid or truncated frame lengths at offset {offset}")
        (message_crc,) = struct.unpack_from(">I", view, offset + total - 4)
        if zlib.crc32(view[offset : offset + total - 4]) != message_crc:
            raise ValueError(f"message CRC mismatch at offset {offset}")
        headers = _decode_headers(bytes(view[offset + 12 : offset + 12 + headers_len]))
        payload = bytes(view[offset + 12 + headers_len : offset + total - 4])
        frames.append({"headers": headers, "payload": payload})
        offset += total
    return frames


def _decode_headers(raw: bytes) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    pos = 0
    while pos < len(raw):
        name_len = raw[pos]
        name = raw[pos + 1 : pos + 1 + name_len].decode("utf-8")
        pos += 1 + name_len
        type_byte = raw[pos]
        pos += 1
        value: Any
        if type_byte in (0, 1):
            value = type_byte == 0
        elif type_byte == 2:
            (value,) = struct.unpack_from(">b", raw, pos)
            pos += 1
        elif type_byte == 3:
            (value,) = struct.unpack_from(">h", raw, pos)
            pos += 2
        elif type_byte == 4:
            (value,) = struct.unpack_from(">i", raw, pos)
            pos += 4
        elif type_byte in (5, 8):
            (value,) = struct.unpack_from(">q", raw, pos)
            pos += 8
        elif type_byte in (6, 7):
            (length,) = struct.unpack_from(">H", raw, pos)
            pos += 2
            value = raw[pos : pos + length]
            if type_byte == 7:
                value = value.decode("utf-8")
            pos += length
        elif type_byte == 9:
            value = uuid.UUID(bytes=raw[pos : pos + 16])
            pos += 16
        else:
            raise ValueError(f"unknown event-stream header type {type_byte}")
        headers[name] = value
    return headers


# --------------------------------------------------------------------------- #
# Replies
# --------------------------------------------------------------------------- #

def _freeze_headers(headers: Mapping[str, Optional[str]] | None) -> tuple[tuple[str, Optional[str]], ...]:
    return tuple((str(k), None if v is None else str(v)) for k, v in (headers or {}).items())


@dataclasses.dataclass(frozen=True)
class Reply:
    """What the server does with one request.  Immutable; reuse freely.

    Create replies through the class methods.  On every HTTP answer the server
    sends ``Date`` (server clock plus ``BedrockServer.clock_skew`` unless forced
    with ``date=``/:meth:`with_date`), ``Content-Length`` (or chunked framing
    for streams) and, except for :meth:`raw`, ``Content-Type`` and a fresh
    ``x-amzn-RequestId``.  ``headers`` override those case-insensitively; a
    value of ``None`` removes a header entirely.
    """

    kind: str
    status: int = 200
    #: Serialized body; ``None`` on an ``ok`` reply means "generate per operation".
    body: Optional[bytes] = None
    headers: tuple[tuple[str, Optional[str]], ...] = ()
    date: Optional[str] = None
    seconds: float = 0.0
    then: Optional[Reply] = None
    keep_bytes: int = 0
    frames: tuple[EventFrame, ...] = ()
    delay_between: float = 0.0
    chunked: bool = True

    # -- well-formed answers ---------------------------------------------- #

    @classmethod
    def ok(
        cls,
        body: Mapping[str, Any] | list[Any] | None = None,
        status: int = 200,
        headers: Mapping[str, Optional[str]] | None = None,
        *,
        date: DateLike | None = None,
    ) -> Reply:
        """A successful JSON answer.

        With ``body=None`` a realistic body is generated for the operation that
        was called (Converse, InvokeModel in Anthropic format,
        ListFoundationModels, ...), and for ConverseStream /
        InvokeModelWithResponseStream a complete event stream is sent, so the
        default server behaviour works for every call an app makes.
        """
        return cls(
            kind="ok",
            status=status,
            body=None if body is None else _json_bytes(body),
            headers=_freeze_headers(headers),
            date=None if date is None else http_date(date),
        )

    @classmethod
    def error(
        cls,
        status: int,
        code: str,
        message: str,
        *,
        header_code: bool = True,
        body_code: bool = False,
        headers: Mapping[str, Optional[str]] | None = None,
        message_key: str = "message",
        date: DateLike | None = None,
    ) -> Reply:
        """A service error exactly as Bedrock encodes it.

        Bedrock puts the code in ``x-amzn-ErrorType`` (``header_code``) and only
        the message in the body; ``body_code`` adds ``"__type"`` to the body as
        other AWS JSON services do, so both botocore code paths can be tested.
        """
        payload: dict[str, Any] = {message_key: message}
        if body_code:
            payload["__type"] = code
        extra: dict[str, Optional[str]] = {}
        if header_code:
            extra["x-amzn-ErrorType"] = code + _ERROR_TYPE_SUFFIX
        extra.update(headers or {})
        return cls(
            kind="error",
            status=status,
            body=_json_bytes(payload),
            headers=_freeze_headers(extra),
            date=None if date is None else http_date(date),
        )

    @classmethod
    def raw(
        cls,
        status: int,
        body: bytes | str,
        headers: Mapping[str, Optional[str]] | None = None,
        *,
        date: DateLike | None = None,
    ) -> Reply:
        """An arbitrary body, e.g. an HTML 502 page from a load balancer.

        Only ``Date`` and ``Content-Length`` are added (no request id, no
        content type) because the point is to imitate something that is *not*
        Bedrock answering.
        """
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        return cls(
            kind="raw",
            status=status,
            body=data,
            headers=_freeze_headers(headers),
            date=None if date is None else http_date(date),
        )

    @classmethod
    def stream(
        cls,
        frames: Iterable[EventFrame],
        *,
        delay_between: float = 0.0,
        status: int = 200,
        headers: Mapping[str, Optional[str]] | None = None,
        date: DateLike | None = None,
        chunked: bool = True,
    ) -> Reply:
        """An ``application/vnd.amazon.eventstream`` answer sent frame by frame.

        Each frame is flushed as its own HTTP chunk, with ``delay_between``
        seconds before every item after the first, so clients observe genuine
        incremental delivery.  ``chunked=False`` omits framing and closes the
        connection at the end instead (HTTP/1.0 style); both are accepted by
        botocore, chunked keeps the connection reusable.
        """
        items = tuple(frames)
        for item in items:
            if not isinstance(item, EventFrame):
                raise TypeError(f"stream items must be EventFrame, got {type(item).__name__}")
        return cls(
            kind="stream",
            status=status,
            frames=items,
            delay_between=float(delay_between),
            headers=_freeze_headers(headers),
            date=None if date is None else http_date(date),
            chunked=chunked,
        )

    # -- faults ------------------------------------------------------------ #

    @classmethod
    def delay(cls, seconds: float, then: Reply | None = None) -> Reply:
        """Stall ``seconds`` before acting on ``then`` (default :meth:`ok`).

        The wait is interrupted when the server stops, so stalls never hold up
        teardown.
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return cls(kind="delay", seconds=float(seconds), then=then if then is not None else cls.ok())

    @classmethod
    def reset(cls) -> Reply:
        """Abort the TCP connection with RST (SO_LINGER 0) without answering."""
        return cls(kind="reset")

    @classmethod
    def close(cls) -> Reply:
        """Close the connection cleanly (FIN) without answering."""
        return cls(kind="close")

    @classmethod
    def truncated(cls, reply: Reply, keep_bytes: int) -> Reply:
        """Send ``reply``'s full headers (true Content-Length) but only
        ``keep_bytes`` of its body, then close: a server dying mid-response."""
        if reply.kind not in ("ok", "error", "raw"):
            raise ValueError("truncated() needs an ok/error/raw reply; use EventFrame.reset() for streams")
        if keep_bytes < 0:
            raise ValueError("keep_bytes must be >= 0")
        return cls(kind="truncated", then=reply, keep_bytes=int(keep_bytes))

    @classmethod
    def with_date(cls, reply: Reply, date: DateLike) -> Reply:
        """Copy of ``reply`` whose ``Date`` header is forced (clock-skew tests)."""
        forced = http_date(date)
        inner = cls.with_date(reply.then, forced) if reply.then is not None else None
        return dataclasses.replace(reply, date=forced, then=inner)

    # -- common Bedrock errors (real status codes and messages) ------------ #

    @classmethod
    def throttling(cls, message: str = "Too many requests, please wait before trying again.") -> Reply:
        """429 ThrottlingException (retryable by botocore)."""
        return cls.error(429, "ThrottlingException", message)

    @classmethod
    def service_unavailable(cls, message: str = "Bedrock is unable to process your request.") -> Reply:
        """503 ServiceUnavailableException (retryable by botocore)."""
        return cls.error(503, "ServiceUnavailableException", message)

    @classmethod
    def internal_server(
        cls,
        message: str = "The system encountered an unexpected error during processing. Try your request again.",
    ) -> Reply:
        """500 InternalServerException (retryable by botocore)."""
        return cls.error(500, "InternalServerException", message)

    @classmethod
    def model_timeout(
        cls, message: str = "Model has timed out in processing the request. Try your request again."
    ) -> Reply:
        """408 ModelTimeoutException."""
        return cls.error(408, "ModelTimeoutException", message)

    @classmethod
    def validation(cls, message: str = "The provided model identifier is invalid.") -> Reply:
        """400 ValidationException (not retryable)."""
        return cls.error(400, "ValidationException", message)


#: Signature of ``BedrockServer.handler``: return a reply, or ``None`` to fall
#: through to the scripted queue / default.
Handler = Callable[[RecordedRequest], Optional[Reply]]


# --------------------------------------------------------------------------- #
# Default bodies
# --------------------------------------------------------------------------- #


def _default_body(request: RecordedRequest) -> tuple[bytes, dict[str, str]]:
    op = request.operation
    if op == "Converse":
        return _json_bytes(
            {
                "output": {"message": {"role": "assistant", "content": [{"text": DEFAULT_TEXT}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 5, "outputTokens": 6, "totalTokens": 11},
                "metrics": {"latencyMs": 12},
            }
        ), {}
    if op == "InvokeModel":
        body = {
            "id": "msg_bdrk_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "model": request.model_id or "claude-3-haiku-20240307",
            "content": [{"type": "text", "text": DEFAULT_TEXT}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 6},
        }
        return _json_bytes(body), {
            "X-Amzn-Bedrock-Invocation-Latency": "12",
            "X-Amzn-Bedrock-Input-Token-Count": "5",
            "X-Amzn-Bedrock-Output-Token-Count": "6",
        }
    if op == "ListFoundationModels":
        return _json_bytes({"modelSummaries": []}), {}
    if op == "CountTokens":
        return _json_bytes({"inputTokens": 5}), {}
    if op == "ApplyGuardrail":
        return _json_bytes(
            {"usage": {}, "action": "NONE", "outputs": [], "assessments": []}
        ), {}
    return b"{}", {}


def _default_stream(request: RecordedRequest) -> tuple[EventFrame, ...]:
    if request.operation == "InvokeModelWithResponseStream":
        return tuple(EventFrame.anthropic_text([DEFAULT_TEXT]))
    return tuple(EventFrame.converse_text(["Hello", " from the test server"]))


# --------------------------------------------------------------------------- #
# HTTP machinery
# --------------------------------------------------------------------------- #


class _ConnectionAborted(Exception):
    """Internal: the connection is gone (reset by us, or server stopping)."""


class _RequestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # flush stream frames immediately
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Every blocking read/write on an accepted connection has a deadline,
        # so an idle or stuck client can never pin a thread forever.
        self.connection.settimeout(self.server.owner.connection_timeout)
        self.connection_id = self.server.owner._register_connection(self.connection)
        self.request_index = 0

    # Route every method through one dispatcher.
    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silence per-request logging; tests assert on ``server.requests``."""

    # -- request side ------------------------------------------------------ #

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise _ConnectionAborted()
                try:
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                except ValueError:
                    raise _ConnectionAborted() from None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # discard trailers
                    return b"".join(parts)
                chunk = self.rfile.read(size)
                self.rfile.readline(65537)
                if len(chunk) < size:
                    raise _ConnectionAborted()
                parts.append(chunk)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _ConnectionAborted() from None
        if length <= 0:
            return b""
        body = self.rfile.read(length)
        if len(body) < length:
            raise _ConnectionAborted()
        return body

    def _dispatch(self) -> None:
        owner = self.server.owner
        try:
            body = self._read_body()
            operation, model_id = detect_operation(self.command, self.path)
            request = RecordedRequest(
                method=self.command,
                path=self.path,
                headers=Headers(self.headers.items()),
                body=body,
                operation=operation,
                model_id=model_id,
                connection_id=self.connection_id,
                client_port=int(self.client_address[1]),
                time=time.monotonic(),
                connection_request_index=self.request_index,
            )
            self.request_index += 1
            owner._record(request)
            reply = owner._choose_reply(request)
            self._perform(reply, request)
        except (_ConnectionAborted, OSError):
            # Client went away, server stopping, or garbage framing: drop the
            # connection quietly; the client sees whatever it sees.  Anything
            # else is a bug and reaches handle_error() -> server.errors.
            self.close_connection = True

    # -- response side ----------------------------------------------------- #

    def _perform(self, reply: Reply, request: RecordedRequest) -> None:
        kind = reply.kind
        if kind == "delay":
            if self.server.owner._stopping.wait(reply.seconds):
                raise _ConnectionAborted()
            assert reply.then is not None
            self._perform(reply.then, request)
        elif kind == "reset":
            self._reset_connection()
        elif kind == "close":
            self.close_connection = True  # finish() + shutdown_request() send FIN
        elif kind == "truncated":
            assert reply.then is not None
            status, headers, body = self._render(reply.then, request)
            # Headers promise the full body (no "Connection: close": a dying
            # server would not announce it), then the connection just ends.
            self._write_head(status, headers, body[: reply.keep_bytes])
            self.close_connection = True
        elif kind == "stream" or (
            kind == "ok" and reply.body is None and request.operation in STREAMING_OPERATIONS
        ):
            self._send_stream(reply, request)
        else:
            status, headers, body = self._render(reply, request)
            self._write_head(status, headers, b"" if self.command == "HEAD" else body)

    def _base_headers(self, reply: Reply, *, request_id: bool) -> list[tuple[str, str]]:
        date = reply.date or http_date(time.time() + self.server.owner.clock_skew)
        headers = [("Date", date)]
        if request_id:
            headers.append(("x-amzn-RequestId", str(uuid.uuid4())))
        return headers

    def _render(self, reply: Reply, request: RecordedRequest) -> tuple[int, list[tuple[str, str]], bytes]:
        extra: dict[str, str] = {}
        if reply.body is None:
            body, extra = _default_body(request)
        else:
            body = reply.body
        headers = self._base_headers(reply, request_id=reply.kind != "raw")
        if reply.kind != "raw":
            headers.append(("Content-Type", _JSON))
        headers.append(("Content-Length", str(len(body))))
        headers.extend(extra.items())
        return reply.status, _apply_overrides(headers, reply.headers), body

    def _write_head(self, status: int, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        if self.close_connection and not any(k.lower() == "connection" for k, _ in headers):
            headers = headers + [("Connection", "close")]
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        self.wfile.write(head.encode("latin-1") + body)

    def _send_stream(self, reply: Reply, request: RecordedRequest) -> None:
        frames = reply.frames if reply.kind == "stream" else _default_stream(request)
        headers = self._base_headers(reply, request_id=True)
        headers.append(("Content-Type", _EVENTSTREAM_CONTENT_TYPE))
        if request.operation == "InvokeModelWithResponseStream":
            headers.append(("X-Amzn-Bedrock-Content-Type", _JSON))
        if reply.chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            self.close_connection = True
        headers = _apply_overrides(headers, reply.headers)
        self._write_head(reply.status, headers)
        stopping = self.server.owner._stopping
        for index, frame in enumerate(frames):
            if index and reply.delay_between and stopping.wait(reply.delay_between):
                raise _ConnectionAborted()
            if frame.action == "reset":
                self._reset_connection()
                return
            if frame.action == "stall":
                if stopping.wait(frame.seconds):
                    raise _ConnectionAborted()
                continue
            data = frame.encode()
            if not data:
                continue
            if reply.chunked:
                data = f"{len(data):X}\r\n".encode("ascii") + data + b"\r\n"
            self.wfile.write(data)
        if reply.chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _reset_connection(self) -> None:
        """Send RST now: linger-0 then drop every reference to the fd."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # rfile (a makefile) holds a reference to the fd, which is only really
        # closed -- and the RST only sent -- once every reference is gone.
        # wfile is left open: BaseHTTPRequestHandler flushes it after every
        # request and an unbuffered writer owns no fd reference.
        try:
            self.rfile.close()
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass


def _apply_overrides(
    headers: list[tuple[str, str]], overrides: Iterable[tuple[str, Optional[str]]]
) -> list[tuple[str, str]]:
    result = list(headers)
    for name, value in overrides:
        result = [(k, v) for k, v in result if k.lower() != name.lower()]
        if value is not None:
            result.append((name, value))
    return result


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False  # we join handler threads ourselves, with a timeout
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: BedrockServer) -> None:
        self.owner = owner
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() calls socket.getfqdn(), which can block for
        # seconds on hosts with slow reverse DNS.  We never need the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._process_request_thread,
            args=(request, client_address),
            name=f"BedrockServer-conn-{client_address[1] if len(client_address) > 1 else '?'}",
            daemon=True,
        )
        self.owner._track_thread(thread, request)
        thread.start()

    def _process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            self.owner._untrack_thread(threading.current_thread(), request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Record unexpected handler errors instead of printing tracebacks."""
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, OSError):
            self.owner._record_error(exc)


# --------------------------------------------------------------------------- #
# Public server
# --------------------------------------------------------------------------- #

_BOTO3_LOCK = threading.Lock()
_BOTO3_SESSION: Any = None


def _shared_boto3_session() -> Any:
    global _BOTO3_SESSION
    with _BOTO3_LOCK:
        if _BOTO3_SESSION is None:
            import boto3.session  # type: ignore[import-untyped,unused-ignore]  # lazy: stdlib-only server

            _BOTO3_SESSION = boto3.session.Session()
        return _BOTO3_SESSION



class BedrockServer:
    """A Bedrock-compatible HTTP/1.1 server on a background thread.

    Use as a context manager or via :meth:`start` / :meth:`stop`.  Each
    accepted TCP connection gets its own daemon thread, a socket timeout
    (``connection_timeout``) and a ``connection_id``; persistent connections
    are supported exactly as botocore's urllib3 pool expects.  :meth:`stop`
    shuts down every open connection, interrupts delays and stalls, and joins
    threads with a deadline, so a misbehaving test cannot hang the suite.

    Attributes that tests may set at any time:

    * ``default`` – reply used when no handler/script reply applies.
    * ``handler`` – optional ``callable(RecordedRequest) -> Reply | None``
      consulted first.  Calls are serialized under the server lock, so
      stateful handlers (token buckets, counters) need no locking of their
      own; do not sleep in it, return :meth:`Reply.delay` instead.
    * ``clock_skew`` – seconds added to the server clock for ``Date`` headers.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        connection_timeout: float = 30.0,
        default: Reply | None = None,
        handler: Handler | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.connection_timeout = connection_timeout
        self.default: Reply = default if default is not None else Reply.ok()
        self.handler: Handler | None = handler
        self.clock_skew: float = 0.0

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._script: collections.deque[Reply] = collections.deque()
        self._requests: list[RecordedRequest] = []
        self._errors: list[BaseException] = []
        self._connection_ids = itertools.count(1)
        self._connections = 0
        self._open_sockets: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._stopped = False

    # -- lifecycle --------------------------------------------------------- #

    def start(self) -> BedrockServer:
        """Bind and start serving in a daemon thread; returns ``self``."""
        with self._lock:
            if self._httpd is not None or self._stopped:
                raise RuntimeError("BedrockServer can only be started once")
            self._httpd = _HTTPServer((self.host, self._requested_port), self)
            self._serve_thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"BedrockServer-{self.port}",
                daemon=True,
            )
            self._serve_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, abort open connections and join threads.

        Idempotent.  Waits at most about ``timeout`` seconds in total; any
        thread still alive after that is a daemon and will not block exit.
        """
        with self._lock:
            if self._httpd is None or self._stopped:
                self._stopped = True
                return
            self._stopped = True
            httpd, serve_thread = self._httpd, self._serve_thread
        deadline = time.monotonic() + timeout
        self._stopping.set()  # wakes delays and stalls
        if serve_thread is not None and serve_thread.is_alive():
            httpd.shutdown()
            serve_thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            sockets = list(self._open_sockets)
            threads = list(self._threads)
        for sock in sockets:  # unblock handler threads waiting in recv/send
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            httpd.server_close()
        except OSError:
            pass
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> BedrockServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._httpd is not None and not self._stopped

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL to pass as ``endpoint_url``, e.g. ``http://127.0.0.1:PORT``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- scripting --------------------------------------------------------- #

    def script(self, *replies: Reply) -> None:
        """Append replies to the FIFO queue; each request consumes one."""
        for reply in replies:
            if not isinstance(reply, Reply):
                raise TypeError(f"script() takes Reply objects, got {type(reply).__name__}")
        with self._lock:
            self._script.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not yet consumed (assert 0 to prove all were used)."""
        with self._lock:
            return len(self._script)

    def reset(self) -> None:
        """Forget scripted replies, recorded requests and errors; restore
        ``default`` to ``Reply.ok()``, ``handler`` to ``None`` and
        ``clock_skew`` to 0.  Open connections and the connection counter are
        left alone (they describe the live transport, not the test scenario)."""
        with self._lock:
            self._script.clear()
            self._requests.clear()
            self._errors.clear()
            self.default = Reply.ok()
            self.handler = None
            self.clock_skew = 0.0

    # -- observation ------------------------------------------------------- #

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot (a new list) of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> int:
        """Number of TCP connections accepted so far."""
        with self._lock:
            return self._connections

    @property
    def open_connections(self) -> int:
        """Number of TCP connections currently open."""
        with self._lock:
            return len(self._open_sockets)

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by ``handler`` (each was answered with a 500)."""
        with self._lock:
            return list(self._errors)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``count`` requests arrived; raise ``TimeoutError``
        otherwise.  For tests whose client runs in another thread."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"got {len(self._requests)} of {count} requests")
                self._changed.wait(remaining)
            return list(self._requests)

    def client(
        self,
        service_name: str = "bedrock-runtime",
        *,
        region_name: str = "us-east-1",
        config: Any = None,
        **kwargs: Any,
    ) -> Any:
        """A real boto3 client aimed at this server with dummy credentials.

        Clients come from one module-wide ``boto3.session.Session`` so service
        models are parsed once (a fresh session costs ~0.2 s per client, which
        dominates a test suite).  Credentials, region and ``endpoint_url`` are
        passed explicitly, so no profile or environment setting can redirect
        the client.  ``kwargs`` go to ``Session.client``.
        """
        session = _shared_boto3_session()
        with _BOTO3_LOCK:  # boto3 sessions are not thread-safe for client creation
            return session.client(
                service_name,
                region_name=region_name,
                endpoint_url=self.url,
                aws_access_key_id="AKIDEXAMPLE",
                aws_secret_access_key="secret",
                config=config,
                **kwargs,
            )

    # -- internals used by the handler ------------------------------------ #

    def _register_connection(self, sock: socket.socket) -> int:
        with self._lock:
            self._connections += 1
            return next(self._connection_ids)

    def _track_thread(self, thread: threading.Thread, sock: socket.socket) -> None:
        with self._lock:
            self._threads.add(thread)
            self._open_sockets.add(sock)

    def _untrack_thread(self, thread: threading.Thread, sock: socket.socket) -> None:
        with self._lock:
            self._threads.discard(thread)
            self._open_sockets.discard(sock)

    def _record(self, request: RecordedRequest) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def _record_error(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)

    def _choose_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            handler = self.handler
            if handler is not None:
                try:
                    reply = handler(request)
                except Exception as exc:  # surface, don't kill the connection thread
                    self._errors.append(exc)
                    return Reply.error(500, "InternalServerException", f"test handler raised {exc!r}")
                if reply is not None:
                    if not isinstance(reply, Reply):
                        self._errors.append(TypeError(f"handler returned {type(reply).__name__}"))
                        return Reply.error(500, "InternalServerException", "test handler returned a non-Reply")
                    return reply
            if self._script:
                return self._script.popleft()
            return self.default


# --------------------------------------------------------------------------- #
# SigV4 verification
# --------------------------------------------------------------------------- #


def sigv4_scope(request: RecordedRequest) -> dict[str, str]:
    """The credential scope a request was signed for: ``access_key``, ``date``, ``region``, ``service``."""
    authorization = request.headers.get("Authorization", "")
    match = re.search(r"Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request", authorization)
    if not match:
        return {}
    return dict(zip(("access_key", "date", "region", "service"), match.groups()))


def verify_sigv4(request: RecordedRequest, secret_key: str, *, region: str, service: str = "bedrock",
                 session_token: Optional[str] = None) -> bool:
    """Recompute a recorded request's SigV4 signature with botocore's own signer and compare.

    Lets a test prove that a request re-targeted at another Region (or model) was signed correctly
    for where it went, the way the real service would check it.
    """
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    authorization = request.headers.get("Authorization", "")
    signed = re.search(r"SignedHeaders=([^,\s]+)", authorization)
    signature = re.search(r"Signature=([0-9a-f]+)", authorization)
    scope = sigv4_scope(request)
    if not (signed and signature and scope) or scope["region"] != region or scope["service"] != service:
        return False
    names = signed.group(1).split(";")
    headers = {name: request.headers.get(name, "") for name in names}
    aws_request = AWSRequest(method=request.method, url=f"http://{headers.get('host', 'localhost')}{request.path}",
                             headers=headers, data=request.body)
    aws_request.context["timestamp"] = request.headers.get("X-Amz-Date", "")
    auth = SigV4Auth(Credentials(scope["access_key"], secret_key, session_token), service, region)
    canonical = auth.canonical_request(aws_request)
    expected = auth.signature(auth.string_to_sign(aws_request, canonical), aws_request)
    return hmac.compare_digest(expected, signature.group(1))
