"""Classification: from what botocore saw (response or exception) to a catalog entry.

Bedrock rarely uses the troubleshooting page's spelling: rest-json codes arrive in the
``x-amzn-ErrorType`` header or the body (``ValidationException``, ``InternalServerException``...),
and several conditions share one generic code and differ only by message. So classification looks
at message, code, status and exception type together, in that order of specificity, using indexes
built once from :data:`bedrock_hooks.catalog.ENTRIES`.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import aio
from .catalog import ENTRIES, Entry

_MAX_MESSAGE = 4096  # a proxy's multi-megabyte HTML page is not worth scanning in full


@dataclass(frozen=True)
class ErrorFacts:
    """What is known about one failed attempt, independent of where it was observed."""

    status: int | None = None
    code: str | None = None
    message: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    exception: BaseException | None = None


@dataclass(frozen=True)
class Classification:
    """A recognised condition: the entry plus facts parsed from this particular error."""

    entry: Entry
    facts: ErrorFacts
    retry_after: float | None = None  #: the wait to report: stated by the server (header, then message), or documented
    stated_wait: float | None = None  #: the wait the server's ``Retry-After``/``x-amz-retry-after`` header asked for


def _index(entries: Iterable[Entry]):
    by_message: list[Entry] = []
    by_code: dict[str, Entry] = {}
    by_status: dict[int, Entry] = {}
    by_exception: dict[str, Entry] = {}
    for entry in entries:
        if entry.message is not None:
            by_message.append(entry)
        for code in entry.codes:
            by_code.setdefault(code.lower(), entry)
        for status in entry.statuses:
            by_status.setdefault(status, entry)
        for name in entry.exceptions:
            by_exception.setdefault(name, entry)
    return tuple(by_message), by_code, by_status, by_exception


_BY_MESSAGE, _BY_CODE, _BY_STATUS, _BY_EXCEPTION = _index(ENTRIES)


def facts_from_parts(status: int | None, parsed: Mapping[str, Any] | None, headers: Mapping[str, str] | None,
                     exception: BaseException | None = None) -> ErrorFacts | None:
    """Facts from an attempt's status, parsed body and headers; None for a success."""
    error = (parsed or {}).get("Error") or {}
    if status is not None and status < 300 and not error:
        return None
    if not isinstance(error, Mapping):
        error = {}
    code = error.get("QueryErrorCode") or error.get("Code") or None
    message = error.get("Message") or error.get("message") or ""
    return ErrorFacts(status=status, code=str(code) if code else None, message=str(message)[:_MAX_MESSAGE],
                      headers=headers or {}, exception=exception)


def facts_from_parsed(http_response: Any, parsed: Mapping[str, Any] | None,
                      exception: BaseException | None = None) -> ErrorFacts | None:
    """Facts from a botocore ``(http_response, parsed)`` pair; None for a success."""
    return facts_from_parts(getattr(http_response, "status_code", None), parsed,
                            getattr(http_response, "headers", None), exception)


def facts_from_exception(exception: BaseException) -> ErrorFacts:
    """Facts from an exception with no HTTP response (resets, timeouts) or a ClientError/EventStreamError."""
    response = getattr(exception, "response", None)
    if isinstance(response, Mapping) and response.get("Error"):
        error = response["Error"]
        meta = response.get("ResponseMetadata") or {}
        code = error.get("Code")  # a JSON body's "code"/"__type" can be any JSON value, not only a string
        return ErrorFacts(status=meta.get("HTTPStatusCode"), code=str(code) if code else None,
                          message=str(error.get("Message") or "")[:_MAX_MESSAGE],
                          headers=meta.get("HTTPHeaders") or {}, exception=exception)
    return ErrorFacts(message=str(exception)[:_MAX_MESSAGE], exception=exception)


# -- truncated successes ----------------------------------------------------------------------------

_NO_BODY_STATUSES = frozenset({204, 304})
_JSON_PROTOCOLS = frozenset({"json", "rest-json"})


