"""No duplicate side effects: ambiguous failures of mutating control-plane calls are resent only with a token."""

from __future__ import annotations

import pytest
from botocore.exceptions import ConnectionClosedError, ReadTimeoutError

import bedrock_hooks
from bedrock_hooks.policy import resend_is_safe
from bedrock_hooks.testing import Reply
from conftest import make_client, new_session


def control_plane(server, fake_time, **config):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    return make_client(session, server, service="bedrock", **config)


def create_guardrail(client):
    return client.create_guardrail(name="g", blockedInputMessaging="no", blockedOutputsMessaging="no")


@pytest.mark.parametrize("fault", [Reply.reset(), Reply.close()])
def test_mutating_call_without_token_is_not_resent(fault, server, fake_time):
    client = control_plane(server, fake_time)
    server.script(fault)
    with pytest.raises(ConnectionClosedError) as raised:
        client.delete_guardrail(guardrailIdentifier="gr-1")
    assert len(server.requests) == 1  # the server may have deleted it: never twice
    info = raised.value.bedrock_hooks
    assert info["stopped_because"] == "not-idempotent"
    assert "DeleteGuardrail" in " ".join(info["details"]["notes"])


def test_read_timeout_on_mutating_call_without_token_is_not_resent(server, fake_time):
    client = control_plane(server, fake_time, read_timeout=0.3)
    server.script(Reply.delay(1.0))
    with pytest.raises(ReadTimeoutError):
        client.stop_model_customization_job(jobIdentifier="job-1")
    assert len(server.requests) == 1


def test_mutating_call_with_idempotency_token_is_resent_with_the_same_token(server, fake_time):
    client = control_plane(server, fake_time)
    server.script(Reply.reset(), Reply.ok({"guardrailId": "g1", "guardrailArn": "arn:aws:bedrock:us-east-1:1:guardrail/g1",
                                           "version": "DRAFT", "createdAt": "2026-01-01T00:00:00Z"}))
    create_guardrail(client)
    first, second = server.requests
    assert first.json()["clientRequestToken"] == second.json()["clientRequestToken"]


def test_reads_and_errors_with_an_answer_are_retried_as_usual(server, fake_time):
    client = control_plane(server, fake_time)
    server.script(Reply.reset())
    client.list_foundation_models()
    assert len(server.requests) == 2
    server.reset()
    server.script(Reply.service_unavailable())  # an answer: nothing was applied
    client.delete_guardrail(guardrailIdentifier="gr-1")
    assert len(server.requests) == 2


def test_resend_rule_reads_the_service_model():
    import botocore.session

    model = botocore.session.get_session().get_service_model("bedrock")
    assert resend_is_safe(model.operation_model("ListFoundationModels"))
    assert resend_is_safe(model.operation_model("CreateGuardrail"))
    assert not resend_is_safe(model.operation_model("DeleteGuardrail"))
    assert not resend_is_safe(model.operation_model("PutModelInvocationLoggingConfiguration"))
