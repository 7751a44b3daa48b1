"""Hints: turn a final failure into a message that says what to do.

The hint is one line appended to the error message, plus a ``BedrockHooks`` dict in the error
response for programs. Facts are added where they are at hand (measured clock skew, the credential
*source* botocore used, the botocore version); secrets never are: nothing here reads a key, token
or header value other than ``Date``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .catalog import Decision
from .classification import Classification

PREFIX = "[bedrock-hooks]"
_MAX_LINE = 500


@dataclass
class HintFacts:
    """Call-specific facts a hint may mention; every field is optional."""

    attempts: int | None = None
    reason: str | None = None
    clock_skew: float | None = None
    credential_source: str | None = None
    botocore_version: str | None = None
    notes: list[str] = field(default_factory=list)
    route: list[dict[str, Any]] = field(default_factory=list)  #: fallback moves the call made


def build_info(classification: Classification, facts: HintFacts) -> dict[str, Any]:
    """The ``BedrockHooks`` dict: stable keys documented in the README."""
    entry = classification.entry
    info: dict[str, Any] = {
        "entry": entry.name,
        "decision": entry.decision.value,
        "retryable": entry.retryable,
        # For a "fail" entry this is only ever a wait the server stated ("If you recently fixed this issue,
        # try again after 5 minutes"): how long a fix takes to apply, never a reason to retry unchanged.
        "retry_after": classification.retry_after,
        "attempts": facts.attempts,
        "cause": entry.cause,
        "solution": list(entry.solution),
    }
    if facts.reason:
        info["stopped_because"] = str(getattr(facts.reason, "value", facts.reason))
    if facts.route:
        info["route"] = list(facts.route)
    details = {}
    if facts.clock_skew is not None:
        details["clock_skew_seconds"] = round(facts.clock_skew, 3)
    if facts.credential_source and "credentials" in entry.fields:
        details["credential_source"] = facts.credential_source
    if facts.botocore_version and "botocore" in entry.fields:
        details["botocore_version"] = facts.botocore_version
    if facts.notes:
        details["notes"] = list(facts.notes)
    if details:
        info["details"] = details
    return info


#: Said on every "fail" hint, in words for whoever runs a retry loop around the call (agent frameworks
#: retry throttling-coded errors on their own, see docs/frameworks.md).
NOT_RETRYABLE = "Not retryable: sending it again fails the same way until this is fixed; do not retry it in your code or framework."


def hint_line(info: dict[str, Any]) -> str:
    """One short line: entry, cause, first solution step, whether to retry, and the most telling fact."""
    parts = [f"{PREFIX} {info['entry']} ({info['decision']}): {info['cause']}"]
    solution = info.get("solution") or []
    if solution:
        parts.append(f"Fix: {solution[0]}")
    fixed = len(parts)
    if info.get("decision") == Decision.FAIL.value:
        parts.append(NOT_RETRYABLE)
        fixed += 1
    details = info.get("details") or {}
    if "clock_skew_seconds" in details:
        skew = details["clock_skew_seconds"]
        parts.append(f"Measured clock skew: local clock is {abs(skew):.0f}s {'behind' if skew > 0 else 'ahead of'} AWS.")
    if "credential_source" in details:
        parts.append(f"Credentials came from: {details['credential_source']}.")
    if "botocore_version" in details:
        parts.append(f"botocore {details['botocore_version']}.")
    if info.get("retry_after"):
        wait = f"~{info['retry_after']:.0f}s"
        parts.append(f"If you already fixed it, retry after {wait}." if info.get("decision") == Decision.FAIL.value
                     else f"Retry after {wait}.")
    parts.extend(details.get("notes", ()))
    # Entry, cause, first step and "not retryable" always stand in full; the extras are added while the
    # line stays short.
    line = " ".join(parts[:fixed])
    for extra in parts[fixed:]:
        if len(line) + 1 + len(extra) > _MAX_LINE:
            break
        line = f"{line} {extra}"
    return line


def append_hint(message: str, line: str) -> str:
    """Append the hint once: a message that already carries one is returned unchanged."""
    if PREFIX in (message or ""):
        return message
    return f"{message}\n{line}" if message else line


def annotate_exception(exception: BaseException, info: dict[str, Any]) -> None:
    """Attach ``info`` to an exception the application is about to see, and append the hint line.

    A ``ClientError`` (including ``EventStreamError``) gets ``response["BedrockHooks"]``; every
    exception gets ``exception.bedrock_hooks``; the message (``args[0]``) gains the hint line once.
    """
    line = hint_line(info)
    exception.bedrock_hooks = info  # type: ignore[attr-defined]
    response = getattr(exception, "response", None)
    if isinstance(response, dict):
        response["BedrockHooks"] = info
        error = response.get("Error")
        if isinstance(error, dict):
            error["Message"] = append_hint(str(error.get("Message") or ""), line)
    if exception.args and isinstance(exception.args[0], str):
        exception.args = (append_hint(exception.args[0], line), *exception.args[1:])
