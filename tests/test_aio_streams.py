"""Streams on aiobotocore clients (issue 13): the same decisions as botocore's, read with ``async for``.

A ConverseStream / InvokeModelWithResponseStream answered ``200`` can still fail while the application
iterates: an exception frame (``throttlingException``...), a TCP reset (aiohttp's ``ClientPayloadError``) or
a stall longer than the read timeout (aiohttp's ``SocketTimeoutError``). Before any content the stream is
re-issued transparently (the backoff awaits ``Runtime.async_sleep``, the re-issue awaits the async client);
after content the error is raised with its hint. What was delivered belongs to the stream, so two loops,
``anext(aiter(stream))``, two tasks or a loop after a raise never see an event twice. Real aiobotocore
clients against the loopback server; the group ``aio`` environment runs them (``.ci/envs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from botocore.exceptions import EventStreamError

import bedrock_hooks
from _aio import MESSAGES, MODEL, aio_botocore_time, aio_client, aiobotocore_session  # noqa: F401 (fixture)
from _requires import require
from bedrock_hooks.testing import EventFrame, Reply
from test_stream_otel import Spans

THROTTLED = EventFrame.exception("throttlingException", "Too many requests, please wait before trying again.")
ANSWER = EventFrame.converse_text(["Hel", "lo"])
#: Retryable exception frames Bedrock sends mid-stream, and the catalog entry each is.
FRAMES = [
    ("throttlingException", "ThrottlingException"),
    ("modelStreamErrorException", "ModelStreamErrorException"),
    ("internalServerException", "InternalFailure"),
    ("serviceUnavailableException", "ServiceUnavailable"),
]
REPO = Path(__file__).resolve().parents[1]


@contextlib.asynccontextmanager
async def hooked(server, runtime=None, *, max_attempts: int | None = None, **config):
    """An aiobotocore client pointed at ``server``, with the library installed on it unless ``runtime`` is None
    (then plain aiobotocore, the baseline)."""
    if max_attempts is not None:
        config["retries"] = {"total_max_attempts": max_attempts}
    async with aio_client(aiobotocore_session(), server, **config) as client:
        if runtime is not None:
            bedrock_hooks.install(client, runtime=runtime)
        yield client


def run(coroutine):
    return asyncio.run(coroutine)


async def open_stream(client):
    return (await client.converse_stream(modelId=MODEL, messages=MESSAGES))["stream"]


async def collect(stream, seen: list | None = None) -> list:
    seen = [] if seen is None else seen
    async for event in stream:
        seen.append(event)
    return seen


def read_all(server, runtime, **config) -> list:
    """Every event of one ConverseStream on a new client (``config``: :func:`aio_client`'s keywords)."""
    async def scenario():
        async with hooked(server, runtime, **config) as client:
            return await collect(await open_stream(client))

    return run(scenario())


def error_reading(server, runtime, expected: type[BaseException], *, read=collect, seen: list | None = None,
                  **config) -> BaseException:
    """What reading one ConverseStream with ``read`` raised (it must raise ``expected``)."""
    async def scenario():
        async with hooked(server, runtime, **config) as client:
            with pytest.raises(expected) as raised:
                await read(await open_stream(client), [] if seen is None else seen)
            return raised.value

    return run(scenario())


def kind(event) -> str:
    return next(iter(event))


def text_of(events) -> str:
    return "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)


# -- before content: one clean stream ------------------------------------------------------------------

@pytest.mark.parametrize("frame,entry", FRAMES)
def test_exception_frame_before_content_is_reissued_into_one_clean_stream(frame, entry, server, fake_time):
    require("aiobotocore.eventstream", group="aio")
    from aiobotocore.eventstream import AioEventStream

    async def scenario():
        async with hooked(server, fake_time.runtime()) as client:
            response = await client.converse_stream(modelId=MODEL, messages=MESSAGES)
            assert isinstance(response["stream"], AioEventStream)
            return response, await collect(response["stream"])

    server.script(Reply.stream(ANSWER[:1] + [EventFrame.exception(frame, "boom")]), Reply.stream(ANSWER))
    response, events = run(scenario())
    assert text_of(events) == "Hello"
    assert [kind(e) for e in events].count("messageStart") == 1
    assert len(server.requests) == 2
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert len(fake_time.sleeps) == 1 and fake_time.sleeps[0] > 0  # the backoff was awaited, not slept


def test_reset_before_content_is_reissued_at_once_on_a_new_connection(server, fake_time):
    server.script(Reply.stream([EventFrame.reset()]), Reply.stream(ANSWER))
    assert text_of(read_all(server, fake_time.runtime())) == "Hello"
    assert fake_time.sleeps == []  # a reset: the first retry is immediate
    assert server.requests[0].connection_id != server.requests[1].connection_id


def test_stall_before_content_is_reissued(server, fake_time):
    server.script(Reply.stream([EventFrame.stall(0.6)] + ANSWER), Reply.stream(ANSWER))
    assert text_of(read_all(server, fake_time.runtime(), read_timeout=0.2)) == "Hello"
    assert len(server.requests) == 2


def test_invoke_model_stream_recovers_before_the_first_chunk(server, fake_time):
    async def scenario():
        async with hooked(server, fake_time.runtime()) as client:
            response = await client.invoke_model_with_response_stream(modelId=MODEL, body=json.dumps({}))
            return [json.loads(e["chunk"]["bytes"])["type"] async for e in response["body"]]

    answer = EventFrame.anthropic_text(["yo"])
    server.script(Reply.stream([EventFrame.exception("serviceUnavailableException", "Bedrock is unable to process.")]),
                  Reply.stream(answer))
    types = run(scenario())
    assert types[0] == "message_start" and types.count("message_start") == 1 and types[-1] == "message_stop"
    assert len(server.requests) == 2


def test_recovery_is_bounded_by_the_attempt_budget(server, fake_time):
    server.default = Reply.stream([THROTTLED])
    error = error_reading(server, fake_time.runtime(), EventStreamError, max_attempts=3)
    assert len(server.requests) == 3
    assert error.response["BedrockHooks"]["stopped_because"] == "max-attempts"
    assert error.response["BedrockHooks"]["attempts"] == 3


def test_reissue_failing_before_streaming_raises_what_iterating_a_stream_raises(server, fake_time):
    server.script(Reply.stream([THROTTLED]), Reply.validation("Malformed input request, please reformat your input."))
    error = error_reading(server, fake_time.runtime(), EventStreamError)
    assert error.response["Error"]["Code"] == "ValidationException"
    assert error.response["BedrockHooks"]["entry"] == "ValidationError"
    assert len(server.requests) == 2


@pytest.mark.parametrize("switch", ["BEDROCK_HOOKS_STREAM_RETRY", "BEDROCK_HOOKS_RETRY"])
def test_stream_retry_off_does_not_reissue_but_still_hints(switch, server, fake_time, monkeypatch):
    monkeypatch.setenv(switch, "off")
    server.script(Reply.stream([THROTTLED]))
    assert error_reading(server, fake_time.runtime(), EventStreamError).response["BedrockHooks"]["stopped_because"] == "not-recoverable"
    assert len(server.requests) == 1


# -- after content: raised with a hint, never re-issued ------------------------------------------------

@pytest.mark.parametrize("frame,entry", FRAMES)
def test_exception_frame_after_content_is_raised_with_a_hint(frame, entry, server, fake_time):
    seen: list = []
    server.script(Reply.stream(EventFrame.converse_text(["partial"])[:2] + [EventFrame.exception(frame, "boom")]),
                  Reply.stream(ANSWER))
    error = error_reading(server, fake_time.runtime(), EventStreamError, seen=seen)
    assert text_of(seen) == "partial"
    assert len(server.requests) == 1
    info = error.response["BedrockHooks"]
    assert info["entry"] == entry and info["stopped_because"] == "content-delivered"
    assert str(error).splitlines()[-1].startswith(f"[bedrock-hooks] {entry}")


def test_reset_after_content_raises_aiohttps_error_with_a_hint(server, fake_time):
    require("aiobotocore.eventstream", group="aio")
    import aiohttp

    server.script(Reply.stream(ANSWER[:2] + [EventFrame.reset()]), Reply.stream(ANSWER))
    error = error_reading(server, fake_time.runtime(), aiohttp.ClientPayloadError)
    assert error.bedrock_hooks["entry"] == "IdleConnectionReset"
    assert error.bedrock_hooks["stopped_because"] == "content-delivered"
    assert len(server.requests) == 1


def test_stall_after_content_says_which_timeout_fired(server, fake_time):
    server.script(Reply.stream(ANSWER[:2] + [EventFrame.stall(0.6)] + ANSWER[2:]))
    error = error_reading(server, fake_time.runtime(), TimeoutError, read_timeout=0.2)  # aiohttp's SocketTimeoutError
    assert error.bedrock_hooks["entry"] == "ReadTimeout"
    assert "Config(read_timeout=0.2)" in str(error)


# -- re-iteration: what was delivered belongs to the stream ------------------------------------------

async def first_token_then_rest(stream, seen: list) -> None:
    async for event in stream:
        seen.append(event)
        if "contentBlockDelta" in event:
            break
    async for event in stream:
        seen.append(event)


def test_failure_in_the_second_loop_is_not_reissued_after_the_first_loop_delivered_text(server, fake_time):
    seen: list = []
    server.script(Reply.stream(ANSWER[:2] + [THROTTLED]), Reply.stream(ANSWER))
    error = error_reading(server, fake_time.runtime(), EventStreamError, read=first_token_then_rest, seen=seen)
    assert text_of(seen) == "Hel"  # never "HelHello"
    assert len(server.requests) == 1
    assert error.response["BedrockHooks"]["stopped_because"] == "content-delivered"


def test_anext_then_a_loop_share_what_was_delivered(server, fake_time):
    async def scenario():
        async with hooked(server, fake_time.runtime()) as client:
            stream = await open_stream(client)
            seen = [await anext(aiter(stream)), await anext(aiter(stream))]
            with pytest.raises(EventStreamError):
                await collect(stream, seen)
            return seen

    server.script(Reply.stream(ANSWER[:2] + [THROTTLED]), Reply.stream(ANSWER))
    seen = run(scenario())
    assert [kind(e) for e in seen] == ["messageStart", "contentBlockDelta"]
    assert len(server.requests) == 1


def test_preamble_seen_by_anext_is_not_repeated_by_a_recovery_in_the_loop(server, fake_time):
    async def scenario():
        async with hooked(server, fake_time.runtime()) as client:
            stream = await open_stream(client)
            return await collect(stream, [await anext(aiter(stream))])

    server.script(Reply.stream(ANSWER[:1] + [THROTTLED]), Reply.stream(ANSWER))
    seen = run(scenario())
    assert [kind(e) for e in seen].count("messageStart") == 1
    assert text_of(seen) == "Hello"
    assert len(server.requests) == 2


def test_a_stream_that_already_raised_is_never_reissued_by_a_later_loop(server, fake_time):
    async def scenario():
        async with hooked(server, fake_time.runtime()) as client:
            stream = await open_stream(client)
            with pytest.raises(EventStreamError):
                await collect(stream)
            try:  # the application saw the error: reading on is plain aiobotocore
                later = await collect(stream)
            except Exception as exc:
                assert getattr(exc, "bedrock_hooks", {}).get("stopped_because") != "retry"
                later = []
            return later

    invalid = EventFrame.exception("validationException", "Input is too long for requested model.")
    server.script(Reply.stream([invalid, EventFrame.reset()]), Reply.stream(ANSWER))
    assert text_of(run(scenario())) == ""
    assert len(server.requests) == 1


def test_iterating_after_close_never_reissues(server, fake_time):
    async def scenario():
        async with hooked(server, fake_time.runtime()) as client:
            stream = await open_stream(client)
            stream.close()
            try:
                return await collect(stream)
            except Exception:  # whatever aiohttp raises for a closed response
                return []

    server.script(Reply.stream([EventFrame.reset()]), Reply.stream(ANSWER))
    assert text_of(run(scenario())) == ""
    assert len(server.requests) == 1


async def two_tasks(stream) -> tuple[list, list]:
    got: list = []

    async def read() -> None:
        async for event in stream:
            got.append(event)

    results = await asyncio.gather(read(), read(), return_exceptions=True)
    return got, [r for r in results if isinstance(r, BaseException)]


def test_two_tasks_reading_one_stream_share_its_events_once(server, fake_time):
    texts = [f"t{i} " for i in range(8)]

    async def scenario(runtime):
        async with hooked(server, runtime) as client:
            return await two_tasks(await open_stream(client))

    server.script(Reply.stream(EventFrame.converse_text(texts), delay_between=0.005))
    _, errors = run(scenario(None))
    assert errors, "plain aiobotocore: 'anext(): asynchronous generator is already running' in one task"
    server.script(Reply.stream(EventFrame.converse_text(texts), delay_between=0.005))
    got, errors = run(scenario(fake_time.runtime()))
    assert errors == []
    assert len(got) == len(EventFrame.converse_text(texts))
    assert sorted(e["contentBlockDelta"]["delta"]["text"] for e in got if "contentBlockDelta" in e) == sorted(texts)


def test_two_tasks_and_a_failure_before_content_reissue_once(server, fake_time):
    async def scenario():
        async with hooked(server, fake_time.runtime()) as client:
            return await two_tasks(await open_stream(client))

    server.script(Reply.stream([THROTTLED], delay_between=0.005), Reply.stream(ANSWER, delay_between=0.005))
    got, errors = run(scenario())
    assert errors == []
    assert [kind(e) for e in got].count("messageStart") == 1
    assert len(server.requests) == 2
    assert sorted(e["contentBlockDelta"]["delta"]["text"] for e in got if "contentBlockDelta" in e) == ["Hel", "lo"]


# -- cancellation ------------------------------------------------------------------------------------

def test_cancelling_the_backoff_propagates_closes_the_response_and_never_reissues(server, fake_time):
    entered = asyncio.Event

    async def scenario():
        in_backoff, never = entered(), entered()

        async def backoff(seconds: float) -> None:
            in_backoff.set()
            await never.wait()  # a backoff that only a cancellation ends

        runtime = replace(fake_time.runtime(), async_sleep=backoff)
        async with hooked(server, runtime) as client:
            stream = await open_stream(client)
            failed_response = stream._raw_stream
            reader = asyncio.create_task(collect(stream))
            await asyncio.wait([reader, asyncio.create_task(in_backoff.wait())], return_when=asyncio.FIRST_COMPLETED)
            reader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reader
            closed = failed_response.closed
            try:  # reading on after the cancel reads a closed response: never a re-issue
                later = await collect(stream)
            except Exception:  # whatever aiohttp raises for a closed response
                later = []
            return closed, later

    server.script(Reply.stream([THROTTLED]), Reply.stream(ANSWER))
    closed, later = run(scenario())
    assert closed
    assert later == [] and len(server.requests) == 1


def test_a_read_cancelled_by_wait_for_closes_the_response(server, fake_time):
    async def scenario(runtime):
        async with hooked(server, runtime) as client:
            stream = await open_stream(client)
            reader = aiter(stream)
            first = await anext(reader)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(anext(reader), 0.005)  # the next event is 0.3 s away
            return first, stream._raw_stream.closed

    answer = Reply.stream(ANSWER, delay_between=0.3)
    server.script(answer)
    assert run(scenario(None))[1] is False  # plain aiobotocore: the response stays open
    server.script(answer)
    first, closed = run(scenario(fake_time.runtime()))
    assert kind(first) == "messageStart" and closed
    assert len(server.requests) == 2  # one each: nothing re-issued


def test_cancelling_the_reissued_call_propagates_and_never_reissues_again(server, fake_time):
    async def scenario():
        async with hooked(server, fake_time.runtime()) as client:
            stream = await open_stream(client)
            reader = asyncio.create_task(collect(stream))
            while len(server.requests) < 2 and not reader.done():  # until the re-issue reached the server,
                await asyncio.sleep(0.002)  # whose answer is held back
            reader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reader
            return await collect(stream)

    server.script(Reply.stream([EventFrame.reset()]), Reply.delay(2.0, Reply.stream(ANSWER)))
    assert run(scenario()) == []
    assert len(server.requests) == 2


# -- OpenTelemetry ---------------------------------------------------------------------------------

@pytest.fixture
def otel_spans():
    sdk_trace = require("opentelemetry.sdk.trace", group="otel")
    instrumentation = require("opentelemetry.instrumentation.botocore", group="otel")
    spans = Spans(sdk_trace)
    instrumentors = [instrumentation.AiobotocoreInstrumentor(), instrumentation.BotocoreInstrumentor()]
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=spans.provider)
    yield spans
    for instrumentor in instrumentors:
        instrumentor.uninstrument()


