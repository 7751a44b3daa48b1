"""AWS event-stream messages: encode, decode, and the items a scripted stream is made of.

Why a module of its own: the binary framing (prelude, typed headers, CRCs) is
independent of HTTP, and a test can check the encoder against botocore's strict
decoder without starting a server.
"""

from __future__ import annotations

import base64
import dataclasses
import struct
import uuid
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Union

from .wire import JSON_CONTENT_TYPE, json_bytes

# Limits enforced by botocore's event-stream decoder; encoding anything larger
# would only produce a confusing client-side error far away from the test.
_MAX_FRAME_PAYLOAD = 16 * 1024 * 1024
_MAX_FRAME_HEADERS = 128 * 1024

#: Python types an event-stream header value may have (bool, int32/int64, bytes, str).
HeaderValue = Union[str, bytes, bool, int]


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
        body = payload if isinstance(payload, (bytes, bytearray)) else json_bytes(payload)
        frame = cls(headers=items, payload=bytes(body))
        frame.encode()  # validate eagerly so errors point at the test, not the server thread
        return frame

    @classmethod
    def event(cls, event_type: str, payload: Mapping[str, Any] | bytes) -> EventFrame:
        """A normal ``:message-type: event`` frame, as Bedrock sends for data."""
        return cls.message(
            [(":event-type", event_type), (":content-type", JSON_CONTENT_TYPE), (":message-type", "event")],
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
            [(":exception-type", exception_type), (":content-type", JSON_CONTENT_TYPE), (":message-type", "exception")],
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
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> list[EventFrame]:
        """A complete ConverseStream answer that streams ``texts`` as deltas; the closing ``metadata``
        event reports usage (cache fields only when a cache count is given) and ``latencyMs``."""
        out_tokens = max(1, len(texts)) if output_tokens is None else output_tokens
        usage = {"inputTokens": input_tokens, "outputTokens": out_tokens,
                 "totalTokens": input_tokens + out_tokens + cache_read_tokens + cache_write_tokens}
        if cache_read_tokens or cache_write_tokens:
            usage.update(cacheReadInputTokens=cache_read_tokens, cacheWriteInputTokens=cache_write_tokens)
        frames = [cls.event("messageStart", {"role": "assistant"})]
        frames += [
            cls.event("contentBlockDelta", {"delta": {"text": text}, "contentBlockIndex": 0})
            for text in texts
        ]
        frames += [
            cls.event("contentBlockStop", {"contentBlockIndex": 0}),
            cls.event("messageStop", {"stopReason": stop_reason}),
            cls.event("metadata", {"usage": usage, "metrics": {"latencyMs": latency_ms}}),
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
            raw = item if isinstance(item, (bytes, bytearray)) else json_bytes(item)
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
        output_tokens: int | None = None,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        latency_ms: int = 12,
    ) -> list[EventFrame]:
        """A realistic Anthropic Messages stream for InvokeModelWithResponseStream; the last chunk
        carries Bedrock's ``amazon-bedrock-invocationMetrics`` (token counts and latencies)."""
        out_tokens = max(1, len(texts)) if output_tokens is None else output_tokens
        usage: dict[str, int] = {"input_tokens": input_tokens, "output_tokens": 1}
        metrics = {"inputTokenCount": input_tokens, "outputTokenCount": out_tokens,
                   "invocationLatency": latency_ms, "firstByteLatency": min(5, latency_ms)}
        if cache_read_tokens or cache_write_tokens:
            usage.update(cache_read_input_tokens=cache_read_tokens, cache_creation_input_tokens=cache_write_tokens)
            metrics.update(cacheReadInputTokenCount=cache_read_tokens, cacheWriteInputTokenCount=cache_write_tokens)
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
                    "usage": usage,
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
            {"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics},
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
