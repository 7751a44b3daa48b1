"""InvokeModelWithResponseStream read in pieces (issue 11, defect 1, the other streaming operation).

tests/test_stream_reiteration.py reads ConverseStreams in several loops. InvokeModelWithResponseStream
has no preamble event: every ``chunk`` is model output. Read as time-to-first-token code reads it
(one loop to the first chunk, another for the rest, or ``next(iter(...))``), a failure after a
delivered chunk must surface, never re-issue the call and repeat the answer from its start.
"""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import EventStreamError

import bedrock_hooks
from bedrock_hooks.testing import EventFrame, Reply
from conftest import make_client, new_session
from test_stream_reiteration import THROTTLED, first_token_then_rest

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
ANSWER = EventFrame.anthropic_text(["Hel", "lo"])
WHOLE_ANSWER = ["message_start", "content_block_start", "content_block_delta", "content_block_delta",
                "content_block_stop", "message_delta", "message_stop"]


def hooked_client(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    return make_client(session, server)


def open_body(client):
    return client.invoke_model_with_response_stream(modelId=MODEL, body=json.dumps({"messages": []}))["body"]


def chunk_types(events) -> list[str]:
    return [json.loads(e["chunk"]["bytes"])["type"] for e in events if "chunk" in e]


def first_chunk_then_rest(stream, seen: list) -> None:
    for event in stream:
        seen.append(event)
        break
    for event in stream:
        seen.append(event)


@pytest.mark.parametrize("read", [first_chunk_then_rest, first_token_then_rest], ids=["first-chunk", "first-delta"])
def test_invoke_stream_failing_in_the_second_loop_is_not_reissued(read, server, fake_time):
    client = hooked_client(server, fake_time)
    server.script(Reply.stream(ANSWER[:1] + [THROTTLED]), Reply.stream(ANSWER))
    seen: list = []
    with pytest.raises(EventStreamError) as raised:
        read(open_body(client), seen)
    assert chunk_types(seen) == ["message_start"]  # never message_start twice
    assert len(server.requests) == 1
    assert raised.value.response["BedrockHooks"]["stopped_because"] == "content-delivered"


def test_invoke_stream_failing_before_any_chunk_is_recovered_once_for_two_loops(server, fake_time):
    client = hooked_client(server, fake_time)
    server.script(Reply.stream([THROTTLED]), Reply.stream(ANSWER))
    body = open_body(client)
    seen = [next(iter(body))]
    seen += list(body)
    assert chunk_types(seen) == WHOLE_ANSWER  # one clean answer: nothing was delivered before the failure
    assert len(server.requests) == 2