def test_reissued_stream_under_opentelemetry_ends_every_span(otel_spans, server, fake_time):
    """opentelemetry-instrumentation-botocore 0.66b2 traces aiobotocore calls (``AiobotocoreInstrumentor``)
    but has no Bedrock extension for them: each call's span ends when the call returns, streams are not
    wrapped. The re-issue is a call of its own through the client, so it gets a span, and that span ends."""
    server.script(Reply.stream([THROTTLED]), Reply.stream(ANSWER))
    assert text_of(read_all(server, fake_time.runtime())) == "Hello"
    assert len(server.requests) == 2
    assert list(otel_spans.started.values()) == ["Bedrock Runtime.ConverseStream"] * 2
    assert otel_spans.unended() == []


# -- imports ---------------------------------------------------------------------------------------

SYNC_APP = """
import sys
sys.modules["aiobotocore"] = sys.modules["aiohttp"] = None  # as if not installed: importing either fails
import boto3, bedrock_hooks
from bedrock_hooks import streaming
from bedrock_hooks.testing import BedrockServer, EventFrame, Reply
with BedrockServer() as server:
    session = boto3.Session(region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="x")
    bedrock_hooks.install(session)
    client = session.client("bedrock-runtime", endpoint_url=server.url)
    server.script(Reply.stream(EventFrame.converse_text(["ok"])))
    stream = client.converse_stream(modelId="m", messages=[{"role": "user", "content": [{"text": "hi"}]}])["stream"]
    assert type(stream).__name__ == "RecoveringEventStream", type(stream)
    list(stream)
print(sorted(m for m in sys.modules if m.partition(".")[0] in ("aiobotocore", "aiohttp") and sys.modules[m]))
"""


