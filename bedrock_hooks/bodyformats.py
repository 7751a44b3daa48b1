"""InvokeModel body formats per model family, as data: a fallback may only move a body within one format.

InvokeModel sends the application's bytes unchanged, and each model family reads its own request
schema and answers with its own response shape. Sending a Titan Text body to Titan Embeddings, a Nova
Lite body to Nova Canvas, or a Claude v2 text-completions prompt to Claude 3 (messages only) either
fails or, worse, answers ``200`` with a shape the application does not expect. So an InvokeModel
fallback goes only to a model of the *same* format, and a model this table does not know never
crosses at all (Converse requests are model-agnostic and are not restricted here).

Embedding models have a format of their own each (``embedding:<model>``): vectors of two embedding
models live in different spaces (and often have different dimensions), so only the same model
(e.g. through an inference profile) is interchangeable.
"""

from __future__ import annotations

import re

#: Geographic prefixes of cross-Region inference profile IDs (``us.anthropic.claude-...``).
GEO_PREFIXES = frozenset({"us", "us-gov", "eu", "apac", "ca", "jp", "au", "global"})

#: (pattern on the foundation-model ID without its profile prefix, body format); first match wins.
#: Patterns are anchored at the start (``re.match``).
BODY_FORMATS: tuple[tuple[str, str], ...] = (
    # Anthropic: Claude v2 / Instant take text completions (``prompt``); Claude 3 and later only messages.
    (r"anthropic\.claude-(v2|instant-)", "anthropic-text-completions"),
    (r"anthropic\.claude-(\d|opus|sonnet|haiku)", "anthropic-messages"),
    # Amazon Titan: text generation, embeddings and image generation are three unrelated schemas.
    (r"amazon\.titan-(text|tg1)-", "titan-text"),
    (r"amazon\.titan-embed-", "embedding"),
    (r"amazon\.titan-image-generator-", "titan-image"),
    # Amazon Nova: the understanding models share the messages-v1 schema; creative models do not.
    (r"amazon\.nova-(2-)?(micro|lite|pro|premier)-", "nova-messages"),
    (r"amazon\.nova-canvas-", "nova-canvas"),
    (r"amazon\.nova-reel-", "nova-reel"),
    (r"amazon\.nova-(2-)?sonic-", "nova-sonic"),
    (r"amazon\.nova-(2-)?multimodal-embeddings-", "embedding"),
    # Meta Llama 2, 3.x and 4 share ``prompt``/``max_gen_len`` -> ``generation``.
    (r"meta\.llama\d", "meta-llama"),
    # Mistral: Large 2 (24.07) and Pixtral take chat messages; the older models text completions.
    (r"mistral\.(mistral-large-2407|pixtral-)", "mistral-chat"),
    (r"mistral\.(mistral-|mixtral-)", "mistral-text-completions"),
    # Cohere: Command (``prompt``) vs Command R (``message``/``chat_history``) vs embeddings and rerank.
    (r"cohere\.command-r", "cohere-command-r"),
    (r"cohere\.command-", "cohere-command"),
    (r"cohere\.embed-", "embedding"),
    (r"cohere\.rerank-", "rerank"),
    # AI21: Jurassic-2 (``prompt``/``maxTokens``) vs Jamba (chat messages).
    (r"ai21\.j2-", "ai21-jurassic"),
    (r"ai21\.jamba-", "ai21-jamba"),
    # Stability: SDXL (``text_prompts`` -> ``artifacts``) vs SD3 / Stable Image (``prompt`` -> ``images``).
    (r"stability\.stable-diffusion-xl-", "stability-sdxl"),
    (r"stability\.(sd3-|stable-image-)", "stability-image"),
)

_COMPILED = tuple((re.compile(pattern), fmt) for pattern, fmt in BODY_FORMATS)
_PER_MODEL = frozenset({"embedding", "rerank"})  #: formats no other model may stand in for


def base_model(model_id: str) -> str:
    """``anthropic.claude-3-haiku-20240307-v1:0`` for ``us.anthropic.claude-3-haiku-20240307-v1:0``."""
    vendor, _, rest = model_id.partition(".")
    return rest if vendor in GEO_PREFIXES and "." in rest else model_id


def body_format(model_id: str) -> str | None:
    """The InvokeModel body format of ``model_id``; None for ARNs and models this table does not know."""
    if not model_id or model_id.startswith("arn:"):
        return None
    model = base_model(model_id).lower()
    for pattern, fmt in _COMPILED:
        if pattern.match(model):
            return f"{fmt}:{model}" if fmt in _PER_MODEL else fmt
    return None


def same_body_format(model_id: str, alternative: str) -> bool:
    """Whether an InvokeModel body for ``model_id`` means the same to ``alternative`` (unknown: never)."""
    fmt = body_format(model_id)
    return fmt is not None and fmt == body_format(alternative)
