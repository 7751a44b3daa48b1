"""A 200 cut short is a dropped connection, on every botocore (issue 12 §1).

botocore 1.43.115+ stopped enforcing ``Content-Length`` for non-streaming operations: a Converse
answer cut after 10 bytes comes back as ``{}`` with status 200. Older botocore raises
``ConnectionClosedError`` (``IncompleteRead``). With the hooks both behave the same: the call is
retried on a fresh connection within its budget, and if every attempt is cut the application gets a
botocore error with the hint (older botocore's ``ConnectionClosedError``, or botocore's own
``IncompleteReadError`` where botocore no longer checks), never the truncated result.
"""

from __future__ import annotations

import types

import pytest
from botocore.exceptions import ConnectionClosedError, IncompleteReadError

import bedrock_hooks
from bedrock_hooks import classification
from bedrock_hooks.testing import Reply
from conftest import converse, make_client, new_session

CUT = Reply.truncated(Reply.ok(), 10)
#: No Content-Length: the body ends when the connection does, and only the JSON shows it was cut.
CUT_UNFRAMED = Reply.truncated(Reply.ok(headers={"Content-Length": None}), 10)
#: What the application may get once every attempt was cut: what botocore itself raises for a cut body.
CUT_ERRORS = (ConnectionClosedError, IncompleteReadError)


def hooked(server, fake_time, service="bedrock-runtime", **overrides):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), **overrides)
    return make_client(session, server, service=service)


@pytest.mark.parametrize("cut", [CUT, CUT_UNFRAMED], ids=["short-of-content-length", "unparsable-json"])
def test_truncated_200_is_retried_on_a_fresh_connection(cut, server, fake_time):
    client = hooked(server, fake_time)
    server.script(cut)
    response = converse(client)
    assert response["output"]["message"]["content"][0]["text"]  # the whole answer, not {}
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    first, second = server.requests
    assert first.connection_id != second.connection_id
    assert fake_time.sleeps == []  # a dropped connection is retried at once


@pytest.mark.parametrize("cut", [CUT, CUT_UNFRAMED], ids=["short-of-content-length", "unparsable-json"])
def test_truncated_every_time_raises_with_a_hint_never_returns_the_cut_result(cut, server, fake_time):
    client = hooked(server, fake_time)
    server.default = cut
    with pytest.raises(CUT_ERRORS) as raised:
        converse(client)
    assert not type(raised.value).__module__.startswith("bedrock_hooks")
    info = raised.value.bedrock_hooks
    assert info["entry"] == "TruncatedResponse"
    assert info["stopped_because"] == "max-attempts"
    assert len(server.requests) == info["attempts"] == 3
    assert str(raised.value).splitlines()[-1].startswith("[bedrock-hooks] TruncatedResponse (retry)")


def test_truncated_answer_to_a_mutating_call_is_not_resent(server, fake_time):
    """The answer was on its way: the request was processed. DeleteGuardrail has no idempotency token."""
    client = hooked(server, fake_time, service="bedrock")
    server.script(Reply.truncated(Reply.ok({"guardrailId": "gr-1"}), 5))
    with pytest.raises(CUT_ERRORS) as raised:
        client.delete_guardrail(guardrailIdentifier="gr-1")
    assert len(server.requests) == 1
    assert raised.value.bedrock_hooks["stopped_because"] == "not-idempotent"


def test_complete_answers_and_streams_are_left_alone(server, fake_time):
    client = hooked(server, fake_time)
    assert converse(client)["ResponseMetadata"]["RetryAttempts"] == 0
    body = client.invoke_model(modelId="anthropic.claude-3-haiku-20240307-v1:0", body=b"{}")["body"].read()
    assert body
    events = list(client.converse_stream(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                                         messages=[{"role": "user", "content": [{"text": "hi"}]}])["stream"])
    assert events
    assert len(server.requests) == 3


def _response(status, body, headers):
    return types.SimpleNamespace(status_code=status, content=body, headers=headers, url="https://x")


def _operation(name="Converse", method="POST"):
    import botocore.session

    model = botocore.session.get_session().get_service_model("bedrock-runtime").operation_model(name)
    return types.SimpleNamespace(has_streaming_output=model.has_streaming_output,
                                 has_event_stream_output=model.has_event_stream_output,
                                 http={"method": method}, service_model=model.service_model)


@pytest.mark.parametrize("status,body,headers,cut", [
    (200, b'{"output": {}}', {"content-length": "14"}, False),
    (200, b'{"out', {"content-length": "14"}, True),
    (200, b'{"out', {}, True),  # no length: JSON that does not parse
    (200, b'{"out', {"transfer-encoding": "chunked"}, False),  # chunked framing fails loudly by itself
    (200, b"", {}, False),
    (204, b"", {"content-length": "10"}, False),
    (200, b"", {"content-length": "bogus"}, False),
])
def test_truncation_rule(status, body, headers, cut):
    facts = classification.facts_from_success(_response(status, body, headers), _operation())
    assert (facts is not None) == cut
    if cut:
        assert classification.classify(facts).entry.name == "TruncatedResponse"


def test_streaming_outputs_are_never_read_by_the_check():
    class Unread:
        status_code = 200
        headers = {"content-length": "100"}

        @property
        def content(self):
            raise AssertionError("the body of a streaming output must stay unread")

    for name in ("InvokeModel", "ConverseStream", "InvokeModelWithResponseStream"):
        assert classification.facts_from_success(Unread(), _operation(name)) is None
