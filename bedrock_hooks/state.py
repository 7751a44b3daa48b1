"""The state of one API call across its attempts, kept in botocore's per-call ``context`` dict.

Every feature that looks at a call (retry decisions, stream re-issue, fallbacks, keep-alive notes,
hints) reads and writes this one record, so a failed attempt is classified once and what the call has
been through is told the same way everywhere.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

from .classification import Classification
from .policy import Verdict

STATE_KEY = "bedrock_hooks"

#: Set while a stream is re-issued, so the new call shares the failed call's attempt and deadline budget.
INHERITED_STATE: contextvars.ContextVar[CallState | None] = contextvars.ContextVar("bedrock_hooks_inherited",
                                                                                   default=None)


@dataclass
class CallState:
    """What one API call has been through, kept in botocore's per-call ``context`` dict."""

    first_failure: float | None = None
    reconnected: bool = False
    remedy_used: bool = False
    classification: Classification | None = None
    verdict: Verdict | None = None
    attempts: int = 0  #: attempts made so far, across re-issues of a stream
    attempt_offset: int = 0  #: attempts spent before this HTTP call (a re-issued stream inherits them)
    clock_skew: float | None = None
    notes: list[str] = field(default_factory=list)
    route: list[dict[str, Any]] = field(default_factory=list)  #: fallback moves taken by this call


def call_state(context: Any) -> CallState:
    """The call's state in botocore's per-call context (inherited from a failed stream when re-issuing)."""
    if not isinstance(context, dict):
        return CallState()
    state = context.get(STATE_KEY)
    if not isinstance(state, CallState):
        state = context[STATE_KEY] = INHERITED_STATE.get() or CallState()
    return state
