"""Remedies for ``fix-and-retry`` entries: correct the signing clock, refresh credentials.

Clock skew. SigV4 takes its timestamp from ``botocore.auth.get_current_datetime()`` and no event
lets a handler change it, so the correction needs one small patch (:data:`patches.SIGNING_CLOCK`,
which owns the patching). It is held only by clients that actually measured a skew, shifts the time
only for the one signature that a corrected client's ``before-sign`` handler armed (a context
variable, cleared again on ``before-send``), and is undone when the last such client is detached.
"""

from __future__ import annotations

import contextvars
import datetime
import email.utils
import inspect
import logging
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from . import compat, patches, process
from .classification import header

logger = logging.getLogger("bedrock_hooks.remedies")

#: Seconds to add to the next SigV4 timestamp taken in this context (0.0: none armed).
_signing_offset: contextvars.ContextVar[float] = contextvars.ContextVar("bedrock_hooks_signing_offset", default=0.0)
#: The holder of :func:`enable_clock_patch` calls that name none (tests, one-off use).
_ANONYMOUS = "anonymous"


def measure_skew(headers: Mapping[str, str], received_at: float | None = None) -> float | None:
    """Server time minus local time in seconds, from the response's ``Date`` header (None if absent)."""
    raw = header(headers, "date")
    if not raw:
        return None
    try:
        server = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if server.tzinfo is None:
        server = server.replace(tzinfo=datetime.timezone.utc)
    local = time.time() if received_at is None else received_at
    return server.timestamp() - local


def _shift(now: datetime.datetime, *args: Any, **kwargs: Any) -> datetime.datetime:
    """The :data:`patches.SIGNING_CLOCK` hook: add the armed offset (once) to botocore's signing time."""
    offset = _signing_offset.get()
    if not offset:
        return now
    _signing_offset.set(0.0)
    try:  # this runs inside botocore's signer: a garbage Date header must not make signing raise
        return now + datetime.timedelta(seconds=offset)
    except (OverflowError, ValueError):
        logger.debug("bedrock-hooks: clock offset %r out of range; signing with the local clock", offset)
        return now


patches.SIGNING_CLOCK.set_hook(_shift)


def enable_clock_patch(holder: Any = _ANONYMOUS) -> bool:
    """Hold the signing-time patch for ``holder`` (a corrected client); False if botocore has no hook point."""
    return compat.available(compat.CLOCK_SKEW) and patches.SIGNING_CLOCK.acquire(holder)  # compat: warns once


def disable_clock_patch(holder: Any = _ANONYMOUS) -> None:
    """Release ``holder``'s share; botocore's own ``get_current_datetime`` is back with the last one."""
    patches.SIGNING_CLOCK.release(holder)


def clock_patch_active() -> bool:
    return patches.SIGNING_CLOCK.engaged


def arm_signing_offset(offset: float) -> None:
    """Make the next signature in this context use ``now + offset`` (called from ``before-sign``)."""
    _signing_offset.set(offset)


def disarm_signing_offset() -> None:
    """Clear an unused offset (called from ``before-send``) so it can never leak to another client."""
    if _signing_offset.get():
        _signing_offset.set(0.0)


def credential_source(credentials: Any) -> str | None:
    """Where botocore found the credentials (``env``, ``iam-role``, ``sso``...): never the secret."""
    method = getattr(credentials, "method", None)
    return str(method) if method else None


#: A forced refresh this recent is reused by every ExpiredToken that arrives within it: such an answer
#: takes one round trip, so its request was almost surely signed before the refresh. A refresh that
#: failed is reused the same way: the provider is not asked again by every thread of the herd in turn.
REFRESH_REUSE_WINDOW = 2.0
#: credentials -> (clock time the last forced refresh ended, whether it succeeded)
_refreshed_at: weakref.WeakKeyDictionary[Any, tuple[float, bool]] = weakref.WeakKeyDictionary()
_refreshed_lock = process.lock()


def credentials_in_use(credentials: Any) -> Any:
    """The frozen key set a refreshable credentials object signs with now (an identity to compare, never read)."""
    return getattr(credentials, "_frozen_credentials", None)


