"""Per-process machinery: locks that survive ``fork()``, and what a forked child must not inherit.

gunicorn ``--preload``, Celery's prefork pool and ``multiprocessing`` with the fork start method fork
a process in which other threads may be inside this package at that instant. The child keeps only
the forking thread, so a lock another thread held stays held forever and the child's first call
that needs it hangs. Every lock of the package therefore comes from :func:`lock` / :func:`rlock`,
which remember it (weakly) so that ``os.register_at_fork(after_in_child=...)`` can re-initialise it
in the child, as CPython's ``logging`` does for its handlers' locks. A lock created with
``consistent=True`` is also *taken* just before the fork (bounded wait), so the state it guards is
never copied half-updated: the child sees it either before or after the other thread's change.

Modules register any other per-process state to reset with :func:`after_fork_in_child`.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("bedrock_hooks")

#: How long the parent waits, before a fork, for a ``consistent`` lock another thread holds.
FORK_WAIT = 1.0

_locks: weakref.WeakSet[Any] = weakref.WeakSet()
_consistent: weakref.WeakSet[Any] = weakref.WeakSet()
_held: list[Any] = []  # consistent locks this process took before the fork in progress
_child_callbacks: list[Callable[[], None]] = []


def lock(*, consistent: bool = False) -> threading.Lock:
    """A ``threading.Lock`` that is usable again in a forked child."""
    return _remember(threading.Lock(), consistent)


def rlock(*, consistent: bool = False) -> threading.RLock:
    """A ``threading.RLock`` that is usable again in a forked child."""
    return _remember(threading.RLock(), consistent)


def _remember(new: Any, consistent: bool) -> Any:
    _locks.add(new)
    if consistent:
        _consistent.add(new)
    return new


def after_fork_in_child(callback: Callable[[], None]) -> None:
    """Run ``callback`` in every forked child (after the locks are fresh); failures are logged."""
    _child_callbacks.append(callback)


def _before_fork() -> None:
    for held in list(_consistent):
        if held.acquire(timeout=FORK_WAIT):  # bounded: a stuck thread delays a fork, never blocks it
            _held.append(held)


def _after_fork_in_parent() -> None:
    while _held:
        _held.pop().release()


def _after_fork_in_child() -> None:
    _held.clear()
    for stale in list(_locks):
        reinit = getattr(stale, "_at_fork_reinit", None)  # CPython >= 3.9, what threading itself uses
        if reinit is not None:
            reinit()
    for callback in list(_child_callbacks):
        try:
            callback()
        except Exception as exc:  # a forked child must start even if a reset fails
            logger.debug("bedrock-hooks: after-fork reset %r failed: %s", callback, type(exc).__name__)


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
