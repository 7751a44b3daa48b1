"""Tokens: what a request will reserve against its quota, and what it really used.

The pacer books a request's cost before sending it and corrects it when the answer arrives, as
Bedrock does (see :mod:`bedrock_hooks.model_limits`). The estimate has to be cheap and bounded, not
exact: it runs in ``before-send`` on every request of a paced scope, and the correction from the
real usage repairs any error one request later. So:

* input tokens are the characters of the request's text (Converse ``messages``/``system``/
  ``toolConfig``, an InvokeModel body's prompt fields: every JSON string value) over
  :data:`CHARS_PER_TOKEN`, plus :data:`MEDIA_TOKENS` per image or document (their base64 bytes say
  nothing about their token count); keys, numbers and JSON punctuation are not counted;
* ``max_tokens`` is read where each body format keeps it (:data:`MAX_TOKEN_PATHS`, as data);
* a body larger than :data:`MAX_PARSE_BYTES`, or with more than :data:`MAX_NODES` JSON values, is not
  walked: its length over ``CHARS_PER_TOKEN`` stands for its input, and ``max_tokens`` is found by a
  pattern over the raw bytes; a body that is a stream (file object) is never read.

Usage comes from the answer: Converse's ``usage``, InvokeModel's ``x-amzn-bedrock-*-token-count``
headers, ConverseStream's ``metadata`` event and InvokeModelWithResponseStream's
``amazon-bedrock-invocationMetrics`` (in the last chunk). Nothing here logs or keeps the text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from .model_limits import ModelLimits

CHARS_PER_TOKEN = 4.0  #: the usual rule of thumb for English text and code with BPE tokenizers
MEDIA_TOKENS = 1_600  #: an image or document block: about what a 1000x1000 image costs Claude
MAX_PARSE_BYTES = 1 << 20  #: larger bodies are estimated from their length, not parsed
MAX_NODES = 50_000  #: JSON values walked at most per body

#: Keys whose string value is base64 media or an opaque reference, not text the model reads as tokens.
MEDIA_KEYS = frozenset({"bytes", "data", "image", "images", "inputImage", "uri", "s3Location", "source"})

#: Where each body format keeps its output limit; first present wins (Converse, Anthropic, Nova, Titan,
#: Llama, Mistral/Cohere/Jamba/OpenAI, Jurassic, Claude v2 text completions...).
MAX_TOKEN_PATHS: tuple[tuple[str, ...], ...] = (
    ("inferenceConfig", "maxTokens"),  # Converse; Nova's InvokeModel schema accepts it too
    ("inferenceConfig", "max_new_tokens"),  # Nova InvokeModel
    ("max_tokens",),  # Anthropic messages, Mistral, Cohere, Jamba, OpenAI chat
    ("max_tokens_to_sample",),  # Anthropic text completions (Claude v2)
    ("max_completion_tokens",),  # OpenAI
    ("max_gen_len",),  # Meta Llama
    ("textGenerationConfig", "maxTokenCount"),  # Amazon Titan Text
    ("maxTokens",),  # AI21 Jurassic-2
    ("max_new_tokens",),
    ("parameters", "max_new_tokens"),
)
_MAX_TOKEN_KEYS = {path[-1] for path in MAX_TOKEN_PATHS}
#: The same keys found in raw bytes (bodies too large to parse); an escaped quote (inside a prompt) never matches.
_MAX_TOKENS_RAW = re.compile(rb'(?<!\\)"(' + b"|".join(k.encode() for k in sorted(_MAX_TOKEN_KEYS)) + rb')"\s*:\s*(\d{1,9})')


class Estimate(NamedTuple):
    """A request's estimated input tokens and the output limit it sets (None: it sets none)."""

    input_tokens: int
    max_tokens: int | None


