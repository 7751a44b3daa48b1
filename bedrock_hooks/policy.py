"""Retry policy: one immutable object that turns a classification and a call's retry state into a verdict.

Modelled on urllib3's ``Retry.increment`` (the state of a call's retries is a value, and every failure
returns the next one) and botocore's ``retries/standard.py`` (small checks composed in order, the
first that refuses decides, and the retry quota is charged only once every check passed). The same
:meth:`RetryPolicy.decide` serves unary calls (``needs-retry``) and streams failing before any content.
Time, randomness, the remedy and the quota are injected, so the function itself touches nothing.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from .catalog import Backoff, Decision, Entry
from .classification import Classification
from .config import Settings
from .state import RetryState

#: botocore standard mode's attempts (``botocore.retries.standard.DEFAULT_MAX_ATTEMPTS``): unless
#: attempts are configured, errors other than throttling get no more, so an outage never costs more
#: requests than plain botocore.
STANDARD_MAX_ATTEMPTS = 3
#: No computed sleep exceeds this, whatever the settings say (time.sleep overflows near 1e10 s).
MAX_DELAY = 3600.0
_MAX_EXPONENT = 62  # 2**62 times any base is past MAX_DELAY: a larger exponent only risks overflow

#: Operations that only read or infer although their HTTP method is not GET: sending one again
#: changes nothing. Every other non-GET operation creates, changes or deletes something (data).
READ_ONLY_OPERATIONS: frozenset[tuple[str, str]] = frozenset({
    ("bedrock", "ListTagsForResource"),
    *(("bedrock-runtime", name) for name in (
        "ApplyGuardrail", "Converse", "ConverseStream", "CountTokens", "InvokeModel",
        "InvokeModelWithBidirectionalStream", "InvokeModelWithResponseStream")),
    *(("bedrock-agent-runtime", name) for name in (
        "GenerateQuery", "GetInvocationStep", "ListInvocationSteps", "ListInvocations", "ListSessions",
        "OptimizePrompt", "Rerank", "Retrieve")),
    *(("bedrock-agent", name) for name in (
        "GetKnowledgeBaseDocuments", "ListAgentActionGroups", "ListAgentAliases", "ListAgentCollaborators",
        "ListAgentKnowledgeBases", "ListAgentVersions", "ListAgents", "ListDataSources", "ListIngestionJobs",
        "ListKnowledgeBaseDocuments", "ListKnowledgeBases", "ValidateFlowDefinition")),
})
_SAFE_METHODS = frozenset({"GET", "HEAD"})


def is_mutating(operation_model: Any) -> bool:
    """Whether an operation creates, changes or deletes something, read from its service model:
    any HTTP method other than GET/HEAD, unless the operation is a documented read (:data:`READ_ONLY_OPERATIONS`)."""
    http = getattr(operation_model, "http", None) or {}
    if str(http.get("method", "POST")).upper() in _SAFE_METHODS:
        return False
    service = getattr(getattr(operation_model, "service_model", None), "service_name", None)
    return (service, getattr(operation_model, "name", None)) not in READ_ONLY_OPERATIONS


def resend_is_safe(operation_model: Any) -> bool:
    """Whether an operation may be sent again after it may already have been processed.

    Reads are always safe. A mutating operation is safe only when its input has an idempotency
    token member, which botocore fills once per call (``clientRequestToken`` and the like), so the
    resent request carries the same token and the service applies it once.
    """
    if operation_model is None or not is_mutating(operation_model):
        return True
    return bool(getattr(operation_model, "idempotent_members", None))


class Reason(str, Enum):
    """Why a verdict is what it is: a stable word for logs, hints (``stopped_because``) and tests."""

    BACKOFF = "backoff"  #: retry after exponential backoff with full jitter
    RETRY_AFTER = "retry-after"  #: retry after the wait the server asked for (Retry-After)
    RECONNECT = "reconnect"  #: retry at once on a fresh connection
    REMEDY = "remedy"  #: the cause was repaired: retry at once
    FAIL = "fail"  #: sending it again cannot succeed
    WAIT = "wait"  #: clears only after minutes
    NOT_IDEMPOTENT = "not-idempotent"  #: may already be applied and carries no idempotency token
    MAX_ATTEMPTS = "max-attempts"
    DEADLINE = "deadline"  #: the next sleep would end past the retry deadline
    RETRY_QUOTA = "retry-quota"  #: the client's retry quota is spent (a retry storm is under way)
    REMEDY_USED = "remedy-used"  #: the repair was already tried once in this call
    REMEDY_UNAVAILABLE = "remedy-unavailable"  #: nothing to repair with (static keys, no Date header...)
    CONTENT_DELIVERED = "content-delivered"  #: a stream already delivered output: re-issuing would duplicate it
    NOT_RECOVERABLE = "not-recoverable"  #: a stream the library does not re-issue (agents, stream retry off)
    REISSUE_FAILED = "reissue-failed"


#: Verdicts that end a call because its budget is spent (botocore marks those ``MaxAttemptsReached``).
BUDGET_SPENT = frozenset({Reason.MAX_ATTEMPTS, Reason.DEADLINE})


@dataclass(frozen=True)
class Verdict:
    """The outcome for one failed attempt: ``retry`` after ``delay`` seconds, or not, and why."""

    retry: bool
    delay: float = 0.0
    reason: Reason = Reason.FAIL


#: Side effects a decision may need, injected by the caller. A remedy returns whether it repaired the
#: cause; a budget takes the retry's cost from the retry quota and returns it (None: the quota is spent).
Remedy = Callable[[], bool]
Budget = Callable[[], "int | None"]
#: Whether the retry quota is calm: given what this call holds, no other call holds any of it (no outage).
Calm = Callable[[int], bool]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by attempts, by a retry deadline and by a quota."""

    max_attempts: int = 5  #: throttling (and every error when attempts were configured)
    transient_attempts: int = STANDARD_MAX_ATTEMPTS  #: every other retryable error
    backoff_base: float = 0.5
    throttle_backoff_base: float = 2.0
    backoff_cap: float = 20.0
    deadline: float = 60.0

    @classmethod
    def for_client(cls, settings: Settings, client: Any) -> RetryPolicy:
        """The policy for ``client``: :meth:`from_settings` with the client's own attempt count."""
        retries = getattr(client.meta.config, "retries", None) or {}
        return cls.from_settings(settings, retries.get("total_max_attempts"))

    @classmethod
    def from_settings(cls, settings: Settings, client_max_attempts: int | None = None) -> RetryPolicy:
        """The policy for one client: an explicit BEDROCK_HOOKS_MAX_ATTEMPTS wins, then the client's
        own ``Config(retries={"max_attempts": ...})`` (both for every error); otherwise throttling gets
        the library default and other errors botocore standard mode's three attempts."""
        attempts = max(1, int(settings.max_attempts))
        transient = min(attempts, STANDARD_MAX_ATTEMPTS)
        if settings.explicitly_set("max_attempts"):
            transient = attempts
        elif client_max_attempts is not None:
            attempts = transient = max(1, int(client_max_attempts))
        return cls(max_attempts=attempts, transient_attempts=transient, backoff_base=settings.backoff_base,
                   throttle_backoff_base=settings.throttle_backoff_base, backoff_cap=settings.backoff_cap,
                   deadline=settings.retry_deadline)

    def attempt_limit(self, entry: Entry) -> int:
        """Attempts a call may make while this entry is what fails it."""
        limit = self.max_attempts if entry.backoff is Backoff.THROTTLE else self.transient_attempts
        return min(limit, entry.max_attempts or limit)

    def within_standard(self, state: RetryState) -> bool:
        """Whether a retry after attempt ``state.attempts`` is one botocore standard mode's count allows too."""
        return state.attempts < self.transient_attempts

    def backoff(self, entry: Entry, retry_number: int, rng: random.Random | None = None) -> float:
        """Sleep before retry ``retry_number`` (1 for the first retry): full jitter over a bounded exponential."""
        base = self.throttle_backoff_base if entry.backoff is Backoff.THROTTLE else self.backoff_base
        exponent = min(max(0, retry_number - 1), _MAX_EXPONENT)
        ceiling = min(self.backoff_cap, base * 2.0 ** exponent, MAX_DELAY)
        return (rng or random).uniform(0.0, ceiling)

    def delay(self, classification: Classification, retry_number: int,
              rng: random.Random | None = None) -> tuple[float, Reason]:
        """The server's ``Retry-After`` when it is usable (0 < wait <= cap, as botocore standard mode
        and the Anthropic SDK bound it), else the backoff."""
        stated = classification.stated_wait
        if stated is not None and 0.0 < stated <= min(self.backoff_cap, MAX_DELAY):
            return stated, Reason.RETRY_AFTER
        return self.backoff(classification.entry, retry_number, rng), Reason.BACKOFF

    def decide(self, classification: Classification, state: RetryState, now: float, *,
               resend_safe: bool = True, remedy: Remedy | None = None, budget: Budget | None = None,
               calm: Calm | None = None, rng: random.Random | None = None) -> tuple[Verdict, RetryState]:
        """The verdict on attempt ``state.attempts`` (1-based, just failed) and the call's next state.

        ``resend_safe`` says the operation may be sent again after an ambiguous failure (see
        :func:`resend_is_safe`); ``remedy`` repairs a ``fix-and-retry`` cause (called at most once
        per call, only when every earlier check passed); ``budget`` takes the retry's cost from the
        client's retry quota (called last, only for a retry); ``calm`` says whether the quota is untouched
        by other calls: throttling's attempts beyond botocore standard mode's are made only then (in an
        outage every call gets standard mode's count, so the library never sends more requests than it).
        """
        first = now if state.first_failure is None else state.first_failure
        state = state if first == state.first_failure else replace(state, first_failure=first)
        verdict = self._verdict(classification, state, now - first, resend_safe, remedy, rng)
        if verdict.retry and not self.within_standard(state) and calm is not None and not calm(state.held):
            verdict = Verdict(False, reason=Reason.MAX_ATTEMPTS)  # throttling's extra attempts are not for an outage
        if verdict.reason is Reason.REMEDY or (verdict.reason is Reason.REMEDY_UNAVAILABLE and remedy is not None):
            state = replace(state, remedy_used=True)
        if not verdict.retry:
            return verdict, state
        charged = budget() if budget is not None else 0
        if charged is None:
            return Verdict(False, reason=Reason.RETRY_QUOTA), state
        return verdict, replace(state, charged=charged, held=state.held + charged,
                                reconnected=state.reconnected or verdict.reason is Reason.RECONNECT)

    def _verdict(self, classification: Classification, state: RetryState, elapsed: float, resend_safe: bool,
                 remedy: Remedy | None, rng: random.Random | None) -> Verdict:
        entry = classification.entry
        if entry.decision is Decision.FAIL:
            return Verdict(False, reason=Reason.FAIL)
        if entry.decision is Decision.WAIT:
            return Verdict(False, reason=Reason.WAIT)
        if entry.ambiguous and not resend_safe:
            return Verdict(False, reason=Reason.NOT_IDEMPOTENT)
        if state.attempts >= self.attempt_limit(entry):
            return Verdict(False, reason=Reason.MAX_ATTEMPTS)
        if entry.decision is Decision.FIX_AND_RETRY:
            if state.remedy_used:
                return Verdict(False, reason=Reason.REMEDY_USED)
            if remedy is None or not remedy():
                return Verdict(False, reason=Reason.REMEDY_UNAVAILABLE)
            return Verdict(True, 0.0, Reason.REMEDY)
        if entry.backoff is Backoff.RECONNECT and not state.reconnected:
            return Verdict(True, 0.0, Reason.RECONNECT)
        delay, reason = self.delay(classification, state.attempts, rng)
        if elapsed + delay > self.deadline:
            return Verdict(False, reason=Reason.DEADLINE)
        return Verdict(True, delay, reason)

    def describe(self, operation: str, classification: Classification, verdict: Verdict, attempts: int) -> str:
        """One readable log line: operation, entry, decision, attempt and wait."""
        entry = classification.entry
        limit = self.attempt_limit(entry)
        if verdict.retry:
            wait = f"in {verdict.delay:.2f}s" if verdict.delay else "at once"
            return (f"bedrock-hooks: {operation}: {entry.name} -> retry {wait} ({verdict.reason.value}; "
                    f"attempt {attempts} of {limit} failed)")
        if verdict.reason in (Reason.FAIL, Reason.WAIT):
            return (f"bedrock-hooks: {operation}: {entry.name} -> {entry.decision.value}, not retried "
                    f"(fails fast at attempt {attempts})")
        return f"bedrock-hooks: {operation}: {entry.name} -> stop after attempt {attempts} ({verdict.reason.value})"
