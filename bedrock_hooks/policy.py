"""Retry policy: one immutable object that turns a classification into a verdict.

Modelled on urllib3's ``Retry`` (one immutable policy) and botocore's ``retries/standard.py``
(small checks composed in order): the checks below run in sequence and the first that refuses
decides. Time and randomness are injected so tests never sleep and are reproducible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .catalog import Backoff, Decision, Entry
from .classification import Classification
from .config import Settings


#: Operation name prefixes that create or change resources: resending one after an ambiguous failure
#: (sent, no answer) may do it twice, unless the request carries an idempotency token.
MUTATING_PREFIXES = ("Create", "Delete", "Update", "Put", "Stop")


def resend_is_safe(operation_model: Any) -> bool:
    """Whether an operation may be sent again after it may already have been processed.

    Reads are always safe. A mutating operation is safe only when its input has an idempotency
    token member, which botocore fills automatically (``clientRequestToken`` and the like).
    """
    name = getattr(operation_model, "name", "") or ""
    if not name.startswith(MUTATING_PREFIXES):
        return True
    shape = getattr(operation_model, "input_shape", None)
    members = getattr(shape, "members", None) or {}
    return any(member.metadata.get("idempotencyToken") for member in members.values())


@dataclass(frozen=True)
class Verdict:
    """The outcome for one failed attempt.

    ``retry`` with ``delay`` seconds to sleep, or not; ``reason`` is a short stable word for logs,
    hints and tests (``backoff``, ``reconnect``, ``remedy``, ``max-attempts``, ``deadline``, ``wait``,
    ``fail``, ``remedy-unavailable``, ``remedy-used``, ``not-idempotent``).
    """

    retry: bool
    delay: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by attempts and by a retry deadline."""

    max_attempts: int = 5
    backoff_base: float = 0.5
    throttle_backoff_base: float = 2.0
    backoff_cap: float = 20.0
    deadline: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings, client_max_attempts: int | None = None) -> RetryPolicy:
        """The policy for one client: an explicit BEDROCK_HOOKS_MAX_ATTEMPTS wins, then the client's
        own ``Config(retries={"max_attempts": ...})``, then the library default."""
        attempts = settings.max_attempts
        if client_max_attempts is not None and not settings.explicitly_set("max_attempts"):
            attempts = max(1, int(client_max_attempts))
        return cls(max_attempts=attempts, backoff_base=settings.backoff_base,
                   throttle_backoff_base=settings.throttle_backoff_base, backoff_cap=settings.backoff_cap,
                   deadline=settings.retry_deadline)

    def backoff(self, entry: Entry, retry_number: int, rng: random.Random | None = None) -> float:
        """Sleep before retry ``retry_number`` (1 for the first retry): full jitter over an exponential."""
        base = self.throttle_backoff_base if entry.backoff is Backoff.THROTTLE else self.backoff_base
        ceiling = min(self.backoff_cap, base * (2 ** max(0, retry_number - 1)))
        return (rng or random).uniform(0.0, ceiling)

    def decide(self, classification: Classification, attempts: int, elapsed: float, *,
               reconnected: bool = False, remedy_ready: bool = False, remedy_used: bool = False,
               resend_safe: bool = True, rng: random.Random | None = None) -> Verdict:
        """Whether attempt ``attempts`` (1-based, just failed) is followed by another.

        ``elapsed`` is the time since the call's first failure; ``reconnected`` says the one
        immediate reconnect retry was already spent; ``remedy_ready`` that the entry's repair
        (clock correction, credential refresh) was applied for this retry; ``remedy_used`` that a
        repair was already tried once in this call; ``resend_safe`` that the operation may be sent
        again after an ambiguous failure (see :func:`resend_is_safe`).
        """
        entry = classification.entry
        if entry.decision is Decision.FAIL:
            return Verdict(False, reason="fail")
        if entry.decision is Decision.WAIT:
            return Verdict(False, reason="wait")
        if entry.ambiguous and not resend_safe:
            return Verdict(False, reason="not-idempotent")
        limit = min(self.max_attempts, entry.max_attempts or self.max_attempts)
        if attempts >= limit:
            return Verdict(False, reason="max-attempts")
        if entry.decision is Decision.FIX_AND_RETRY:
            if remedy_used:
                return Verdict(False, reason="remedy-used")
            if not remedy_ready:
                return Verdict(False, reason="remedy-unavailable")
            return Verdict(True, 0.0, "remedy")
        if entry.backoff is Backoff.RECONNECT and not reconnected:
            return Verdict(True, 0.0, "reconnect")
        delay = self.backoff(entry, attempts, rng)
        if elapsed + delay > self.deadline:
            return Verdict(False, reason="deadline")
        return Verdict(True, delay, "backoff")
