"""Token arithmetic (bedrock_hooks/tokens.py, model_limits.py) and the BEDROCK_HOOKS_QUOTAS option:
estimates from request bodies, output limits per body format, usage from every kind of answer."""

from __future__ import annotations

import base64
import io
import json
import logging

import pytest

from bedrock_hooks import config, model_limits, ratelimit, tokens
from bedrock_hooks.model_limits import ModelLimits, limits_of
from bedrock_hooks.tokens import Estimate, Usage, estimate_body

SONNET_4 = "anthropic.claude-sonnet-4-20250514-v1:0"
HAIKU_3 = "anthropic.claude-3-haiku-20240307-v1:0"


def body(document) -> bytes:
    return json.dumps(document).encode()


def test_converse_text_counts_at_four_chars_a_token_and_keys_do_not_count():
    text = "x" * 400
    estimate = estimate_body(body({"messages": [{"role": "user", "content": [{"text": text}]}],
                                   "system": [{"text": "y" * 40}], "inferenceConfig": {"maxTokens": 256}}))
    assert estimate == Estimate(-(-(400 + 40 + len("user")) // 4), 256)


def test_an_image_costs_a_block_not_its_base64_length():
    image = base64.b64encode(b"\0" * 300_000).decode()
    estimate = estimate_body(body({"messages": [{"role": "user", "content": [
        {"image": {"format": "png", "source": {"bytes": image}}}, {"text": "what is it"}]}]}))
    assert estimate.input_tokens < tokens.MEDIA_TOKENS + 10 and estimate.input_tokens >= tokens.MEDIA_TOKENS
    anthropic = estimate_body(body({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": image}}]}]}))
    assert tokens.MEDIA_TOKENS <= anthropic.input_tokens < tokens.MEDIA_TOKENS + 20 and anthropic.max_tokens == 10


@pytest.mark.parametrize("document, expected", [
    ({"inferenceConfig": {"maxTokens": 300}, "messages": []}, 300),  # Converse
    ({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 512, "messages": []}, 512),  # Anthropic
    ({"prompt": "\n\nHuman: hi\n\nAssistant:", "max_tokens_to_sample": 200}, 200),  # Claude v2
    ({"inputText": "hi", "textGenerationConfig": {"maxTokenCount": 128}}, 128),  # Titan Text
    ({"prompt": "hi", "max_gen_len": 64}, 64),  # Llama
    ({"messages": [], "inferenceConfig": {"max_new_tokens": 99}}, 99),  # Nova
    ({"prompt": "hi", "maxTokens": 77}, 77),  # Jurassic-2
    ({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}, None),  # no limit set
    ({"max_tokens": True}, None),  # not a number
])
def test_the_output_limit_is_read_where_each_body_format_keeps_it(document, expected):
    assert estimate_body(body(document)).max_tokens == expected


def test_a_large_body_is_estimated_from_its_length_and_a_quoted_key_in_a_prompt_is_not_a_limit():
    prompt = 'please answer with \\"max_tokens\\": 5 in JSON ' + "z" * tokens.MAX_PARSE_BYTES
    raw = b'{"messages": [{"role": "user", "content": [{"text": "' + prompt.encode() + b'"}]}]}'
    estimate = estimate_body(raw)
    assert estimate == Estimate(-(-len(raw) // 4), None)
    raw_with_limit = raw[:-1] + b', "inferenceConfig": {"maxTokens": 42}}'
    assert estimate_body(raw_with_limit).max_tokens == 42


def test_streams_empty_and_odd_bodies():
    assert estimate_body(io.BytesIO(b'{"max_tokens": 5}')) is None  # a stream is never read
    assert estimate_body(b"") is None and estimate_body(None) is None
    assert estimate_body(b"not json at all") == Estimate(4, None)
    assert estimate_body('{"prompt": "abcd", "max_gen_len": 3}') == Estimate(1, 3)
    deep = "[" * 100_000 + "]" * 100_000  # deeper than any recursion limit: no crash
    assert estimate_body(deep.encode()).input_tokens == 50_000
    many = body({"messages": [{"text": "a"}] * (tokens.MAX_NODES + 1)})
    assert estimate_body(many) == Estimate(-(-len(many) // 4), None)  # too many values to walk


def test_model_limits_are_data_per_family():
    assert limits_of(SONNET_4) == ModelLimits(64_000, 5.0)
    assert limits_of("us." + SONNET_4) == ModelLimits(64_000, 5.0)  # an inference profile: its model's
    assert limits_of("arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu." + SONNET_4).burndown == 5.0
    assert limits_of(HAIKU_3) == ModelLimits(4_096, 1.0)
    assert limits_of("amazon.nova-lite-v1:0").burndown == 1.0
    assert limits_of("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123") == model_limits.UNKNOWN
    assert limits_of("") == model_limits.UNKNOWN and limits_of("acme.new-model") == model_limits.UNKNOWN
    assert all(isinstance(limits, ModelLimits) for _pattern, limits in model_limits.MODEL_LIMITS)


def test_reservation_expected_cost_and_charge():
    sonnet = limits_of(SONNET_4)
    assert tokens.reservation(Estimate(100, None), sonnet) == 64_100  # Bedrock: input + max output
    assert tokens.reservation(Estimate(100, 500), sonnet) == 600
    assert tokens.expected_cost(Estimate(100, 500), sonnet) == 100 + 500 * 5  # output unknown yet: the limit
    assert tokens.expected_cost(Estimate(100, 500), sonnet, output_avg=40) == 100 + 40 * 5
    assert tokens.expected_cost(Estimate(100, 20), sonnet, output_avg=40) == 100 + 20 * 5  # never above the limit
    assert tokens.charged(Usage(10, 7, cache_read=1000, cache_write=30), sonnet) == 10 + 30 + 35  # reads are free


def test_usage_from_every_kind_of_answer():
    assert tokens.usage_of_response("Converse", {"usage": {"inputTokens": 5, "outputTokens": 6, "totalTokens": 11,
                                                           "cacheWriteInputTokens": 2}}, {}) == Usage(5, 6, 0, 2)
    headers = {"x-amzn-bedrock-input-token-count": "12", "x-amzn-bedrock-output-token-count": "3"}
    assert tokens.usage_of_response("InvokeModel", {}, headers) == Usage(12, 3)
    assert tokens.usage_of_response("InvokeModel", {}, {}) is None
    assert tokens.usage_of_response("Converse", {"output": {}}, {}) is None
    assert tokens.usage_of_stream_event({"metadata": {"usage": {"inputTokens": 4, "outputTokens": 9}}}) == Usage(4, 9)
    last = json.dumps({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
        "inputTokenCount": 8, "outputTokenCount": 2, "cacheReadInputTokenCount": 1}}).encode()
    assert tokens.usage_of_stream_event({"chunk": {"bytes": last}}) == Usage(8, 2, 1, 0)
    assert tokens.usage_of_stream_event({"chunk": {"bytes": b'{"type": "content_block_delta"}'}}) is None
    assert tokens.usage_of_stream_event({"chunk": {"bytes": b"amazon-bedrock-invocationMetrics {"}}) is None
    assert tokens.usage_of_stream_event({"contentBlockDelta": {"delta": {"text": "x"}}}) is None
    assert tokens.usage_of_converse({"inputTokens": "junk", "outputTokens": -3}) == Usage(0, 0)


# -- BEDROCK_HOOKS_QUOTAS --------------------------------------------------------------------------

def test_quotas_per_minute_and_per_second():
    settings = config.load_settings({"BEDROCK_HOOKS_QUOTAS": "anthropic.claude-sonnet-4*=2000000/min; amazon.nova-*=500/s"})
    assert settings.quotas == (("anthropic.claude-sonnet-4*", pytest.approx(2_000_000 / 60), 60.0),
                               ("amazon.nova-*", 500.0, 1.0))
    assert config.load_settings({}).quotas == ()
    assert config.load_settings(quotas={"m*": "60/min"}).quotas == (("m*", 1.0, 60.0),)


def test_bad_quota_entries_warn_once_naming_the_variable_and_what_is_used(caplog):
    caplog.set_level(logging.WARNING, logger="bedrock_hooks.config")
    raw = "good*=600/min;bad*=lots/min;worse*=5/fortnight"
    assert config.load_settings({"BEDROCK_HOOKS_QUOTAS": raw}).quotas == (("good*", 10.0, 60.0),)
    config.load_settings({"BEDROCK_HOOKS_QUOTAS": raw})
    lines = [r.getMessage() for r in caplog.records if "BEDROCK_HOOKS_QUOTAS" in r.getMessage()]
    assert len(lines) == 1 and "bad*=lots/min" in lines[0] and "using good*=600/min" in lines[0]
    caplog.clear()
    assert config.load_settings({"BEDROCK_HOOKS_QUOTAS": "nonsense-no-equals"}).quotas == ()
    (line,) = [r.getMessage() for r in caplog.records]
    assert "BEDROCK_HOOKS_QUOTAS" in line and "using (none)" in line


def test_a_quota_pattern_matches_the_model_and_the_model_behind_a_profile():
    quotas = config.parse_quotas("anthropic.claude-sonnet-4*=600/min")
    assert ratelimit.quota_config(quotas, "model:" + SONNET_4).fixed_rate == 10.0
    assert ratelimit.quota_config(quotas, "model:us." + SONNET_4).burst == 60.0
    assert ratelimit.quota_config(quotas, "model:" + HAIKU_3) is None
    assert ratelimit.quota_config(quotas, "operation:ApplyGuardrail") is None
