"""The Bedrock error catalog: every condition the library recognises, as data.

Each :class:`Entry` says how to recognise a condition on the wire (error codes, HTTP statuses,
a message pattern, or the botocore exception class for network faults), what causes it, what
the user should do, and what the library decides. The entries come from three places, recorded
in ``source``: the AWS troubleshooting page the library was built from (``seed``), the modeled
errors of botocore's ``bedrock``/``bedrock-runtime`` service models (``model``), and the codes and
messages Bedrock really sends as quoted in public issues (``observed``; see
``docs/research/bedrock-errors.md``).

Recognition order lives in :mod:`bedrock_hooks.classify`; nothing here branches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum


class Decision(str, Enum):
    """What the library does with an error (the value is the stable, documented spelling)."""

    RETRY = "retry"  #: back off and send the same request again
    FIX_AND_RETRY = "fix-and-retry"  #: repair the cause (clock, credentials) and retry once, at once
    WAIT = "wait"  #: clears only after minutes: fail now, carrying ``retry_after``
    FAIL = "fail"  #: never retried, even where botocore would


class Backoff(str, Enum):
    """Which backoff curve a retryable entry uses."""

    TRANSIENT = "transient"  #: server-side blip: short exponential backoff
    THROTTLE = "throttle"  #: quota pressure: longer exponential backoff
    RECONNECT = "reconnect"  #: dead connection: first retry at once on a fresh connection, then transient


class Remedy(str, Enum):
    """The repair a ``fix-and-retry`` entry applies before its single retry."""

    CLOCK_SKEW = "clock-skew"
    REFRESH_CREDENTIALS = "refresh-credentials"


def _codes(*names: str) -> frozenset[str]:
    return frozenset(names)


@dataclass(frozen=True)
class Entry:
    """One recognisable condition.

    Each recogniser identifies the entry on its own, most specific first: ``message`` (a
    case-insensitive regular expression searched in the error message, whatever the code), then
    ``codes`` (error codes as AWS spells them; compared case-insensitively), then ``statuses`` (HTTP statuses, used only
    when the code is unknown), then ``exceptions`` (botocore/urllib3 exception class names, matched
    along the MRO, for failures that produced no response).
    """

    name: str
    status: int | None
    cause: str
    solution: tuple[str, ...]
    decision: Decision
    codes: frozenset[str] = frozenset()
    statuses: frozenset[int] = frozenset()
    message: re.Pattern[str] | None = None
    exceptions: frozenset[str] = frozenset()
    backoff: Backoff = Backoff.TRANSIENT
    remedy: Remedy | None = None
    retry_after: float | None = None  #: default wait for ``wait`` entries when the message states none
    max_attempts: int | None = None  #: a tighter attempt cap than the policy's, for doubtful retries
    ambiguous: bool = False  #: the request may have been processed (sent, no answer): resend only if idempotent
    #: When a configured fallback may take over: ``"now"`` (this model cannot serve the call) or
    #: ``"exhausted"`` (after the retry budget is spent); ``"exhausted"`` entries also feed the circuit breaker.
    reroute: str | None = None
    source: str = "seed"
    fields: tuple[str, ...] = field(default=())  #: facts the hint adds (clock_skew, credentials, botocore)

    @property
    def retryable(self) -> bool:
        """Whether sending the request again can ever succeed without a code or config change."""
        return self.decision is not Decision.FAIL


def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


RETRY_WITH_BACKOFF = (
    "Retry with exponential backoff and random jitter (bedrock-hooks already does this).",
)
SUPPORT = "If it persists, contact AWS Support with the request ID."
MARKETPLACE_WAIT = 900.0

ENTRIES: tuple[Entry, ...] = (
    # --- Access and identity -------------------------------------------------------------------
    Entry(
        name="AccessDeniedException",
        status=403,
        cause="You do not have sufficient permissions to perform the requested action.",
        solution=(
            "Verify that your IAM user or role has the necessary permissions (e.g. bedrock:InvokeModel) "
            "for the action and model.",
            "If you are using temporary security credentials, ensure they haven't expired.",
        ),
        decision=Decision.FAIL,
        codes=_codes("AccessDeniedException", "AccessDenied"),
        statuses=frozenset({403}),
        fields=("credentials",),
        reroute="now",
    ),
    Entry(
        name="FTUFormNotFilled",
        status=404,
        cause="Model use case details have not been submitted for this account.",
        solution=(
            "Fill out the Anthropic use case details form (Amazon Bedrock console) before using the model.",
            "If you already submitted it, try again after the stated wait (usually 15 minutes).",
        ),
        decision=Decision.WAIT,
        message=_re(r"use case details|use case form|FTUFormNotFilled"),
        retry_after=MARKETPLACE_WAIT,
        reroute="now",
    ),
    Entry(
        name="IncompleteSignature",
        status=400,
        cause="The request signature does not conform to AWS standards or does not match.",
        solution=(
            "Ensure you are using an AWS SDK (botocore) version that supports Amazon Bedrock.",
            "Verify that your AWS access key ID and secret key are correctly configured.",
            "If you are manually signing requests, double-check your signature calculation.",
        ),
        decision=Decision.FAIL,
        codes=_codes("IncompleteSignature", "IncompleteSignatureException", "InvalidSignatureException",
                     "SignatureDoesNotMatch", "MissingAuthenticationToken", "MissingAuthenticationTokenException"),
        fields=("botocore", "credentials"),
    ),
    Entry(
        name="InvalidClientTokenId",
        status=403,
        cause="The AWS access key ID or security token provided does not exist in AWS records.",
        solution=(
            "Verify that you are using the correct AWS access key ID.",
            "If you recently created new access keys, ensure you are using the new credentials and not the old ones.",
        ),
        decision=Decision.FAIL,
        codes=_codes("InvalidClientTokenId", "UnrecognizedClientException", "UnrecognizedClient"),
        fields=("credentials",),
    ),
    Entry(
        name="ExpiredToken",
        status=403,
        cause="The temporary security credentials (session token) used to sign the request have expired.",
        solution=(
            "Use refreshable credentials (an IAM role, SSO, a credential_process) so botocore renews them.",
            "If you pass a session token yourself, obtain a new one before it expires.",
        ),
        decision=Decision.FIX_AND_RETRY,
        remedy=Remedy.REFRESH_CREDENTIALS,
        message=_re(r"security token included in the request is expired|token (has )?expired|credentials have expired"),
        codes=_codes("ExpiredTokenException", "ExpiredToken", "TokenRefreshRequired"),
        fields=("credentials",),
        source="observed",
    ),
    Entry(
        name="NotAuthorized",
        status=400,
        cause="You do not have permission to perform this action.",
        solution=(
            "Review your IAM permissions for the requested action on Amazon Bedrock resources.",
            "If you are using an IAM role, verify its permissions and trust relationships.",
            "Check organizational policies or service control policies that might restrict access.",
        ),
        decision=Decision.FAIL,
        message=_re(r"account is not authorized to invoke this API operation"),
        codes=_codes("NotAuthorized", "NotAuthorizedException", "UnauthorizedException", "UnauthorizedOperation"),
        statuses=frozenset({401}),
        fields=("credentials",),
    ),
    Entry(
        name="RequestExpired",
        status=400,
        cause="The request is no longer valid: its signing timestamp is too far from AWS time (clock skew).",
        solution=(
            "Ensure your system clock is synchronized with a reliable time source (NTP, chrony, Amazon Time Sync).",
            "If you are making requests from different time zones, be aware of timestamp discrepancies.",
        ),
        decision=Decision.FIX_AND_RETRY,
        remedy=Remedy.CLOCK_SKEW,
        message=_re(r"signature expired|signature not yet current|request has expired|"
                    r"request time too skewed|timestamp.*(expired|too skewed|out of range)"),
        codes=_codes("RequestExpired", "RequestTimeTooSkewed", "RequestInTheFuture", "SignatureExpired"),
        fields=("clock_skew",),
    ),
    # --- AWS Marketplace subscription states ----------------------------------------------------
    Entry(
        name="MPAgreementBeingCreated",
        status=403,
        cause="Your AWS Marketplace subscription for this model is still being processed.",
        solution=("Try again after 15 minutes.",),
        decision=Decision.WAIT,
        message=_re(r"subscription .*(is )?(still )?being processed|agreement is being created|MPAgreementBeingCreated"),
        retry_after=MARKETPLACE_WAIT,
        reroute="now",
    ),
    Entry(
        name="MarketplaceAgreementPending",
        status=403,
        cause="The AWS Marketplace agreement has not succeeded and 15 minutes have passed since the request.",
        solution=(
            "Try the request again every 15 minutes.",
            SUPPORT,
        ),
        decision=Decision.WAIT,
        message=_re(r"(marketplace|agreement|subscription).*(pending|in progress|not yet (complete|active))"),
        retry_after=MARKETPLACE_WAIT,
        reroute="now",
    ),
    Entry(
        name="MarketplaceSubscribePermissionMissing",
        status=403,
        cause="The caller lacks the AWS Marketplace permissions needed to enable this model on first use.",
        solution=(
            "Grant aws-marketplace:Subscribe and aws-marketplace:ViewSubscriptions (or have an admin invoke the "
            "model once), then retry after the stated wait.",
        ),
        decision=Decision.FAIL,
        message=_re(r"aws-marketplace:(Subscribe|ViewSubscriptions)|required AWS Marketplace actions"),
        source="observed",
        reroute="now",
    ),
    Entry(
        name="MarketplaceAgreementFailed",
        status=403,
        cause="The AWS Marketplace agreement failed due to an underlying issue (e.g. invalid payment, restricted geo-location).",
        solution=(
            "Review the error message and remediate the underlying issue.",
            "For INVALID_PAYMENT_INSTRUMENT, review the payment method on the account (AISPL card restrictions apply).",
        ),
        decision=Decision.FAIL,
        message=_re(r"INVALID_PAYMENT_INSTRUMENT|subscription for this model cannot be completed|"
                    r"(marketplace|agreement|subscription).*(fail|invalid payment|restricted)"),
        reroute="now",
    ),
    Entry(
        name="ModelAccessNotGranted",
        status=403,
        cause="Access to this foundation model has not been granted to the account in this Region.",
        solution=(
            "Request access to the model in the Amazon Bedrock console (Model access) for this Region.",
            "Check that the model ID is offered in this Region.",
        ),
        decision=Decision.FAIL,
        message=_re(r"(don't|do not) have access to the model"),
        source="observed",
        reroute="now",
    ),
    # --- Throttling and quotas ------------------------------------------------------------------
    Entry(
        name="DailyTokenQuotaExceeded",
        status=429,
        cause="The account's tokens-per-day quota for this model is exhausted; retrying before the day rolls over cannot succeed.",
        solution=(
            "Request a quota increase (Service Quotas console, 'tokens per day') or use another model or Region.",
            "For high throughput requirements, explore Provisioned Throughput or cross-Region inference.",
        ),
        decision=Decision.FAIL,
        message=_re(r"tokens? per day|daily (token )?(quota|limit)"),
        source="observed",
        reroute="now",
    ),
    Entry(
        name="ThrottlingException",
        status=429,
        cause="The request was denied because it exceeds the account quotas for Amazon Bedrock (requests or tokens per minute).",
        solution=(
            "Check your Amazon Bedrock service quotas in the Service Quotas console.",
            *RETRY_WITH_BACKOFF,
            "For high throughput requirements, explore Provisioned Throughput or cross-Region inference profiles.",
            "Request a quota increase if your workload exceeds your account quotas.",
        ),
        decision=Decision.RETRY,
        backoff=Backoff.THROTTLE,
        codes=_codes("ThrottlingException", "Throttling", "ThrottledException", "TooManyRequestsException",
                     "RequestLimitExceeded", "SlowDown"),
        statuses=frozenset({429}),
        reroute="exhausted",
    ),
    Entry(
        name="ServiceQuotaExceededException",
        status=400,
        cause="The request exceeds a service quota of your account (not a momentary rate): retrying will not help.",
        solution=(
            "Check the quota named in the message in the Service Quotas console and request an increase.",
            "Reduce the request (fewer tokens, smaller batch) or use Provisioned Throughput.",
        ),
        decision=Decision.FAIL,
        codes=_codes("ServiceQuotaExceededException", "ServiceQuotaExceeded",
                     "ResourceLimitExceededException"),
        statuses=frozenset({402}),
        source="model",
    ),
    # --- Server side ----------------------------------------------------------------------------
    Entry(
        name="InternalFailure",
        status=500,
        cause="The request processing has failed due to a server error.",
        solution=(*RETRY_WITH_BACKOFF, SUPPORT),
        decision=Decision.RETRY,
        codes=_codes("InternalFailure", "InternalServerException", "InternalServerError", "InternalError",
                     "ServiceException", "ServiceFailure"),
        statuses=frozenset({500}),
        ambiguous=True,  # the service may have applied the request before failing
    ),
    Entry(
        name="ServiceUnavailable",
        status=503,
        cause="The service is temporarily unable to handle the request (high demand or temporary capacity "
              "constraints; not your account quota).",
        solution=(
            *RETRY_WITH_BACKOFF,
            "If it persists, switch to a different AWS Region or use cross-Region inference profiles.",
            "For high throughput requirements, explore Provisioned Throughput.",
            "Check the AWS Health Dashboard for announced issues.",
        ),
        decision=Decision.RETRY,
        codes=_codes("ServiceUnavailable", "ServiceUnavailableException", "ServiceUnavailableError"),
        statuses=frozenset({503}),
        reroute="exhausted",
    ),
    Entry(
        name="GatewayError",
        status=502,
        cause="A gateway or proxy between you and Amazon Bedrock failed or timed out (502/504).",
        solution=(*RETRY_WITH_BACKOFF, "If it persists, check proxies and VPC endpoints on the path."),
        decision=Decision.RETRY,
        codes=_codes("BadGatewayException", "BadGateway", "GatewayTimeout", "GatewayTimeoutException"),
        statuses=frozenset({502, 504}),
        ambiguous=True,  # the gateway may have passed the request on before failing
        source="observed",
    ),
    Entry(
        name="ModelNotReadyException",
        status=429,
        cause="The model is not ready to serve inference requests yet (it is being loaded or scaled).",
        solution=("Retry with backoff: the model becomes ready within minutes (bedrock-hooks already does this).",),
        decision=Decision.RETRY,
        codes=_codes("ModelNotReadyException"),
        source="model",
        reroute="exhausted",
    ),
    Entry(
        name="ModelTimeoutException",
        status=408,
        cause="The model took too long to process the request.",
        solution=(
            "Retry; if it keeps timing out, shorten the prompt or lower maxTokens, or use a streaming operation.",
        ),
        decision=Decision.RETRY,
        codes=_codes("ModelTimeoutException"),
        statuses=frozenset({408}),
        max_attempts=3,
        source="model",
    ),
    Entry(
        name="ModelErrorException",
        status=424,
        cause="The model failed while processing the request.",
        solution=(
            "Retry once; if it fails again, check the request against the model's documented input format.",
        ),
        decision=Decision.RETRY,
        codes=_codes("ModelErrorException"),
        max_attempts=2,
        source="model",
    ),
    Entry(
        name="ModelStreamErrorException",
        status=424,
        cause="The model failed while streaming its response.",
        solution=("Re-issue the request; partial output already received is incomplete.",),
        decision=Decision.RETRY,
        codes=_codes("ModelStreamErrorException"),
        max_attempts=2,
        source="model",
    ),
    Entry(
        name="DependencyFailedException",
        status=424,
        cause="A resource the request depends on (e.g. a Lambda function of an agent) failed.",
        solution=("Check the dependent resource named in the message (its logs and permissions).",),
        decision=Decision.FAIL,
        codes=_codes("DependencyFailedException"),
        source="model",
    ),
    # --- Request problems -----------------------------------------------------------------------
    Entry(
        name="InferenceProfileRequired",
        status=400,
        cause="This model cannot be invoked with on-demand throughput by its model ID; it must be called "
              "through an inference profile.",
        solution=(
            "Use the ID or ARN of an inference profile that contains the model (e.g. prefix the model ID "
            "with 'us.', 'eu.' or 'apac.').",
        ),
        decision=Decision.FAIL,
        message=_re(r"on-demand throughput (isn.?t|is not) supported|inference profile that contains this model"),
        source="observed",
        reroute="now",
    ),
    Entry(
        name="ModelEndOfLife",
        status=404,
        cause="The model version has reached end of life and is no longer served.",
        solution=("Move to a currently supported model version (see the Bedrock model lifecycle page).",),
        decision=Decision.FAIL,
        message=_re(r"end of (its )?life|end-of-life|has been (deprecated|retired)|no longer (supported|available)"),
        source="observed",
        reroute="now",
    ),
    Entry(
        name="LegacyModelAccessDenied",
        status=404,
        cause="The model is marked Legacy by its provider and this account has not used it recently.",
        solution=("Upgrade to an active model on Amazon Bedrock.",),
        decision=Decision.FAIL,
        message=_re(r"marked by provider as legacy|legacy model|as Legacy"),
        source="observed",
        reroute="now",
    ),
    Entry(
        name="InputTooLong",
        status=400,
        cause="The prompt (with images, documents and tool definitions) exceeds the model's context window.",
        solution=(
            "Shorten or summarise the conversation history, or choose a model with a larger context window.",
        ),
        decision=Decision.FAIL,
        message=_re(r"input is too long|prompt is too long|too many input tokens|exceeds? (the )?(model'?s? )?"
                    r"(maximum )?context (window|length)"),
        source="observed",
    ),
    Entry(
        name="InvalidAction",
        status=400,
        cause="The action or operation requested is invalid.",
        solution=(
            "Double-check the spelling and formatting of the action name.",
            "Verify that the action is supported by Amazon Bedrock in this Region.",
            "Ensure you are using an up-to-date AWS SDK (botocore) or CLI.",
        ),
        decision=Decision.FAIL,
        message=_re(r"requested operation is not recognized by the service"),
        codes=_codes("InvalidAction", "UnknownOperationException", "UnknownOperation", "InvalidActionException"),
        fields=("botocore",),
    ),
    Entry(
        name="ValidationError",
        status=400,
        cause="The input fails to satisfy the constraints specified by Amazon Bedrock.",
        solution=(
            "Review the API documentation: all required parameters included and formatted correctly.",
            "Check that input values are within allowed ranges or conform to the expected patterns.",
        ),
        decision=Decision.FAIL,
        codes=_codes("ValidationException", "ValidationError", "InvalidParameterValue", "InvalidParameterException",
                     "InvalidInputException", "InvalidRequestException", "SerializationException"),
        statuses=frozenset({400, 413}),
    ),
    Entry(
        name="ResourceNotFound",
        status=404,
        cause="The requested resource could not be found.",
        solution=(
            "Verify the model ID, inference profile, endpoint name or other resource identifier, and the Region.",
            "Use ListFoundationModels to see the models available to you; configure fallbacks for alternatives.",
        ),
        decision=Decision.FAIL,
        message=_re(r"provided model identifier is invalid|could not resolve the foundation model"),
        codes=_codes("ResourceNotFoundException", "ResourceNotFound", "NotFoundException", "ModelNotFound"),
        statuses=frozenset({404}),
        reroute="now",
    ),
    Entry(
        name="ConflictException",
        status=409,
        cause="The request conflicts with the current state of the resource (e.g. a name already in use).",
        solution=("Check the resource's current state; use a unique name or wait for the running operation.",),
        decision=Decision.FAIL,
        codes=_codes("ConflictException", "ResourceInUseException", "ConcurrentModificationException",
                     "DuplicateIdException"),
        statuses=frozenset({409}),
        source="model",
    ),
    Entry(
        name="TooManyTagsException",
        status=400,
        cause="The request would exceed the maximum number of tags on the resource.",
        solution=("Remove tags before adding new ones (at most 200 per resource).",),
        decision=Decision.FAIL,
        codes=_codes("TooManyTagsException"),
        source="model",
    ),
    # --- Network --------------------------------------------------------------------------------
    Entry(
        name="IdleConnectionReset",
        status=None,
        cause="The connection was reset or closed before a response arrived; NAT Gateways, interface VPC "
              "endpoints and NLBs silently drop TCP flows idle for 350 s.",
        solution=(
            "bedrock-hooks retried at once on a fresh connection; keep BEDROCK_HOOKS_KEEPALIVE on (probes at 45 s) "
            "and BEDROCK_HOOKS_POOL_MAX_IDLE below 350 s.",
            "Without the library: Config(tcp_keepalive=True) plus sysctl net.ipv4.tcp_keepalive_time=45.",
        ),
        decision=Decision.RETRY,
        backoff=Backoff.RECONNECT,
        ambiguous=True,
        exceptions=frozenset({"ConnectionClosedError", "ProtocolError", "ConnectionResetError",
                              "BrokenPipeError", "RemoteDisconnected",
                              "ClientPayloadError"}),  # aiohttp's, for a body cut mid-stream (aiobotocore)
    ),
    Entry(
        name="TruncatedResponse",
        status=None,
        cause="The answer ended before its Content-Length: the connection dropped in the middle of the body "
              "(an idle-timeout NAT Gateway, VPC endpoint or NLB, a proxy, or the service closing it).",
        solution=(
            "bedrock-hooks retried on a fresh connection and never returns a cut answer; if this persists, check "
            "proxies and VPC endpoints on the path.",
            "Keep BEDROCK_HOOKS_KEEPALIVE on and BEDROCK_HOOKS_POOL_MAX_IDLE below 350 s.",
        ),
        decision=Decision.RETRY,
        backoff=Backoff.RECONNECT,
        ambiguous=True,  # the answer was on its way: the request was processed
        exceptions=frozenset({"IncompleteRead", "IncompleteReadError"}),
        source="observed",
    ),
    Entry(
        name="ReadTimeout",
        status=None,
        cause="No bytes arrived within the client's read_timeout: a long generation, or a pooled connection "
              "the network silently dropped (NAT/VPC endpoint/NLB idle timeout of 350 s).",
        solution=(
            "For long generations raise Config(read_timeout=...) (botocore default 60 s) or stream the response.",
            "For idle drops keep BEDROCK_HOOKS_KEEPALIVE on and BEDROCK_HOOKS_POOL_MAX_IDLE below 350 s.",
        ),
        decision=Decision.RETRY,
        backoff=Backoff.RECONNECT,
        ambiguous=True,
        exceptions=frozenset({"ReadTimeoutError", "ReadTimeout", "TimeoutError"}),
        max_attempts=3,
    ),
    Entry(
        name="ConnectFailure",
        status=None,
        cause="A TCP/TLS connection to the Bedrock endpoint could not be established.",
        solution=(
            "Check DNS, security groups, proxies and the interface VPC endpoint for this Region.",
            *RETRY_WITH_BACKOFF,
        ),
        decision=Decision.RETRY,
        exceptions=frozenset({"EndpointConnectionError", "ConnectTimeoutError", "ConnectionRefusedError",
                              "NewConnectionError"}),
    ),
)
