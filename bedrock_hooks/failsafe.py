"""Never break the host: every handler runs through :func:`safe_invoke`.

Same idea as the OpenTelemetry botocore instrumentation's ``_safe_invoke``: a bug in this library
is logged once (per handler and exception type, so a hot loop cannot flood the logs) and the call
continues as plain botocore would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from . import process

logger = logging.getLogger("bedrock_hooks")

T = TypeVar("T")

_reported: set[tuple[str, str]] = set()
_reported_lock = process.lock()
process.after_fork_in_child(_reported.clear)  # a forked child reports its own first failures


def report_failure(where: str, exc: BaseException) -> None:
    """Log an internal failure once; the traceback goes to DEBUG so production logs stay short."""
    key = (where, type(exc).__name__)
    with _reported_lock:
        first = key not in _reported
        _reported.add(key)
    if first:
        logger.warning("bedrock-hooks: internal error in %s (%s); continuing as plain botocore",
                       where, type(exc).__name__)
    logger.debug("bedrock-hooks: internal error in %s", where, exc_info=exc)


def safe_invoke(where: str, func: Callable[..., T], *args: Any, fallback: Any = None, **kwargs: Any) -> T | Any:
    """Call ``func``; on any exception report it and return ``fallback``."""
    try:
        return func(*args, **kwargs)
    except Exception as exc:
        report_failure(where, exc)
        return fallback
