"""A cut 2xx under every switch: never handed to the application as a complete answer.

botocore 1.43.115+ returns a non-streaming 200 cut short of its ``Content-Length`` as ``{}``; older
botocore raises ``ConnectionClosedError`` for it and retries that as its retry mode says. With
``BEDROCK_HOOKS_RETRY=off`` botocore's own retry handler decides, so the library must make the cut
answer reach that handler as what it is (a closed connection) and raise botocore's error when it
does not retry: the same number of requests as plain botocore sends for a closed connection, on
every botocore, and never ``{}``.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ConnectionClosedError, IncompleteReadError

import bedrock_hooks
from bedrock_hooks.hints import PREFIX
from bedrock_hooks.testing import Reply
from conftest import converse, make_client, new_session

CUT = Reply.truncated(Reply.ok(), 10)
CUT_ERRORS = (ConnectionClosedError, IncompleteReadError)


def _requests_for(server, client, reply) -> tuple[int, BaseException | None]:
    server.reset()
    server.default = reply
    try:
        converse(client)
    except Exception as exc:  # noqa: BLE001 - what the application would see
        return len(server.requests), exc
    return len(server.requests), None


@pytest.mark.parametrize("mode", ["standard", "legacy", "adaptive"])
def test_retry_off_raises_for_a_cut_answer_after_botocores_own_retries(mode, server, fake_time):
    plain, closed = _requests_for(server, make_client(new_session(), server, mode=mode), Reply.close())
    assert isinstance(closed, ConnectionClosedError)  # the baseline: botocore retrying a closed connection
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), retry=False)
    sent, raised = _requests_for(server, make_client(session, server, mode=mode), CUT)
    assert isinstance(raised, CUT_ERRORS), f"a cut answer came back as a result: {raised!r}"
    assert sent == plain  # botocore's retry rules, as for the closed connection older botocore reported
    assert fake_time.sleeps == []  # no library backoff: retry decisions are botocore's
    info = raised.bedrock_hooks
    assert info["entry"] == "TruncatedResponse"
    assert "BEDROCK_HOOKS_RETRY=off" in " ".join(info["details"]["notes"])
    assert str(raised).splitlines()[-1].startswith(f"{PREFIX} TruncatedResponse")


def test_retry_off_cut_answer_that_botocore_retries_returns_the_whole_answer(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), retry=False)
    client = make_client(session, server)
    server.script(CUT)
    response = converse(client)
    assert response["output"]["message"]["content"][0]["text"]
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert len(server.requests) == 2


def test_retry_and_hints_off_still_never_return_a_cut_answer(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), retry=False, hints=False)
    client = make_client(session, server)
    server.default = CUT
    with pytest.raises(CUT_ERRORS) as raised:
        converse(client)
    assert PREFIX not in str(raised.value)  # hints off: botocore's message as botocore makes it
    assert not hasattr(raised.value, "bedrock_hooks")


def test_retry_off_uninstall_leaves_plain_botocore(server, fake_time):
    session = new_session()
    installation = bedrock_hooks.install(session, runtime=fake_time.runtime(), retry=False)
    client = make_client(session, server)
    handlers = list(client.meta.events._emitter._handlers.prefix_search("needs-retry.bedrock-runtime.Converse"))
    installation.uninstall()
    after = list(client.meta.events._emitter._handlers.prefix_search("needs-retry.bedrock-runtime.Converse"))
    assert len(after) == len(handlers) - 1
    assert not any("bedrock_hooks" in getattr(h, "__module__", "") for h in after)
    assert converse(client)["ResponseMetadata"]["RetryAttempts"] == 0


def test_every_attempt_cut_names_the_keepalive_defences(server, fake_time):
    """A cut answer is an idle drop like a reset: its hint says which defences the client had."""
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    server.default = CUT
    with pytest.raises(CUT_ERRORS) as raised:
        converse(client)
    notes = raised.value.bedrock_hooks["details"]["notes"]
    assert "This client sent TCP keep-alive probes after 45s idle and closed pooled connections idle >300s." in notes


@pytest.mark.parametrize("reply", [CUT, Reply.reset()], ids=["cut", "reset"])
def test_retry_off_hint_still_names_the_keepalive_defences(reply, server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), retry=False)
    client = make_client(session, server)
    server.default = reply
    with pytest.raises((*CUT_ERRORS, ConnectionError)) as raised:
        converse(client)
    notes = raised.value.bedrock_hooks["details"]["notes"]
    assert "This client sent TCP keep-alive probes after 45s idle and closed pooled connections idle >300s." in notes
