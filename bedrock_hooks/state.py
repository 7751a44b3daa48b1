"""The state of one API call across its attempts, kept in botocore's per-call ``context`` dict.

Two things live here:

* :class:`RetryState`, an immutable value saying what the call's retries have spent so far (attempts,
  first failure, the one immediate reconnect, the one remedy, quota held). Decisions never change it:
  :meth:`bedrock_hooks.policy.RetryPolicy.decide` returns the next value, as urllib3's
  ``Retry.increment`` returns a new ``Retry``. One decision path serves unary calls and streams.
* :class:`CallState`, the call's record in the context: the current :class:`RetryState`, the current
  attempt's classification (made once, shared by the rate limiter, the retry decision, fallbacks,
  keep-alive notes and hints) and what features add for the hint (``notes``, the fallback ``route``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from . import classification as _classification

if TYPE_CHECKING:
    from .classification import Classification, ErrorFacts
    from .policy import Verdict

STATE_KEY = "bedrock_hooks"

#: Set while a stream is re-issued, so the new call shares the failed call's attempt and deadline budget.
INHERITED_STATE: contextvars.ContextVar[CallState | None] = contextvars.ContextVar("bedrock_hooks_inherited",
                                                                                   default=None)


@dataclass(frozen=True)
class RetryState:
    """What one call's retries have spent: a value, replaced (never changed) by each decision."""

    attempts: int = 0  #: attempts made so far, across re-issues of a stream
    offset: int = 0  #: attempts spent before this HTTP call (a re-issued stream inherits them)
    first_failure: float | None = None  #: clock time of the first failure: the retry deadline counts from it
    reconnected: bool = False  #: the one immediate retry on a fresh connection was spent
    remedy_used: bool = False  #: the one repair (clock, credentials) was tried
    charged: int = 0  #: retry-quota capacity the latest retry took (botocore refunds it on success)
    held: int = 0  #: retry-quota capacity this call's retries hold in all (what no other call took)

    def at(self, http_attempts: int) -> RetryState:
        """This state as of attempt ``http_attempts`` of the current HTTP call (botocore's count)."""
        attempts = http_attempts + self.offset
        return self if attempts == self.attempts else replace(self, attempts=attempts)

    def continued(self) -> RetryState:
        """For a re-issue: the new HTTP call's attempts continue this call's count."""
        return replace(self, offset=self.attempts)

    def restarted(self, http_attempts: int) -> RetryState:
        """A fresh attempt and deadline budget for a new target (fallback model or Region)."""
        return replace(self, offset=-http_attempts, first_failure=None, reconnected=False)


class CallState:
    """One call's record in botocore's per-call context, shared by every feature."""

    __slots__ = ("retry", "verdict", "clock_skew", "notes", "route", "_source", "_classification")

    def __init__(self, retry: RetryState | None = None) -> None:
        self.retry: RetryState = retry or RetryState()
        self.verdict: Verdict | None = None  #: the decision on the current attempt (None: success or botocore's)
        self.clock_skew: float | None = None
        self.notes: list[str] = []  #: sentences for the hint, in the order features added them
        self.route: list[dict[str, Any]] = []  #: fallback moves taken by this call
        self._source: object = None
        self._classification: Classification | None = None

    @property
    def attempts(self) -> int:
        return self.retry.attempts

    @property
    def classification(self) -> Classification | None:
        """The current failed attempt's classification (None after a success or for an unknown error)."""
        return self._classification

    def classify(self, source: object, facts: Callable[[], ErrorFacts | None]) -> Classification | None:
        """Classify the attempt that produced ``source`` (its parsed response or exception) once.

        The first feature to look at an attempt pays for the classification; every later one gets the
        same result: botocore hands each handler of one attempt the very same objects.
        """
        if source is not self._source:
            found = facts()
            self._classification = _classification.classify(found) if found is not None else None
            self._source = source
        return self._classification

    def advance(self, verdict: Verdict | None, retry: RetryState) -> None:
        """Record the decision on the current attempt and the state it leads to."""
        self.verdict = verdict
        self.retry = retry

    def succeeded(self) -> None:
        """The current attempt succeeded: earlier verdicts are history for every later handler."""
        self.verdict = self._classification = self._source = None

    def restart_budget(self, http_attempts: int) -> None:
        """A fallback moved the call to a new target: it gets a fresh attempt and deadline budget."""
        self.retry = self.retry.restarted(http_attempts)

    def note(self, sentence: str) -> None:
        """Add a sentence to the hint once."""
        if sentence not in self.notes:
            self.notes.append(sentence)


def call_state(context: Any) -> CallState:
    """The call's state in botocore's per-call context (inherited from a failed stream when re-issuing)."""
    if not isinstance(context, dict):
        return CallState()
    state = context.get(STATE_KEY)
    if not isinstance(state, CallState):
        state = context[STATE_KEY] = INHERITED_STATE.get() or CallState()
    return state


def existing_state(context: Any) -> CallState | None:
    """The call's state if a feature already made one (never creates it: the success path stays cheap)."""
    state = context.get(STATE_KEY) if isinstance(context, dict) else None
    return state if isinstance(state, CallState) else None


def classify_attempt(context: Any, source: object, facts: Callable[[], ErrorFacts | None]) -> Classification | None:
    """The shared classification of the failed attempt behind ``source`` (see :meth:`CallState.classify`)."""
    return call_state(context).classify(source, facts)