def test_sync_streams_work_and_import_nothing_async_without_aiobotocore():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEDROCK_HOOKS_", "PYTHON"))}
    env.update(PYTHONPATH=str(REPO), AWS_EC2_METADATA_DISABLED="true")
    done = subprocess.run([sys.executable, "-c", SYNC_APP], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_aioboto3_streams_are_recovered_the_same_way(server, fake_time):
    aioboto3 = require("aioboto3", group="aioboto3")
    from conftest import CREDS

    async def scenario():
        session = aioboto3.Session(region_name="us-east-1", **CREDS)
        bedrock_hooks.install(session, runtime=fake_time.runtime())
        async with session.client("bedrock-runtime", endpoint_url=server.url) as client:
            return await collect(await open_stream(client))

    server.script(Reply.stream([THROTTLED]), Reply.stream(ANSWER))
    assert text_of(run(scenario())) == "Hello"
    assert len(server.requests) == 2


def test_an_aiobotocore_without_the_stream_internals_keeps_plain_streams(server, fake_time, monkeypatch, caplog):
    """A future aiobotocore that renames ``AioEventStream._parse_event`` (here: the class recompiled with the
    name changed) turns off only stream hints and re-issue on aio clients, with one warning: ``async for``
    reads its plain stream as before."""
    require("aiobotocore.eventstream", group="aio")
    import aiobotocore.eventstream
    import aiobotocore.parsers

    from bedrock_hooks import compat
    from test_compat import renamed

    renamed(monkeypatch, aiobotocore.eventstream, "AioEventStream", "_parse_event", also=(aiobotocore.parsers,))
    compat.reset()
    monkeypatch.setattr(compat, "_warned", {})
    caplog.set_level("WARNING", logger="bedrock_hooks.compat")
    try:
        async def scenario():
            async with hooked(server, fake_time.runtime()) as client:
                stream = await open_stream(client)
                return type(stream), await collect(stream)

        server.script(Reply.stream(ANSWER))
        stream_type, events = run(scenario())
    finally:
        compat.reset()
    assert stream_type is aiobotocore.eventstream.AioEventStream  # the renamed class: nothing of ours around it
    assert text_of(events) == "Hello"
    warnings = [r.getMessage() for r in caplog.records if "event streams on aiobotocore" in r.getMessage()]
    assert len(warnings) == 1 and "_parse_event" in warnings[0]
