"""Span events (issue 15): on the span OpenTelemetry's botocore instrumentation makes for each call.

The real ``opentelemetry-sdk`` (in-memory span exporter) and ``opentelemetry-instrumentation-botocore``,
installed before and after the library, against the loopback server. The library starts no span: it adds
events to the call's span and attributes to it on a final failure, and every span still ends.
"""

from __future__ import annotations

import re

import pytest
from botocore.exceptions import ClientError, EventStreamError

import bedrock_hooks
from _requires import require, require_that
from bedrock_hooks import telemetry
from bedrock_hooks.testing import EventFrame, Reply
from conftest import converse, make_client, new_session

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
ALT = "amazon.nova-pro-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]
ORDERS = ["instrument-then-install", "install-then-instrument", "client-instrument-then-install-client"]
THROTTLED = EventFrame.exception("throttlingException", "Too many requests, please wait before trying again.")


class Tracing:
    def __init__(self) -> None:
        sdk_trace = require("opentelemetry.sdk.trace", group="otel")
        export = require("opentelemetry.sdk.trace.export", group="otel")
        in_memory = require("opentelemetry.sdk.trace.export.in_memory_span_exporter", group="otel")
        instrumentation = require("opentelemetry.instrumentation.botocore", group="otel")
        self.exporter = in_memory.InMemorySpanExporter()
        self.started: list[int] = []
        started = self.started

        class Recorder(sdk_trace.SpanProcessor):
            def on_start(self, span, parent_context=None) -> None:
                started.append(span.context.span_id)

        self.provider = sdk_trace.TracerProvider()
        self.provider.add_span_processor(Recorder())
        self.provider.add_span_processor(export.SimpleSpanProcessor(self.exporter))
        self.instrumentor = instrumentation.BotocoreInstrumentor()

    def instrument(self) -> None:
        self.instrumentor.instrument(tracer_provider=self.provider)

    def spans(self) -> list:
        """Ended spans, in the order they started."""
        ended = {span.context.span_id: span for span in self.exporter.get_finished_spans()}
        assert set(self.started) == set(ended), "a span was left open"
        return [ended[span_id] for span_id in self.started]


@pytest.fixture
def tracing():
    tracing = Tracing()
    yield tracing
    if tracing.instrumentor.is_instrumented_by_opentelemetry:
        tracing.instrumentor.uninstrument()


def client_in_order(order: str, tracing: Tracing, server, fake_time, **settings):
    session = new_session()
    runtime = fake_time.runtime()
    if order == "instrument-then-install":
        tracing.instrument()
        bedrock_hooks.install(session, runtime=runtime, **settings)
        return make_client(session, server)
    if order == "install-then-instrument":
        bedrock_hooks.install(session, runtime=runtime, **settings)
        tracing.instrument()
        return make_client(session, server)
    client = make_client(session, server)
    tracing.instrument()
    bedrock_hooks.install(client, runtime=runtime, **settings)
    return client


def skip_unless_streams_are_traced() -> None:
    """opentelemetry-instrumentation-botocore before 0.55b0 ends a stream call's span when the call returns,
    before the stream is read: events from reading it cannot be added to it (the README's tested range)."""
    from opentelemetry.instrumentation.botocore.version import __version__

    major, minor = (int("".join(c for c in part if c.isdigit()) or 0) for part in re.split(r"[.b]", __version__)[:2])
    too_old = f"opentelemetry-instrumentation-botocore {__version__} ends stream spans before the stream is read"
    require_that(too_old if (major, minor) < (0, 55) else None, group="otel")


def events(span, name: str = telemetry.DECISION_EVENT) -> list[dict]:
    return [dict(event.attributes) for event in span.events if event.name == name]


@pytest.mark.parametrize("order", ORDERS)
def test_a_retry_is_an_event_on_the_calls_span(order, tracing, server, fake_time):
    client = client_in_order(order, tracing, server, fake_time)
    server.script(Reply.throttling())
    converse(client)
    (span,) = tracing.spans()
    assert events(span) == [{telemetry.SERVICE: "bedrock-runtime", telemetry.OPERATION: "Converse",
                             telemetry.MODEL: MODEL, telemetry.ENTRY: "ThrottlingException",
                             telemetry.DECISION: "retry", telemetry.REASON: "backoff", telemetry.ACTION: "retry",
                             telemetry.ATTEMPT: 1, telemetry.WAIT_S: fake_time.sleeps[0]}]
    assert telemetry.ENTRY not in span.attributes  # it succeeded: no failure attributes