def refresh_credentials(credentials: Any, *, seen: Any = None, clock: Callable[[], float] = time.monotonic) -> bool:
    """Force one refresh of refreshable credentials for every caller that saw them expire.

    False when they cannot refresh (static keys, or the provider failed). botocore's own discipline
    (``RefreshableCredentials._refresh``): the refresh runs under the credentials' ``_refresh_lock``,
    so one thread calls the provider while the others wait, and each re-checks after the wait whether
    a refresh is still needed. Here it is not when the credentials are no longer the ones the caller
    saw fail (``seen``, from :func:`credentials_in_use`) or when a forced refresh finished within
    :data:`REFRESH_REUSE_WINDOW` seconds before the caller got here (or after): 32 threads hitting ExpiredToken at once cause
    one provider call, and all of them retry with its result.
    """
    lock = _refresh_lock_of(credentials)
    if lock is None:
        return False
    arrived = clock()
    with lock:
        reused = _reused(credentials, seen, arrived)
        if reused is not None:
            return reused
        try:
            credentials._protected_refresh(is_mandatory=True)
            succeeded = True
        except Exception as exc:  # a failed refresh is reported by the hint, not raised here
            logger.warning("bedrock-hooks: credential refresh failed: %s", type(exc).__name__)
            succeeded = False
        return _record(credentials, succeeded, clock)


async def refresh_credentials_async(credentials: Any, *, seen: Any = None,
                                    clock: Callable[[], float] = time.monotonic) -> bool:
    """:func:`refresh_credentials` for aiobotocore's credentials, whose refresh is a coroutine under an
    asyncio (or anyio) lock: tasks waiting for another task's refresh yield to the event loop."""
    lock = _refresh_lock_of(credentials)
    if lock is None:
        return False
    if not hasattr(lock, "__aenter__"):  # botocore's own credentials on an async client: a threading lock
        return refresh_credentials(credentials, seen=seen, clock=clock)
    if not compat.available(compat.AIO_REFRESH_CREDENTIALS):  # aiobotocore's refresh internals moved: warns once
        return False
    arrived = clock()
    async with lock:
        reused = _reused(credentials, seen, arrived)
        if reused is not None:
            return reused
        try:
            result = credentials._protected_refresh(is_mandatory=True)
            if inspect.isawaitable(result):
                await result
            succeeded = True
        except Exception as exc:  # a failed refresh is reported by the hint, not raised here
            logger.warning("bedrock-hooks: credential refresh failed: %s", type(exc).__name__)
            succeeded = False
        return _record(credentials, succeeded, clock)


def _refresh_lock_of(credentials: Any) -> Any:
    """The credentials' refresh lock when they can be force-refreshed (else None: static keys, or
    botocore's refresh internals moved, which :mod:`.compat` warns about once)."""
    if not compat.available(compat.REFRESH_CREDENTIALS):
        return None
    if getattr(credentials, "_protected_refresh", None) is None or getattr(credentials, "_refresh_using", None) is None:
        return None
    return getattr(credentials, "_refresh_lock", None)


def _reused(credentials: Any, seen: Any, arrived: float) -> bool | None:
    """Under the refresh lock: the outcome of another caller's refresh this one waited for, else None."""
    if seen is not None and credentials_in_use(credentials) is not seen:
        return True  # refreshed by another caller while this one waited
    with _refreshed_lock:
        last = _refreshed_at.get(credentials)
    if last is not None and arrived - last[0] <= REFRESH_REUSE_WINDOW:
        return last[1]  # another caller's refresh (or failure) this one waited for
    return None


def _record(credentials: Any, succeeded: bool, clock: Callable[[], float]) -> bool:
    with _refreshed_lock:
        _refreshed_at[credentials] = (clock(), succeeded)
    return succeeded


def can_refresh(credentials: Any) -> bool:
    """Whether ``credentials`` refresh themselves (botocore's ``RefreshableCredentials``): a failed
    :func:`refresh_credentials` of those is the provider failing, not static keys."""
    return getattr(credentials, "_refresh_using", None) is not None and hasattr(credentials, "_protected_refresh")
