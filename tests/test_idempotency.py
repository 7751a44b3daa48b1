"""No duplicate side effects: ambiguous failures of mutating control-plane calls are resent only with a token."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

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


# -- issue 11 #7: "mutating" comes from the operation model, and 500/502/504 are ambiguous --------------

def test_mutating_is_read_from_the_http_method_not_the_name(server, fake_time):
    """TagResource (POST) changes the resource although its name starts with none of the old prefixes."""
    client = control_plane(server, fake_time)
    server.script(Reply.reset())
    with pytest.raises(ConnectionClosedError) as raised:
        client.tag_resource(resourceARN="arn:aws:bedrock:us-east-1:123456789012:guardrail/gr-1",
                            tags=[{"key": "k", "value": "v"}])
    assert len(server.requests) == 1
    assert raised.value.bedrock_hooks["stopped_because"] == "not-idempotent"


@pytest.mark.parametrize("reply", [Reply.internal_server(), Reply.raw(502, "<html>502 Bad Gateway</html>"),
                                   Reply.raw(504, "<html>504 Gateway Time-out</html>")], ids=["500", "502", "504"])
def test_server_errors_that_may_have_applied_the_call_are_not_resent(reply, server, fake_time):
    client = control_plane(server, fake_time)
    server.script(reply)
    with pytest.raises(ClientError) as raised:
        client.delete_guardrail(guardrailIdentifier="gr-1")
    assert len(server.requests) == 1
    info = raised.value.response["BedrockHooks"]
    assert info["stopped_because"] == "not-idempotent"
    assert "DeleteGuardrail" in " ".join(info["details"]["notes"])


def test_server_error_on_a_call_with_a_token_or_a_read_is_resent(server, fake_time):
    client = control_plane(server, fake_time)
    server.script(Reply.internal_server(), Reply.ok({"guardrailId": "g1", "guardrailArn": "arn:aws:bedrock:us-east-1:1:"
                                                     "guardrail/g1", "version": "DRAFT", "createdAt": "2026-01-01T00:00:00Z"}))
    create_guardrail(client)
    assert len(server.requests) == 2
    server.reset()
    server.script(Reply.internal_server())
    client.list_foundation_models()
    assert len(server.requests) == 2


def test_unknown_transport_failure_of_a_mutating_call_is_not_left_to_botocore(server, fake_time, monkeypatch):
    """botocore standard mode resends on any HTTPClientError; after the request may have left, the library does not."""
    import botocore.endpoint
    from botocore.exceptions import HTTPClientError

    monkeypatch.setattr(botocore.endpoint.time, "sleep", lambda seconds: None)  # botocore's own backoff
    client = control_plane(server, fake_time)
    sent = []

    def fail_once(request, **kwargs):
        sent.append(request.url)
        if len(sent) == 1:
            raise HTTPClientError(error="injected transport failure")

    client.meta.events.register("before-send.bedrock", fail_once)
    with pytest.raises(HTTPClientError):
        client.delete_guardrail(guardrailIdentifier="gr-1")
    assert len(sent) == 1
    sent.clear()
    client.list_foundation_models()  # a read: botocore's own retry still applies
    assert len(sent) == 2


def test_mutating_rule_covers_every_bedrock_service_model():
    import botocore.session

    session = botocore.session.get_session()
    runtime = session.get_service_model("bedrock-runtime")
    control = session.get_service_model("bedrock")
    agents = session.get_service_model("bedrock-agent-runtime")
    assert resend_is_safe(runtime.operation_model("Converse"))
    assert resend_is_safe(control.operation_model("CreateModelCustomizationJob"))  # mutating, with clientRequestToken
    if "StartAsyncInvoke" in runtime.operation_names:  # not in the oldest supported botocore; newest has it
        assert resend_is_safe(runtime.operation_model("StartAsyncInvoke"))
    assert resend_is_safe(control.operation_model("ListTagsForResource"))  # a POST that only reads
    assert not resend_is_safe(control.operation_model("TagResource"))
    assert not resend_is_safe(control.operation_model("PutModelInvocationLoggingConfiguration"))  # a PUT, no token
    if "CreateFoundationModelAgreement" in control.operation_names:  # likewise
        assert not resend_is_safe(control.operation_model("CreateFoundationModelAgreement"))
    assert not resend_is_safe(agents.operation_model("InvokeAgent"))  # may run action groups
    assert resend_is_safe(agents.operation_model("Retrieve"))
