"""Telemetry of REAL aiobotocore clients (issue 15 with issue 13): the same span events and metrics as sync clients.

OpenTelemetry's ``AiobotocoreInstrumentor`` starts the call's span in the task that awaits the call; the library
reads it from ``contextvars`` while aiobotocore awaits its handlers, so each task's decisions land on its own
call's span, in both install orders.
"""

from __future__ import annotations

import asyncio

import pytest
from botocore.exceptions import ClientError

import bedrock_hooks
from _aio import MODEL, aconverse, aio_botocore_time, aio_client, aiobotocore_session  # noqa: F401 (fixture)
from _requires import require
from bedrock_hooks import telemetry
from bedrock_hooks.testing import Reply
from test_telemetry import Metrics, _child, metrics  # noqa: F401 (fixture)


@pytest.fixture
def aio_tracing():
    sdk_trace = require("opentelemetry.sdk.trace", group="otel")
    export = require("opentelemetry.sdk.trace.export", group="otel")
    in_memory = require("opentelemetry.sdk.trace.export.in_memory_span_exporter", group="otel")
    instrumentation = require("opentelemetry.instrumentation.botocore", group="otel")
    require("aiobotocore", group="aio")
    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    instrumentor = instrumentation.AiobotocoreInstrumentor()
    yield exporter, lambda: instrumentor.instrument(tracer_provider=provider)
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


@pytest.mark.parametrize("order", ["instrument-then-install", "install-then-instrument"])
def test_concurrent_async_calls_put_each_decision_on_their_own_span(order, aio_tracing, metrics, server, fake_time):
    exporter, instrument = aio_tracing

    async def scenario():
        session = aiobotocore_session()
        if order == "instrument-then-install":
            instrument()
        bedrock_hooks.install(session, runtime=fake_time.runtime())
        if order == "install-then-instrument":
            instrument()
        async with aio_client(session, server) as client:
            server.handler = answers  # per task, whatever order the tasks' requests arrive in
            return await asyncio.gather(aconverse(client, text="retried"), aconverse(client, text="refused"),
                                        return_exceptions=True)

    throttled = []

    def answers(request):
        if b"refused" in request.body:
            return Reply.throttling("Too many tokens per day, please wait before trying again.")
        if not throttled:
            throttled.append(request)
            return Reply.throttling()
        return None

    results = asyncio.run(scenario())
    assert sorted(type(r).__name__ for r in results) == ["ThrottlingException", "dict"]
    spans = exporter.get_finished_spans()
    assert len(spans) == 2
    by_outcome = {}
    for span in spans:
        decisions = [dict(e.attributes) for e in span.events if e.name == telemetry.DECISION_EVENT]
        assert len(decisions) == 1  # each task's decision is on its own span
        by_outcome[decisions[0][telemetry.ENTRY]] = (span, decisions[0])
    ok_span, retried = by_outcome["ThrottlingException"]
    failed_span, stopped = by_outcome["DailyTokenQuotaExceeded"]
    assert retried[telemetry.ACTION] == "retry" and stopped[telemetry.ACTION] == "stop"
    assert telemetry.ENTRY not in ok_span.attributes
    assert failed_span.attributes[telemetry.ENTRY] == "DailyTokenQuotaExceeded"
    assert metrics.total("bedrock_hooks.decisions") == 2
    assert metrics.total("bedrock_hooks.calls", outcome="recovered") == 1
    assert metrics.total("bedrock_hooks.calls", outcome="failed") == 1
    assert metrics.total("bedrock_hooks.wait.duration", kind="backoff") == 1


def test_async_final_failure_is_logged_once(server, fake_time, caplog):
    import logging

    async def scenario():
        session = aiobotocore_session()
        bedrock_hooks.install(session, runtime=fake_time.runtime())
        async with aio_client(session, server) as client:
            server.script(Reply.validation("Malformed input request, please reformat your input."))
            with pytest.raises(ClientError):
                await aconverse(client)

    with caplog.at_level(logging.INFO, logger="bedrock_hooks"):
        asyncio.run(scenario())
    records = [(r.levelname, vars(r).get("bedrock_hooks.event")) for r in caplog.records
               if r.name == "bedrock_hooks.decisions"]
    assert records == [("INFO", "decision"), ("WARNING", "final_failure")]


def test_an_async_remedy_that_fails_is_a_second_decision_stop(metrics, server, fake_time, caplog):
    """The async remedy runs after the decision (awaited before the retry): when it fails the retry is taken
    back, and that is a decision too: a stop, `remedy-unavailable`, logged like every other."""
    require("aiobotocore.credentials", group="aio")
    import logging

    from test_aio_retry import AsyncProvider, failing_refresh_call

    with caplog.at_level(logging.INFO, logger="bedrock_hooks"):
        failing_refresh_call(server, fake_time, AsyncProvider(fail=True))
    assert metrics.total("bedrock_hooks.decisions", entry="ExpiredToken", reason="remedy", action="retry") == 1
    assert metrics.total("bedrock_hooks.decisions", entry="ExpiredToken", reason="remedy-unavailable",
                         action="stop", operation="Converse", model=MODEL) == 1
    assert metrics.total("bedrock_hooks.calls", outcome="failed", reason="remedy-unavailable") == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "bedrock_hooks.decisions"]
    assert "bedrock-hooks: Converse: ExpiredToken -> stop after attempt 1 (remedy-unavailable)" in lines


def test_an_async_stream_reissue_is_counted_and_its_ended_span_is_left_alone(aio_tracing, metrics, server, fake_time,
                                                                            caplog):
    """aiobotocore streams are re-issued too (issue 13). OpenTelemetry 0.66b2 ends an aiobotocore stream call's
    span when the call returns (no Bedrock extension for aiobotocore), so the stream's decisions are metrics and
    log lines only: nothing is added to the ended span, and nothing fails."""
    from test_aio_streams import ANSWER, THROTTLED, read_all

    exporter, instrument = aio_tracing
    instrument()
    server.script(Reply.stream([THROTTLED]), Reply.stream(ANSWER))
    events = read_all(server, fake_time.runtime())
    assert [e for e in events if "contentBlockDelta" in e]
    assert metrics.total("bedrock_hooks.streams.reissued", operation="ConverseStream", model=MODEL) == 1
    assert metrics.total("bedrock_hooks.decisions", operation="ConverseStream", action="retry") == 1
    assert metrics.total("bedrock_hooks.calls", operation="ConverseStream", outcome="recovered") == 1
    spans = exporter.get_finished_spans()
    assert len(spans) == 2 and all(not span.events for span in spans)
    assert not [r for r in caplog.records if "internal error" in r.getMessage() or "ended span" in r.getMessage()]


def test_an_async_client_imports_opentelemetry_when_attached_not_in_its_first_retry():
    """Regression: the OpenTelemetry import (about 8 ms) ran inside the first retry decision of an aiobotocore
    client, one callback of the event loop: an 11 ms stall where plain aiobotocore's was 3 ms
    (bench/aio_storm.py). Now it runs when the hooks are attached."""
    require("aiobotocore.session", group="aio")
    require("opentelemetry.metrics", group="otel")
    done = _child("""
        import asyncio, sys
        import bedrock_hooks
        from aiobotocore.session import get_session

        async def main():
            async with get_session().create_client("bedrock-runtime", region_name="us-east-1",
                                                   endpoint_url="http://127.0.0.1:9", aws_access_key_id="a",
                                                   aws_secret_access_key="b") as client:
                before = "opentelemetry.metrics" in sys.modules
                bedrock_hooks.install(client)
                print(before, "opentelemetry.metrics" in sys.modules)

        asyncio.run(main())
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]