def facts_from_success(http_response: Any, operation_model: Any) -> ErrorFacts | None:
    """Facts for a 2xx whose body was cut short; None for a complete body (the common case).

    botocore 1.43.115+ reads non-streaming bodies without enforcing ``Content-Length``, so a 200
    cut short comes back as ``{}`` or a partial result instead of raising. A body shorter than its
    ``Content-Length`` (or, without one, JSON that does not parse) is what an older botocore
    reported as a closed connection (``ConnectionClosedError`` from ``IncompleteRead``); the facts
    carry botocore's own ``IncompleteReadError`` for it, so both botocore lines classify, retry and
    report it alike (catalog entry ``TruncatedResponse``).
    Streaming outputs (InvokeModel's body, event streams) are read by the application, not here.
    """
    if operation_model is None or operation_model.has_streaming_output or operation_model.has_event_stream_output:
        return None
    if http_response.status_code in _NO_BODY_STATUSES or operation_model.http.get("method") == "HEAD":
        return None
    body = _read_body(http_response)
    if body is None:
        return None
    declared = http_response.headers.get("content-length")
    if declared is not None:
        try:
            expected = int(declared)
        except ValueError:
            return None
        if len(body) >= expected:
            return None
    elif not body or "chunked" in str(http_response.headers.get("transfer-encoding", "")).lower() \
            or not _unparsable_json(body, operation_model):
        return None
    else:
        expected = None
    return ErrorFacts(exception=_incomplete_read(body, expected))


def _read_body(http_response: Any) -> bytes | None:
    """The body botocore (or aiobotocore) already read before ``needs-retry``, never read here.

    Both keep a non-streaming body in ``_content`` once read; aiobotocore's ``content`` is a
    coroutine, which a synchronous handler must not create (nor leave unawaited). botocore's
    ``content`` reads (and caches) the body if it was somehow not read yet; an unread aiobotocore
    body (None) cannot be judged here.
    """
    body = getattr(http_response, "_content", None)
    if body is None and not aio.is_async(http_response):
        body = http_response.content
    return body if isinstance(body, (bytes, bytearray)) else None


def _unparsable_json(body: bytes, operation_model: Any) -> bool:
    if operation_model.service_model.protocol not in _JSON_PROTOCOLS:
        return False
    try:
        json.loads(body)
    except ValueError:
        return True
    return False


def _incomplete_read(body: bytes, expected: int | None) -> BaseException:
    """botocore's own error for a body shorter than its length, raised by botocore's own check.

    ``StreamingBody`` verifies ``Content-Length`` for streaming outputs on every botocore; running
    the cut body through it yields ``IncompleteReadError`` raised inside botocore, exactly as a
    streaming read reports it. A body without a length that ends inside its JSON has no length to
    compare: the same error states what is known.
    """
    import io

    from botocore.exceptions import IncompleteReadError
    from botocore.response import StreamingBody

    if expected is not None:
        try:
            StreamingBody(io.BytesIO(body), expected).read()
        except IncompleteReadError as error:
            return error
    return IncompleteReadError(actual_bytes=len(body), expected_bytes="more (the JSON body ends early)")


def classify(facts: ErrorFacts) -> Classification | None:
    """The catalog entry for ``facts``, or None when the library does not know the error.

    None means "let botocore decide": an unknown error is never made worse than plain botocore.
    """
    entry = _match(facts)
    if entry is None:
        return None
    stated = stated_wait(facts.headers)
    return Classification(entry=entry, facts=facts, retry_after=retry_after_from(facts, entry, stated),
                          stated_wait=stated)


def _match(facts: ErrorFacts) -> Entry | None:
    if facts.message and (facts.code or facts.status):
        for entry in _BY_MESSAGE:
            if entry.message.search(facts.message):  # type: ignore[union-attr]
                return entry
    code = _normalise_code(facts.code) if facts.code else ""
    if code and not code.isdigit():
        entry = _BY_CODE.get(code)
        if entry is not None:
            return entry
    if facts.status in _BY_STATUS and (not code or code.isdigit() or facts.status in _SERVER_SIDE):
        return _BY_STATUS[facts.status]
    if facts.exception is not None and facts.status is None:
        return _match_exception(facts.exception)
    return None


