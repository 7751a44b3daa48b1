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

Bedrock's token quota per model, with usage reported in every answer::

    server.quota("anthropic.claude-sonnet-4*", tokens_per_minute=200_000)
    # each call reserves input + maxTokens (unset: the model's maximum output), answers 429
    # "Too many tokens" when that does not fit, and settles to input + output x 5 (Claude 4)
    server.quota_stats()["anthropic.claude-sonnet-4-20250514-v1:0"].throttled

Replies are chosen per request in this order: ``server.handler`` (if set and it
returns a reply), then the FIFO queue filled by :meth:`BedrockServer.script`,
then ``server.default``.  Besides well-formed answers, replies can inject
transport faults (stall, TCP reset, clean close, truncated body) and streams can
contain mid-stream faults, because those are the cases a resilience layer must
be tested against.

Layout (import everything from here; the submodules are the seams):

* :mod:`.wire` – HTTP wire format: ``Headers``, ``RecordedRequest``, ``detect_operation``, ``http_date``;
* :mod:`.frames` – AWS event-stream frames: ``EventFrame``, ``encode_frame``, ``decode_frames``;
* :mod:`.replies` – scripted replies (``Reply``) and the default bodies;
* :mod:`.connection` – one TCP connection: reading requests, writing replies and faults;
* :mod:`.server` – ``BedrockServer``: lifecycle, scripting, observation;
* :mod:`.quota` – Bedrock's tokens-per-minute quota per model (``server.quota(...)``): reservation
  at request start, settlement at the end, burndown, usage in every answer;
* :mod:`.sigv4` – ``verify_sigv4``/``sigv4_scope`` with botocore's own signer.

Only the standard library is used; :meth:`BedrockServer.client` and
:func:`verify_sigv4` import botocore/boto3 lazily.
"""

from __future__ import annotations

from .frames import EventFrame, HeaderValue, decode_frames, encode_frame
from .quota import MODEL_LIMITS, QuotaStats, Reservation, TokenQuota, count_tokens, model_limits
from .replies import DEFAULT_TEXT, Handler, Reply
from .server import BedrockServer
from .sigv4 import sigv4_scope, verify_sigv4
from .wire import STREAMING_OPERATIONS, DateLike, Headers, RecordedRequest, detect_operation, http_date

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
    "DateLike",
    "HeaderValue",
    "sigv4_scope",
    "verify_sigv4",
    "TokenQuota",
    "QuotaStats",
    "Reservation",
    "MODEL_LIMITS",
    "count_tokens",
    "model_limits",
]
