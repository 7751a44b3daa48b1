"""Scripted replies: what the test server does with one request.

Why a module of its own: a :class:`Reply` is a plain immutable value (an
answer, an error, a stream, or a transport fault) that tests build and reuse;
how the server turns it into bytes lives in :mod:`.connection`.  The bodies
generated for ``Reply.ok()`` per operation are here too, because they are what
"ok" means.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Optional

from ..bodyformats import body_format
from .frames import EventFrame
from .wire import DateLike, ERROR_TYPE_SUFFIX, RecordedRequest, http_date, json_bytes

if TYPE_CHECKING:
    from .quota import Reservation

#: The assistant text used by every generated default response.
DEFAULT_TEXT = "Hello from the test server"

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
            body=None if body is None else json_bytes(body),
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
            extra["x-amzn-ErrorType"] = code + ERROR_TYPE_SUFFIX
        extra.update(headers or {})
        return cls(
            kind="error",
            status=status,
            body=json_bytes(payload),
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


def default_body(request: RecordedRequest, usage: Reservation | None = None) -> tuple[bytes, dict[str, str]]:
    """A realistic ``Reply.ok()`` body and extra headers for the operation called,
    so an app's every call works against the default server.

    With ``usage`` (the request drew on a quota, :mod:`.quota`) the answer has that many tokens and
    reports them; InvokeModel answers then take the shape of the model's body format (Anthropic
    messages, Titan Text, Nova, Llama; others the Anthropic shape).  Without it the usage is the fixed
    5 input / 6 output tokens of :data:`DEFAULT_TEXT`.
    """
    op = request.operation
    if op == "Converse":
        return json_bytes(_converse_body(request, usage)), {}
    if op == "InvokeModel":
        if usage is None:
            body: dict[str, Any] = _anthropic_body(request, DEFAULT_TEXT, 5, 6, "end_turn")
            return json_bytes(body), _invoke_headers(12, 5, 6)
        shape = _INVOKE_SHAPES.get((body_format(request.model_id or "") or "").split(":")[0], _anthropic_usage_body)
        headers = _invoke_headers(_latency_ms(request), usage.input_tokens, usage.output_tokens)
        if usage.cached:
            headers["X-Amzn-Bedrock-Cache-Read-Input-Token-Count"] = str(usage.cache_read_tokens)
            headers["X-Amzn-Bedrock-Cache-Write-Input-Token-Count"] = str(usage.cache_write_tokens)
        return json_bytes(shape(request, usage)), headers
    if op == "ListFoundationModels":
        return json_bytes({"modelSummaries": []}), {}
    if op == "CountTokens":
        return json_bytes({"inputTokens": 5}), {}
    if op == "ApplyGuardrail":
        return json_bytes(
            {"usage": {}, "action": "NONE", "outputs": [], "assessments": []}
        ), {}
    return b"{}", {}


def default_stream(request: RecordedRequest, usage: Reservation | None = None) -> tuple[EventFrame, ...]:
    """The complete event stream ``Reply.ok()`` sends for a streaming operation (with ``usage``: that
    many tokens, reported in the ConverseStream ``metadata`` event or the invocation metrics of the
    last InvokeModelWithResponseStream chunk)."""
    if usage is None:
        if request.operation == "InvokeModelWithResponseStream":
            return tuple(EventFrame.anthropic_text([DEFAULT_TEXT]))
        return tuple(EventFrame.converse_text(["Hello", " from the test server"]))
    pieces = _pieces(usage.text)
    counts = dict(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                  cache_read_tokens=usage.cache_read_tokens, cache_write_tokens=usage.cache_write_tokens,
                  stop_reason=usage.stop_reason)
    if request.operation == "InvokeModelWithResponseStream":
        return tuple(EventFrame.anthropic_text(pieces, model=request.model_id or "claude-3-haiku-20240307",
                                              latency_ms=_latency_ms(request), **counts))  # type: ignore[arg-type]
    return tuple(EventFrame.converse_text(pieces, latency_ms=_latency_ms(request), **counts))  # type: ignore[arg-type]


#: Characters per streamed delta of a generated answer.
_DELTA_CHARS = 64


def _pieces(text: str) -> list[str]:
    return [text[i : i + _DELTA_CHARS] for i in range(0, len(text), _DELTA_CHARS)] or [""]


def _latency_ms(request: RecordedRequest) -> int:
    return max(1, int((time.monotonic() - request.time) * 1000))


def _invoke_headers(latency_ms: int, input_tokens: int, output_tokens: int) -> dict[str, str]:
    return {
        "X-Amzn-Bedrock-Invocation-Latency": str(latency_ms),
        "X-Amzn-Bedrock-Input-Token-Count": str(input_tokens),
        "X-Amzn-Bedrock-Output-Token-Count": str(output_tokens),
    }


def _converse_body(request: RecordedRequest, usage: Reservation | None) -> dict[str, Any]:
    if usage is None:
        text, stop, latency = DEFAULT_TEXT, "end_turn", 12
        counts = {"inputTokens": 5, "outputTokens": 6, "totalTokens": 11}
    else:
        text, stop, latency = usage.text, usage.stop_reason, _latency_ms(request)
        counts = {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens,
                  "totalTokens": usage.total_tokens}
        if usage.cached:
            counts.update(cacheReadInputTokens=usage.cache_read_tokens, cacheWriteInputTokens=usage.cache_write_tokens)
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": stop,
        "usage": counts,
        "metrics": {"latencyMs": latency},
    }


def _anthropic_body(request: RecordedRequest, text: str, input_tokens: int, output_tokens: int,
                    stop_reason: str) -> dict[str, Any]:
    return {
        "id": "msg_bdrk_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": request.model_id or "claude-3-haiku-20240307",
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def _anthropic_usage_body(request: RecordedRequest, usage: Reservation) -> dict[str, Any]:
    body = _anthropic_body(request, usage.text, usage.input_tokens, usage.output_tokens, usage.stop_reason)
    if usage.cached:
        body["usage"].update(cache_read_input_tokens=usage.cache_read_tokens,
                             cache_creation_input_tokens=usage.cache_write_tokens)
    return body


def _titan_body(request: RecordedRequest, usage: Reservation) -> dict[str, Any]:
    return {
        "inputTextTokenCount": usage.input_tokens,
        "results": [{"tokenCount": usage.output_tokens, "outputText": usage.text,
                     "completionReason": "LENGTH" if usage.stop_reason == "max_tokens" else "FINISH"}],
    }


def _nova_body(request: RecordedRequest, usage: Reservation) -> dict[str, Any]:
    counts = {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens,
              "totalTokens": usage.total_tokens}
    if usage.cached:
        counts.update(cacheReadInputTokenCount=usage.cache_read_tokens, cacheWriteInputTokenCount=usage.cache_write_tokens)
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": usage.text}]}},
        "stopReason": usage.stop_reason,
        "usage": counts,
    }


def _llama_body(request: RecordedRequest, usage: Reservation) -> dict[str, Any]:
    return {
        "generation": usage.text,
        "prompt_token_count": usage.input_tokens,
        "generation_token_count": usage.output_tokens,
        "stop_reason": "length" if usage.stop_reason == "max_tokens" else "stop",
    }


#: InvokeModel answer per body format (``bodyformats.body_format``) when usage is accounted.
_INVOKE_SHAPES: dict[str, Callable[[RecordedRequest, Reservation], dict[str, Any]]] = {
    "anthropic-messages": _anthropic_usage_body,
    "titan-text": _titan_body,
    "nova-messages": _nova_body,
    "meta-llama": _llama_body,
}