@pytest.mark.parametrize("order", ORDERS)
def test_a_final_failure_sets_attributes_on_the_calls_span(order, tracing, server, fake_time):
    client = client_in_order(order, tracing, server, fake_time)
    server.script(Reply.service_unavailable(), Reply.throttling("Too many tokens per day, please wait before trying "
                                                                "again."))
    with pytest.raises(ClientError):
        converse(client)
    (span,) = tracing.spans()
    assert [(e[telemetry.ENTRY], e[telemetry.ACTION], e[telemetry.ATTEMPT]) for e in events(span)] == [
        ("ServiceUnavailable", "retry", 1), ("DailyTokenQuotaExceeded", "stop", 2)]
    failure = {key: span.attributes.get(key) for key in (telemetry.ENTRY, telemetry.DECISION, telemetry.REASON,
                                                         telemetry.ATTEMPT, telemetry.RETRYABLE, telemetry.MODEL)}
    assert failure == {telemetry.ENTRY: "DailyTokenQuotaExceeded", telemetry.DECISION: "fail",
                       telemetry.REASON: "fail", telemetry.ATTEMPT: 2, telemetry.RETRYABLE: False,
                       telemetry.MODEL: MODEL}


def test_a_fallback_is_an_event_on_the_calls_span(tracing, server, fake_time):
    client = client_in_order("instrument-then-install", tracing, server, fake_time, fallbacks={MODEL: [ALT]})
    server.script(Reply.error(404, "ResourceNotFoundException", "This model version has reached the end of its life."))
    converse(client)
    (span,) = tracing.spans()
    (moved,) = events(span, telemetry.FALLBACK_EVENT)
    assert (moved[telemetry.FROM_MODEL], moved[telemetry.TO_MODEL], moved[telemetry.FALLBACK_KIND],
            moved[telemetry.REASON]) == (MODEL, ALT, "model", "ModelEndOfLife")
    assert [e[telemetry.ACTION] for e in events(span)] == ["stop"]  # the stop the fallback turned into a move


@pytest.mark.parametrize("order", ORDERS)
def test_a_reissued_stream_puts_its_events_on_the_failed_calls_span_and_ends_every_span(order, tracing, server,
                                                                                       fake_time):
    client = client_in_order(order, tracing, server, fake_time)
    skip_unless_streams_are_traced()
    server.script(Reply.stream([THROTTLED]), Reply.stream(EventFrame.converse_text(["Hel", "lo"])))
    response = client.converse_stream(modelId=MODEL, messages=MESSAGES)
    assert [e for e in response["stream"] if "contentBlockDelta" in e]
    first, second = tracing.spans()  # both ended (Tracing.spans checks)
    assert [(e[telemetry.OPERATION], e[telemetry.ENTRY], e[telemetry.ACTION]) for e in events(first)] == [
        ("ConverseStream", "ThrottlingException", "retry")]
    (reissued,) = events(first, telemetry.REISSUE_EVENT)
    assert reissued[telemetry.MODEL] == MODEL
    assert second.events == ()  # the re-issue succeeded: nothing happened to it


def test_a_stream_failing_after_content_sets_failure_attributes_on_its_span(tracing, server, fake_time):
    skip_unless_streams_are_traced()
    client = client_in_order("instrument-then-install", tracing, server, fake_time)
    server.script(Reply.stream([*EventFrame.converse_text(["partial"])[:3], THROTTLED]))
    stream = client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"]
    with pytest.raises(EventStreamError):
        list(stream)
    (span,) = tracing.spans()
    assert span.attributes[telemetry.ENTRY] == "ThrottlingException"
    assert span.attributes[telemetry.REASON] == "content-delivered"


def test_no_span_no_events_and_no_error(server, fake_time, caplog):
    """Without instrumentation the current span is the API's invalid span: nothing is added, nothing fails."""
    require("opentelemetry.trace", group="otel")
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    server.script(Reply.throttling())
    converse(client)
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]
