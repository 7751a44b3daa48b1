"""What a model costs against its tokens-per-minute quota, as data: default max output and burndown rate.

Bedrock reserves a request's input plus its ``max_tokens`` (times the burndown rate) from the quota
when the request starts, and settles with the real usage when it ends. A request that sets no
``max_tokens`` reserves the model's *maximum* output: for Claude Sonnet 4 that is 64,000 tokens,
times 5, whatever the answer turns out to be, which is why a few such requests exhaust a quota that
should carry hundreds. The pacer must reserve what Bedrock reserves, so it needs, per model family,
the maximum output Bedrock assumes and the burndown rate of output tokens
(https://docs.aws.amazon.com/bedrock/latest/userguide/quotas-token-burndown.html: 5x for the
Claude 4 family, 1x for every other model). The loopback server's quota
(:mod:`bedrock_hooks.testing.quota`) counts with the same numbers.

The maxima are the models' documented output limits on Bedrock as of 2026; a model this table does
not know gets :data:`UNKNOWN` (a middle value: pacing by it errs both ways, and the learned rate
absorbs the error).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from .bodyformats import base_model


class ModelLimits(NamedTuple):
    """One family's quota arithmetic: ``max_output`` tokens reserved when a request sets none, and the
    factor output tokens count for (``burndown``)."""

    max_output: int
    burndown: float


#: (pattern on the foundation-model ID without its inference-profile prefix, limits); first match wins,
#: ``re.match`` (anchored at the start).
MODEL_LIMITS: tuple[tuple[str, ModelLimits], ...] = (
    # Anthropic: the Claude 4 family (Opus 4/4.1/4.5, Sonnet 4/4.5, Haiku 4.5) burns output at 5x.
    (r"anthropic\.claude-opus-4-5", ModelLimits(64_000, 5.0)),
    (r"anthropic\.claude-opus-4", ModelLimits(32_000, 5.0)),
    (r"anthropic\.claude-(sonnet|haiku)-4", ModelLimits(64_000, 5.0)),
    (r"anthropic\.claude-3-7-sonnet", ModelLimits(64_000, 1.0)),
    (r"anthropic\.claude-3-5-(sonnet|haiku)", ModelLimits(8_192, 1.0)),
    (r"anthropic\.claude-3-", ModelLimits(4_096, 1.0)),
    (r"anthropic\.claude-(v2|instant)", ModelLimits(4_096, 1.0)),
    # Amazon
    (r"amazon\.nova-premier", ModelLimits(32_000, 1.0)),
    (r"amazon\.nova-(2-)?(micro|lite|pro)", ModelLimits(10_000, 1.0)),
    (r"amazon\.titan-(text|tg1)-premier", ModelLimits(3_072, 1.0)),
    (r"amazon\.titan-(text|tg1)-", ModelLimits(8_192, 1.0)),
    (r"amazon\.titan-embed-", ModelLimits(0, 1.0)),
    # Meta, Mistral, Cohere, AI21, DeepSeek, OpenAI open-weight models
    (r"meta\.llama", ModelLimits(2_048, 1.0)),
    (r"mistral\.", ModelLimits(8_192, 1.0)),
    (r"cohere\.embed-|cohere\.rerank-", ModelLimits(0, 1.0)),
    (r"cohere\.command", ModelLimits(4_096, 1.0)),
    (r"ai21\.jamba", ModelLimits(4_096, 1.0)),
    (r"ai21\.j2-", ModelLimits(8_191, 1.0)),
    (r"deepseek\.", ModelLimits(32_768, 1.0)),
    (r"openai\.gpt-oss", ModelLimits(32_768, 1.0)),
)

#: A model the table does not know (or an ARN): a middle value.
UNKNOWN = ModelLimits(4_096, 1.0)

_COMPILED = tuple((re.compile(pattern), limits) for pattern, limits in MODEL_LIMITS)


@lru_cache(maxsize=512)
def limits_of(model_id: str) -> ModelLimits:
    """The quota arithmetic of ``model_id`` (an inference profile counts as its foundation model)."""
    if model_id.startswith("arn:"):  # a system inference profile's ARN ends in its ID; a custom ARN in none
        model_id = model_id.rsplit("/", 1)[-1] if "/" in model_id else ""
    if not model_id:
        return UNKNOWN
    model = base_model(model_id).lower()
    for pattern, limits in _COMPILED:
        if pattern.match(model):
            return limits
    return UNKNOWN