class Usage(NamedTuple):
    """What a request used, as the answer reports it."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read: int = 0
    cache_write: int = 0


def reservation(estimate: Estimate, limits: ModelLimits) -> float:
    """What Bedrock reserves at the start: input plus the output limit (the model's maximum when unset)."""
    output = estimate.max_tokens if estimate.max_tokens is not None else limits.max_output
    return float(estimate.input_tokens + output)


def expected_cost(estimate: Estimate, limits: ModelLimits, output_avg: float = 0.0) -> float:
    """What the request will most likely be charged: input plus the output this scope's answers have had
    on average (``output_avg``; 0.0: not known yet, so the whole limit), at most the limit, at the
    burndown rate. The pacer books this, not Bedrock's reservation (see :mod:`bedrock_hooks.ratelimit`)."""
    limit = estimate.max_tokens if estimate.max_tokens is not None else limits.max_output
    output = min(limit, output_avg) if output_avg > 0 else limit
    return float(estimate.input_tokens + output * limits.burndown)


def charged(usage: Usage, limits: ModelLimits) -> float:
    """What the request finally counts against the quota: input, cache writes, output at the burndown rate
    (cache reads count for nothing)."""
    return float(usage.input_tokens + usage.cache_write + usage.output_tokens * limits.burndown)


# -- estimating a request ----------------------------------------------------------------------------

def estimate_body(body: Any) -> Estimate | None:
    """The estimate for a serialized request body (bytes or str); None for a stream or no body."""
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    elif isinstance(body, (bytearray, memoryview)):
        body = bytes(body)
    if not isinstance(body, bytes) or not body:
        return None
    if len(body) > MAX_PARSE_BYTES:
        return _raw_estimate(body)
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return _raw_estimate(body)
    if not isinstance(document, dict):
        return _raw_estimate(body)
    chars, media = _text_size(document)
    if chars < 0:  # too many values to walk
        return _raw_estimate(body)
    return Estimate(_tokens(chars) + media * MEDIA_TOKENS, max_tokens_of(document))


def max_tokens_of(document: Mapping[str, Any]) -> int | None:
    """The output limit a parsed request body sets (:data:`MAX_TOKEN_PATHS`), or None."""
    for path in MAX_TOKEN_PATHS:
        value: Any = document
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return int(value)
    return None


def _tokens(chars: int) -> int:
    return int(-(-chars // CHARS_PER_TOKEN))  # ceiling


def _raw_estimate(body: bytes) -> Estimate:
    match = _MAX_TOKENS_RAW.search(body)
    return Estimate(_tokens(len(body)), int(match.group(2)) if match else None)


def _text_size(document: Any) -> tuple[int, int]:
    """(characters of text, media blocks) in a JSON document; (-1, 0) past :data:`MAX_NODES` values.

    Iterative (a deeply nested body cannot exhaust the stack) and bounded.
    """
    chars = media = nodes = 0
    stack: list[tuple[Any, bool]] = [(document, False)]
    while stack:
        value, is_media = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return -1, 0
        if isinstance(value, str):
            if is_media:
                media += 1
            else:
                chars += len(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                if key in MEDIA_KEYS and not isinstance(item, str):
                    if isinstance(item, (dict, list)):  # {"bytes": ...} under "source"/"image": one block
                        media += 1
                    continue
                stack.append((item, key in MEDIA_KEYS))
        elif isinstance(value, list):
            stack.extend((item, is_media) for item in value)
    return chars, media


# -- usage from answers ------------------------------------------------------------------------------

def _count(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, (int, float)):
        return max(0, int(value))
    if isinstance(value, (str, bytes)):
        try:
            return max(0, int(value))
        except ValueError:
            return 0
    return 0


def usage_of_converse(usage: Any) -> Usage | None:
    """Converse's ``usage`` (also the ConverseStream ``metadata`` event's)."""
    if not isinstance(usage, Mapping) or "inputTokens" not in usage and "outputTokens" not in usage:
        return None
    return Usage(_count(usage.get("inputTokens")), _count(usage.get("outputTokens")),
                 _count(usage.get("cacheReadInputTokens")), _count(usage.get("cacheWriteInputTokens")))


_HEADERS = ("x-amzn-bedrock-input-token-count", "x-amzn-bedrock-output-token-count",
            "x-amzn-bedrock-cache-read-input-token-count", "x-amzn-bedrock-cache-write-input-token-count")


def usage_of_headers(headers: Any) -> Usage | None:
    """InvokeModel's token-count headers (case-insensitive mapping, as botocore gives them)."""
    if headers is None:
        return None
    values = []
    for name in _HEADERS:
        try:
            values.append(headers.get(name))
        except Exception:
            values.append(None)
    if values[0] is None and values[1] is None:
        return None
    return Usage(*(_count(v) for v in values))


def usage_of_response(operation: str, parsed: Any, headers: Any) -> Usage | None:
    """The usage a unary answer reports (Converse body, InvokeModel headers), or None."""
    if operation == "Converse":
        return usage_of_converse(parsed.get("usage") if isinstance(parsed, Mapping) else None)
    return usage_of_headers(headers)


_METRICS_MARK = b"amazon-bedrock-invocationMetrics"


def usage_of_stream_event(event: Any) -> Usage | None:
    """The usage a stream event carries: ConverseStream ``metadata``, or the InvokeModelWithResponseStream
    chunk holding ``amazon-bedrock-invocationMetrics`` (only that chunk is parsed)."""
    if not isinstance(event, Mapping):
        return None
    metadata = event.get("metadata")
    if isinstance(metadata, Mapping):
        return usage_of_converse(metadata.get("usage"))
    chunk = event.get("chunk")
    data = chunk.get("bytes") if isinstance(chunk, Mapping) else None
    if not isinstance(data, (bytes, bytearray)) or _METRICS_MARK not in data:
        return None
    try:
        metrics = json.loads(data).get("amazon-bedrock-invocationMetrics")
    except (ValueError, AttributeError, RecursionError):
        return None
    if not isinstance(metrics, Mapping):
        return None
    return Usage(_count(metrics.get("inputTokenCount")), _count(metrics.get("outputTokenCount")),
                 _count(metrics.get("cacheReadInputTokenCount")), _count(metrics.get("cacheWriteInputTokenCount")))

#: Where a streaming call's pending settlement waits in botocore's per-call context for the stream's end.
SETTLEMENT_KEY = "bedrock_hooks_settlement"
