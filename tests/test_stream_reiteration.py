"""One stream, read in several pieces: "content delivered" belongs to the stream, not to one iterator.

Applications read a stream in more than one loop (first token for time-to-first-token, then the rest),
with ``next(iter(stream))``, after ``close()``, or from two threads. botocore's ``EventStream`` shares one
event generator between all of them; a failure must be recovered as if there were one reader, so no text
is ever delivered twice and no request is ever re-issued after the application saw content, an error or
closed the stream.
"""

from __future__ import annotations

import threading

import pytest
from botocore.exceptions import EventStreamError

import bedrock_hooks
from bedrock_hooks.testing import EventFrame, Reply
from conftest import make_client, new_session

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]
THROTTLED = EventFrame.exception("throttlingException", "Too many requests, please wait before trying again.")


def hooked_client(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    return make_client(session, server)


def open_stream(client):
    return client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"]


def kind(event) -> str:
    return next(iter(event))


def text_of(events) -> str:
    return "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)


def first_token_then_rest(stream, seen: list) -> None:
    """The time-to-first-token shape: one loop until the first text, a second loop for the rest."""
    for event in stream:
        seen.append(event)
        if "contentBlockDelta" in event:
            break
    for event in stream:
        seen.append(event)


def test_failure_early_in_the_second_loop_is_not_reissued_after_the_first_loop_delivered_text(server, fake_time):
    client = hooked_client(server, fake_time)
    server.script(Reply.stream(EventFrame.converse_text(["Hel"])[:2] + [THROTTLED]),
                  Reply.stream(EventFrame.converse_text(["Hel", "lo"])))
    seen: list = []
    with pytest.raises(EventStreamError) as raised:
        first_token_then_rest(open_stream(client), seen)
    assert text_of(seen) == "Hel"  # not "HelHello": the answer is never delivered again from the start
    assert len(server.requests) == 1
    assert raised.value.response["BedrockHooks"]["stopped_because"] == "content-delivered"


def test_next_iter_then_a_loop_share_what_was_delivered(server, fake_time):
    client = hooked_client(server, fake_time)
    server.script(Reply.stream(EventFrame.converse_text(["Hel"])[:2] + [THROTTLED]),
                  Reply.stream(EventFrame.converse_text(["Hel", "lo"])))
    stream = open_stream(client)
    seen = [next(iter(stream)), next(iter(stream))]
    assert [kind(e) for e in seen] == ["messageStart", "contentBlockDelta"]
    with pytest.raises(EventStreamError):
        for event in stream:
            seen.append(event)
    assert text_of(seen) == "Hel"
    assert len(server.requests) == 1


def test_preamble_seen_in_the_first_loop_is_not_repeated_by_a_recovery_in_the_second(server, fake_time):
    client = hooked_client(server, fake_time)
    server.script(Reply.stream(EventFrame.converse_text(["x"])[:1] + [THROTTLED]),
                  Reply.stream(EventFrame.converse_text(["Hel", "lo"])))
    stream = open_stream(client)
    seen = [next(iter(stream))]  # messageStart only: no content yet, a re-issue is still safe
    seen += list(stream)
    assert [kind(e) for e in seen].count("messageStart") == 1
    assert text_of(seen) == "Hello"
    assert len(server.requests) == 2


def test_a_stream_that_already_raised_is_never_reissued_by_a_later_loop(server, fake_time):
    client = hooked_client(server, fake_time)
    invalid = EventFrame.exception("validationException", "Input is too long for requested model.")
    server.script(Reply.stream([invalid, EventFrame.reset()]))
    stream = open_stream(client)
    with pytest.raises(EventStreamError):
        list(stream)
    try:  # the application saw the error (and may retry on its own): reading on is plain botocore
        list(stream)
    except Exception as exc:
        assert not hasattr(exc, "bedrock_hooks") or exc.bedrock_hooks["stopped_because"] != "retry"
    assert len(server.requests) == 1


def test_iterating_after_close_never_reissues(server, fake_time):
    client = hooked_client(server, fake_time)
    server.script(Reply.stream([EventFrame.reset()]), Reply.stream(EventFrame.converse_text(["late"])))
    stream = open_stream(client)
    stream.close()
    try:
        events = list(stream)
    except Exception:  # whatever botocore raises for a closed body
        events = []
    assert text_of(events) == ""
    assert len(server.requests) == 1


def test_two_threads_iterating_one_stream_share_its_events_once(server, fake_time):
    client = hooked_client(server, fake_time)
    texts = [f"t{i} " for i in range(12)]
    server.script(Reply.stream(EventFrame.converse_text(texts), delay_between=0.01))
    stream = open_stream(client)
    got: dict[str, list] = {"A": [], "B": []}
    errors: list[BaseException] = []

    def read(name: str) -> None:
        try:
            for event in stream:
                got[name].append(event)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(name,)) for name in got]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []  # botocore alone: "ValueError: generator already executing" in one of them
    every = got["A"] + got["B"]
    assert len(every) == len(EventFrame.converse_text(texts))
    deltas = sorted(e["contentBlockDelta"]["delta"]["text"] for e in every if "contentBlockDelta" in e)
    assert deltas == sorted(texts)


def test_two_threads_and_a_failure_before_content_reissue_once(server, fake_time):
    client = hooked_client(server, fake_time)
    server.script(Reply.stream([THROTTLED], delay_between=0.01),
                  Reply.stream(EventFrame.converse_text(["Hel", "lo"]), delay_between=0.01))
    stream = open_stream(client)
    got: list = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def read() -> None:
        try:
            for event in stream:
                with lock:
                    got.append(event)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert [kind(e) for e in got].count("messageStart") == 1
    assert sorted(e["contentBlockDelta"]["delta"]["text"] for e in got if "contentBlockDelta" in e) == ["Hel", "lo"]
    assert len(server.requests) == 2

