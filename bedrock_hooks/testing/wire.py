"""Bedrock's HTTP wire format as the test server sees it.

Why a module of its own: the replies, the frames and the server all need the
same few facts about the wire (content types, the ``x-amzn-ErrorType`` suffix,
how a URL names an operation, what a recorded request holds), and tests import
them to assert on what a client actually sent.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import email.utils
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Optional, Union
from urllib.parse import parse_qs, unquote, urlsplit

#: Appended by Bedrock to the code in ``x-amzn-ErrorType``.
ERROR_TYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
JSON_CONTENT_TYPE = "application/json"

DateLike = Union[str, _dt.datetime, float, int]


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


def json_bytes(value: Any) -> bytes:
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
