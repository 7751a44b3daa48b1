"""Re-issued streams and OpenTelemetry: every span the botocore instrumentation starts is ended.

OpenTelemetry's botocore extension starts a span per ``ConverseStream`` / ``InvokeModelWithResponseStream``
call and ends it only when its stream wrapper sees the end of the stream (or an error, or ``close()``).
A stream the library re-issues is a new call, so it gets a span and a wrapper of its own; the library must
read the new stream *through* that wrapper (not around it) and close the failed one, or the span leaks.
The real ``opentelemetry-sdk`` and ``opentelemetry-instrumentation-botocore`` are used, with an in-memory
exporter and a processor that records every span started.
"""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import EventStreamError

import bedrock_hooks
from _requires import require
from bedrock_hooks.testing import EventFrame, Reply
from conftest import make_client, new_session

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]
THROTTLED = EventFrame.exception("throttlingException", "Too many requests, please wait before trying again.")
UNAVAILABLE = EventFrame.exception("serviceUnavailableException", "Bedrock is unable to process your request.")
ORDERS = ["instrument-then-install", "install-then-instrument", "client-instrument-then-install-client"]


class Spans:
    """Every span started and every span ended, by span id."""

    def __init__(self, sdk_trace) -> None:
        spans = self

        class Recorder(sdk_trace.SpanProcessor):
            def on_start(self, span, parent_context=None) -> None:
                spans.started[span.context.span_id] = span.name

            def on_end(self, span) -> None:
                spans.ended[span.context.span_id] = span

        self.started: dict[int, str] = {}
        self.ended: dict[int, object] = {}
        self.provider = sdk_trace.TracerProvider()
        self.provider.add_span_processor(Recorder())

    def unended(self) -> list[str]:
        return [name for span_id, name in self.started.items() if span_id not in self.ended]


@pytest.fixture
def otel():
    sdk_trace = require("opentelemetry.sdk.trace", group="otel")
    botocore_instrumentation = require("opentelemetry.instrumentation.botocore", group="otel")
    spans = Spans(sdk_trace)
    instrumentor = botocore_instrumentation.BotocoreInstrumentor()

    def instrument() -> None:
        instrumentor.instrument(tracer_provider=spans.provider)

    yield spans, instrument
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def client_in_order(order: str, instrument, server, fake_time):
    session = new_session()
    runtime = fake_time.runtime()
    if order == "instrument-then-install":
        instrument()
        bedrock_hooks.install(session, runtime=runtime)
        return make_client(session, server)
    if order == "install-then-instrument":
        bedrock_hooks.install(session, runtime=runtime)
        instrument()
        return make_client(session, server)
    client = make_client(session, server)
    instrument()
    bedrock_hooks.install(client, runtime=runtime)
    return client


def text_of(events) -> str:
    return "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)


@pytest.mark.parametrize("order", ORDERS)
def test_reissued_converse_stream_ends_every_span(order, otel, server, fake_time):
    spans, instrument = otel
    client = client_in_order(order, instrument, server, fake_time)
    server.script(Reply.stream([THROTTLED]), Reply.stream(EventFrame.converse_text(["Hel", "lo"])))
    response = client.converse_stream(modelId=MODEL, messages=MESSAGES)
    assert text_of(response["stream"]) == "Hello"
    assert len(server.requests) == 2
    assert len(spans.started) == 2  # the application's call and the re-issue
    assert spans.unended() == []


@pytest.mark.parametrize("order", ORDERS)
def test_reissued_invoke_model_stream_ends_every_span(order, otel, server, fake_time):
    spans, instrument = otel
    client = client_in_order(order, instrument, server, fake_time)
    server.script(Reply.stream([UNAVAILABLE]), Reply.stream(EventFrame.anthropic_text(["yo"])))
    response = client.invoke_model_with_response_stream(modelId=MODEL, body=json.dumps({"messages": []}))
    chunks = [json.loads(e["chunk"]["bytes"]) for e in response["body"]]
    assert chunks[-1]["type"] == "message_stop"
    assert len(spans.started) == 2
    assert spans.unended() == []


def test_stream_reissued_twice_ends_the_span_of_each_failed_attempt(otel, server, fake_time):
    spans, instrument = otel
    client = client_in_order("instrument-then-install", instrument, server, fake_time)
    server.script(Reply.stream([EventFrame.reset()]), Reply.stream([THROTTLED]),
                  Reply.stream(EventFrame.converse_text(["fine"])))
    response = client.converse_stream(modelId=MODEL, messages=MESSAGES)
    assert text_of(response["stream"]) == "fine"
    assert len(server.requests) == 3 and len(spans.started) == 3
    assert spans.unended() == []


def test_reissued_stream_that_the_app_closes_early_ends_every_span(otel, server, fake_time):
    spans, instrument = otel
    client = client_in_order("instrument-then-install", instrument, server, fake_time)
    server.script(Reply.stream([THROTTLED]), Reply.stream(EventFrame.converse_text(["a", "b", "c"])))
    stream = client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"]
    for event in stream:
        if "contentBlockDelta" in event:
            break
    stream.close()
    assert len(spans.started) == 2
    assert spans.unended() == []


def test_reissue_that_fails_before_streaming_ends_every_span(otel, server, fake_time):
    spans, instrument = otel
    client = client_in_order("instrument-then-install", instrument, server, fake_time)
    server.script(Reply.stream([THROTTLED]), Reply.validation("Malformed input request, please reformat your input."))
    stream = client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"]
    with pytest.raises(EventStreamError) as raised:  # what the instrumentation's stream wrapper ends its span on
        list(stream)
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert len(spans.started) == 2
    assert spans.unended() == []


def test_spans_without_the_library_are_unchanged(otel, server, fake_time):
    """Baseline: plain botocore under the same instrumentation ends its one span."""
    spans, instrument = otel
    instrument()
    client = make_client(new_session(), server)
    server.script(Reply.stream(EventFrame.converse_text(["plain"])))
    assert text_of(client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"]) == "plain"
    assert len(spans.started) == 1 and spans.unended() == []
