"""Every catalog entry, as Bedrock really sends it, through real boto3 clients over loopback.

Each case scripts the server's replies, makes one call through a client of an installed session,
and checks the attempts the server saw, the sleeps the library took (fake clock: no waiting), the
final outcome, the hint line and the ``BedrockHooks`` fields. Messages are the ones users quote
in public issues (docs/research/bedrock-errors.md), not only the troubleshooting page's names.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from botocore.exceptions import ClientError

import bedrock_hooks
from bedrock_hooks.catalog import ENTRIES
from bedrock_hooks.testing import Reply

from conftest import converse, make_client, new_session


@dataclass(frozen=True)
class Case:
    entry: str
    reply: Reply
    decision: str
    requests: int  # requests the server sees for one call (max_attempts 5, then OK if retried)
    succeeds: bool


def err(status: int, code: str, message: str) -> Reply:
    return Reply.error(status, code, message)


FTU = ("Model use case details have not been submitted for this account. Fill out the Anthropic use case "
       "details form before using the model. If you have already filled out the form, try again in 15 minutes.")

CASES = [
    Case("AccessDeniedException", err(403, "AccessDeniedException",
         "User: arn:aws:iam::123456789012:user/app is not authorized to perform: bedrock:InvokeModel on resource: "
         "arn:aws:bedrock:us-east-1::foundation-model/x with an explicit deny in a service control policy"),
         "fail", 1, False),
    Case("ModelAccessNotGranted", err(403, "AccessDeniedException",
         "You don't have access to the model with the specified model ID."), "fail", 1, False),
    Case("FTUFormNotFilled", err(404, "ResourceNotFoundException", FTU), "wait", 1, False),
    Case("IncompleteSignature", err(400, "IncompleteSignatureException",
         "Authorization header requires 'Credential' parameter."), "fail", 1, False),
    Case("IncompleteSignature", err(403, "InvalidSignatureException",
         "The request signature we calculated does not match the signature you provided. Check your AWS "
         "Secret Access Key and signing method."), "fail", 1, False),
    Case("InternalFailure", Reply.internal_server(), "retry", 2, True),
    Case("InternalFailure", err(500, "InternalFailure", "The request processing has failed"), "retry", 2, True),
    Case("InvalidAction", err(400, "InvalidAction", "The action or operation requested is invalid."),
         "fail", 1, False),
    Case("InvalidAction", err(400, "ValidationException",
         "The requested operation is not recognized by the service."), "fail", 1, False),
    Case("InvalidClientTokenId", err(403, "UnrecognizedClientException",
         "The security token included in the request is invalid."), "fail", 1, False),
    Case("InvalidClientTokenId", err(403, "InvalidClientTokenId",
         "The security token included in the request is invalid."), "fail", 1, False),
    Case("MarketplaceAgreementFailed", err(403, "AccessDeniedException",
         "Model access is denied due to INVALID_PAYMENT_INSTRUMENT:A valid payment instrument must be provided.. "
         "Your AWS Marketplace subscription for this model cannot be completed at this time."), "fail", 1, False),
    Case("MarketplaceAgreementPending", err(403, "AccessDeniedException",
         "Model access is denied: your AWS Marketplace agreement for this model is still pending. "
         "Try again in 15 minutes."), "wait", 1, False),
    Case("MPAgreementBeingCreated", err(403, "AccessDeniedException",
         "Your account is not authorized to access this model. Your AWS Marketplace subscription for this model "
         "is still being processed. Try again after 15 minutes"), "wait", 1, False),
    Case("MarketplaceSubscribePermissionMissing", err(403, "AccessDeniedException",
         "Model access is denied due to IAM user or service role is not authorized to perform the required AWS "
         "Marketplace actions (aws-marketplace:ViewSubscriptions, aws-marketplace:Subscribe) to enable access to "
         "this model. If you recently fixed this issue, try again after 15 minutes."), "fail", 1, False),
    Case("NotAuthorized", err(400, "NotAuthorized", "You do not have permission to perform this action."),
         "fail", 1, False),
    Case("NotAuthorized", err(400, "ValidationException",
         "Your account is not authorized to invoke this API operation."), "fail", 1, False),
    Case("ServiceUnavailable", Reply.service_unavailable(), "retry", 2, True),
    Case("ServiceUnavailable", err(503, "ServiceUnavailableException",
         "Too many connections, please wait before trying again."), "retry", 2, True),
    Case("ThrottlingException", Reply.throttling(), "retry", 2, True),
    Case("ThrottlingException", Reply.throttling("Too many tokens, please wait before trying again."),
         "retry", 2, True),
    Case("DailyTokenQuotaExceeded", Reply.throttling("Too many tokens per day, please wait before trying again."),
         "fail", 1, False),
    Case("ValidationError", err(400, "ValidationException",
         "Malformed input request: #: required key [messages] not found, please reformat your input and try "
         "again."), "fail", 1, False),
    Case("ResourceNotFound", err(404, "ResourceNotFoundException",
         "Could not resolve the foundation model from the provided model identifier."), "fail", 1, False),
    Case("ResourceNotFound", Reply.validation("The provided model identifier is invalid."), "fail", 1, False),
    Case("ModelEndOfLife", err(404, "ResourceNotFoundException",
         "This model version has reached the end of its life. Please refer to the AWS documentation for more "
         "details."), "fail", 1, False),
    Case("LegacyModelAccessDenied", err(404, "ResourceNotFoundException",
         "Access denied. This Model is marked by provider as Legacy and you have not been actively using the model "
         "in the last 15 days. Please upgrade to an active model on Amazon Bedrock"), "fail", 1, False),
    Case("InferenceProfileRequired", err(400, "ValidationException",
         "Invocation of model ID anthropic.claude-3-5-sonnet-20241022-v2:0 with on-demand throughput isn\u2019t "
         "supported. Retry your request with the ID or ARN of an inference profile that contains this model."),
         "fail", 2, True),  # upgraded to the us. inference profile by default (tests/test_fallbacks.py)
    Case("InputTooLong", Reply.validation("Input is too long for requested model."), "fail", 1, False),
    Case("ServiceQuotaExceededException", err(400, "ServiceQuotaExceededException",
         "Your request exceeds the service quota for your account."), "fail", 1, False),
    Case("ConflictException", err(400, "ConflictException", "The request conflicts with the resource state."),
         "fail", 1, False),
    Case("ModelNotReadyException", err(429, "ModelNotReadyException",
         "Model is not ready for inference. Wait and try your request again."), "retry", 2, True),
    Case("ModelTimeoutException", Reply.model_timeout(), "retry", 2, True),
    Case("ModelErrorException", err(424, "ModelErrorException",
         "Model produced invalid sequence as part of ToolUse. Please refer to the model tool use troubleshooting "
         "guide."), "retry", 2, True),
    Case("ModelStreamErrorException", err(424, "ModelStreamErrorException", "The model stream failed."),
         "retry", 2, True),
    Case("GatewayError", Reply.raw(502, "<html><body><h1>502 Bad Gateway</h1></body></html>",
                                   {"Content-Type": "text/html"}), "retry", 2, True),
    Case("GatewayError", Reply.raw(504, "<html>504 Gateway Time-out</html>", {"Content-Type": "text/html"}),
         "retry", 2, True),
    Case("IdleConnectionReset", Reply.reset(), "retry", 2, True),
    Case("IdleConnectionReset", Reply.close(), "retry", 2, True),
    Case("TruncatedResponse", Reply.truncated(Reply.ok(), 10), "retry", 2, True),  # botocore old and new alike
]


def _id(case: Case) -> str:
    return f"{case.entry}-{case.reply.kind}-{case.reply.status}"


@pytest.mark.parametrize("mode", ["legacy", "standard", "adaptive"])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_entry_on_the_wire(case: Case, mode: str, server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server, mode=mode)
    server.script(case.reply)  # one fault, then the default OK reply

    if case.succeeds:
        response = converse(client)
        assert response["ResponseMetadata"]["RetryAttempts"] == case.requests - 1
    else:
        with pytest.raises(ClientError) as raised:
            converse(client)
        info = raised.value.response["BedrockHooks"]
        assert info["entry"] == case.entry
        assert info["decision"] == case.decision
        assert info["retryable"] == (case.decision != "fail")
        assert info["attempts"] == case.requests
        assert info["solution"] and info["cause"]
        message = str(raised.value)
        last_line = message.splitlines()[-1]
        assert last_line.startswith(f"[bedrock-hooks] {case.entry} ({case.decision})")
        assert info["solution"][0] in last_line
        if case.decision == "wait":
            assert info["retry_after"] == 900
    assert len(server.requests) == case.requests


def test_every_catalog_entry_has_a_wire_case_or_a_dedicated_test():
    """A new catalog entry without a test showing it on the wire fails here."""
    dedicated = {"ExpiredToken", "RequestExpired", "ReadTimeout", "ConnectFailure", "TooManyTagsException",
                 "DependencyFailedException"}
    covered = {c.entry for c in CASES} | dedicated
    assert {e.name for e in ENTRIES} <= covered


def test_seed_entries_are_all_in_the_catalog():
    seed = ["AccessDeniedException", "FTUFormNotFilled", "IncompleteSignature", "InternalFailure", "InvalidAction",
            "InvalidClientTokenId", "MarketplaceAgreementFailed", "MarketplaceAgreementPending",
            "MPAgreementBeingCreated", "NotAuthorized", "RequestExpired", "ServiceUnavailable",
            "ThrottlingException", "ValidationError", "ResourceNotFound", "IdleConnectionReset", "ReadTimeout"]
    names = {e.name for e in ENTRIES}
    assert set(seed) <= names


def test_modeled_bedrock_errors_are_all_classified():
    """Every error shape of botocore's bedrock and bedrock-runtime models maps to an entry by code."""
    import botocore.session

    from bedrock_hooks.classification import ErrorFacts, classify

    session = botocore.session.get_session()
    for service in ("bedrock", "bedrock-runtime"):
        model = session.get_service_model(service)
        for name in model.operation_names:
            for shape in model.operation_model(name).error_shapes:
                status = shape.metadata.get("error", {}).get("httpStatusCode")
                result = classify(ErrorFacts(status=status, code=shape.name, message=""))
                assert result is not None, f"{service} {shape.name} unclassified"


@pytest.mark.parametrize("mode", ["legacy", "standard", "adaptive"])
def test_control_plane_bedrock_client_is_covered(mode, server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server, service="bedrock", mode=mode)
    server.script(Reply.throttling(), Reply.service_unavailable())
    response = client.list_foundation_models()
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    server.script(err(400, "TooManyTagsException", "Too many tags."))
    with pytest.raises(ClientError) as raised:
        client.tag_resource(resourceARN="arn:aws:bedrock:us-east-1:123456789012:custom-model/x",
                            tags=[{"key": "k", "value": "v"}])
    assert raised.value.response["BedrockHooks"]["entry"] == "TooManyTagsException"