def _match_exception(exception: BaseException) -> Entry | None:
    """The entry of the most specific known exception in the chain botocore wraps (innermost first):
    ``ConnectionClosedError`` around urllib3's ``ProtocolError`` around ``IncompleteRead`` is a cut
    body, around ``ConnectionResetError`` a reset."""
    for candidate in reversed(_exception_chain(exception)):
        for cls in type(candidate).__mro__:
            entry = _BY_EXCEPTION.get(cls.__name__)
            if entry is not None:
                return entry
    return None


def _exception_chain(exception: BaseException, depth: int = 4) -> list[BaseException]:
    """``exception`` and the errors it wraps: botocore's ``kwargs["error"]``, urllib3's exception args, and a
    ``ConnectionError`` an exception was raised from (aiobotocore reports a reset on a reused aiohttp connection as
    ``EndpointConnectionError`` around ``ClientOSError`` raised from ``ConnectionResetError``; a connect timeout's
    ``TimeoutError`` cause is not followed, it stays a connect failure)."""
    chain = [exception]
    current: Any = exception
    for _ in range(depth):
        kwargs = getattr(current, "kwargs", None)
        inner = kwargs.get("error") if isinstance(kwargs, dict) else None
        if not isinstance(inner, BaseException):
            inner = next((a for a in getattr(current, "args", ()) if isinstance(a, BaseException)), None)
        if inner is None and isinstance(current.__cause__, ConnectionError):  # aiohttp's ClientOSError from a reset
            inner = current.__cause__
        if inner is None or inner in chain:
            break
        chain.append(inner)
        current = inner
    return chain


# Statuses that mean the same thing whatever code accompanies them. A 400 or 403 with a code the
# catalog does not know is left to botocore, which may know it as transient (e.g. RequestTimeout).
_SERVER_SIDE = frozenset({429, 500, 502, 503, 504})


def _normalise_code(code: str) -> str:
    """``ThrottlingException:http://internal.amazon.com/coral/...`` and ``throttlingException`` alike."""
    code = code.split(":", 1)[0].split("#")[-1].strip()
    return code.lower()


_WAIT = re.compile(
    r"(?:try|retry)\b[^.]{0,60}?\b(?:in|after)\s+(?:about\s+|approximately\s+)?(\d+(?:\.\d+)?)\s*"
    r"(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b",
    re.IGNORECASE,
)
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wait(message: str) -> float | None:
    """Seconds stated in a message such as "try again after 15 minutes" (None if none is stated)."""
    match = _WAIT.search(message or "")
    if not match:
        return None
    seconds = float(match.group(1)) * _UNIT[match.group(2)[0].lower()]
    return seconds if math.isfinite(seconds) else None  # "retry after 1e999 hours" states no usable wait


def parse_retry_after_header(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds or as an HTTP date; None when absent or unusable."""
    raw = _header(headers, "retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None  # "inf"/"nan"/"1e999" are unusable
    import email.utils  # only for this rare form: importing the library stays cheap

    try:
        when = email.utils.parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def parse_amz_retry_after(headers: Mapping[str, str]) -> float | None:
    """botocore standard mode's ``x-amz-retry-after`` header (milliseconds), in seconds."""
    raw = _header(headers, "x-amz-retry-after")
    if not raw:
        return None
    try:
        millis = int(raw.strip())
    except (ValueError, OverflowError):
        return None
    return millis / 1000.0 if 0 <= millis < 10**12 else None


def stated_wait(headers: Mapping[str, str]) -> float | None:
    """The wait an answer's headers ask for: ``x-amz-retry-after``, then ``Retry-After``."""
    if not headers:
        return None
    stated = parse_amz_retry_after(headers)
    return stated if stated is not None else parse_retry_after_header(headers)


def retry_after_from(facts: ErrorFacts, entry: Entry, stated: float | None = None) -> float | None:
    """The wait the server asked for (header, then message), else the entry's documented wait."""
    if stated is None:
        stated = stated_wait(facts.headers)
    if stated is None:
        stated = parse_wait(facts.message)
    if stated is None:
        stated = entry.retry_after
    return stated


def _header(headers: Mapping[str, str], name: str) -> str | None:
    try:
        value = headers.get(name)
        if value is None:
            for key, candidate in headers.items():
                if str(key).lower() == name:
                    return str(candidate)
        return None if value is None else str(value)
    except Exception:
        return None


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that tolerates any mapping botocore or a test hands us."""
    return _header(headers, name.lower())
