"""botocore's own retry handler, found in its ``retry-config-<service>`` slot and verified.

The retry feature takes that handler over (and hands undecided attempts back to it); the retry budget
reads its quota. Both need the same careful lookup of private emitter state, so it lives here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _raw_emitter(events: Any) -> Any:
    """botocore wraps its HierarchicalEmitter in an EventAliaser; unique ids live on the inner one."""
    while hasattr(events, "_emitter"):
        events = events._emitter
    return events


def botocore_retry_handler(events: Any, service: str) -> Callable[..., Any] | None:
    """The handler botocore registered in the ``retry-config-<service>`` slot, if verified (else None)."""
    return find_botocore_retry_handler(events, service)[0]


def find_botocore_retry_handler(events: Any, service: str) -> tuple[Callable[..., Any] | None, str | None]:
    """botocore's retry handler and None, or None and why it cannot be taken over safely.

    The slot is private botocore state: it is trusted only when the emitter's unique-id table has it
    *and* the handler it names is really registered on ``needs-retry.<service>``, so that
    unregistering that id removes exactly botocore's retry handler and nothing else.
    """
    raw = _raw_emitter(events)
    table = getattr(raw, "_unique_id_handlers", None)
    if not isinstance(table, dict):
        return None, "this botocore's event emitter has no unique-id table to find its retry handler in"
    slot = table.get(f"retry-config-{service}")
    handler = slot.get("handler") if isinstance(slot, dict) else None
    if not callable(handler):
        return None, f"no retry handler in botocore's retry-config-{service} slot"
    try:
        registered = list(raw._handlers.prefix_search(f"needs-retry.{service}"))
    except Exception:
        return None, "this botocore's event emitter cannot list its needs-retry handlers"
    if not any(candidate == handler for candidate in registered):
        return None, f"the retry-config-{service} slot names a handler that is not on needs-retry.{service}"
    return handler, None
