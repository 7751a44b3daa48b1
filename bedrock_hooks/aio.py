"""What differs for async clients (aiobotocore, aioboto3): recognising them, and sleeping without blocking.

aiobotocore reuses botocore's events: its ``AioHierarchicalEmitter`` awaits a handler's answer when it
is awaitable, so one handler serves both kinds of client as long as it returns a coroutine, never
blocks, on an async one. This module imports nothing from aiobotocore (nor asyncio, until a coroutine
actually sleeps): without aiobotocore installed nothing async is imported.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Awaitable, Callable
from typing import Any

#: Top-level packages whose sessions and clients are async.
ASYNC_PACKAGES = ("aiobotocore", "aioboto3")


def package_of(obj: Any) -> str | None:
    """``"aiobotocore"`` / ``"aioboto3"`` when ``obj`` (or its class hierarchy) comes from one, else None."""
    if obj is None:
        return None
    for cls in type(obj).__mro__:
        package = (getattr(cls, "__module__", "") or "").partition(".")[0]
        if package in ASYNC_PACKAGES:
            return package
    return None


def is_async(obj: Any) -> bool:
    """Whether ``obj`` (a client, session or emitter) belongs to an async library."""
    return package_of(obj) is not None


async def sleep(seconds: float) -> None:
    """The default :attr:`Runtime.async_sleep`: ``asyncio.sleep``, imported on first use."""
    import asyncio

    await asyncio.sleep(seconds)


async def resolve(value: Any) -> Any:
    """``value``, awaited if it is awaitable: aiobotocore's handlers answer with coroutines, botocore's do not."""
    import inspect

    return await value if inspect.isawaitable(value) else value


async def pause(sleep: Callable[[float], Awaitable[None]], seconds: float) -> None:
    """Await ``sleep(seconds)`` and resolve to None: what a ``before-send`` handler may return to wait
    without answering the request (any other value would be taken for the HTTP response)."""
    await sleep(seconds)


class TaskLocal:
    """``threading.local`` that is also task-local: attributes live in a context variable, which every
    thread and every asyncio task sees its own copy of (tasks inherit a copy of their creator's values;
    a write never reaches another task). For state a handler keeps between two events of one attempt
    (``before-send`` -> ``response-received``), where tasks interleave on one thread."""

    __slots__ = ("_var",)

    def __init__(self) -> None:
        object.__setattr__(self, "_var", contextvars.ContextVar(f"bedrock_hooks_local_{id(self)}"))

    def __getattr__(self, name: str) -> Any:
        values = self._var.get(None)
        if values is None or name not in values:
            raise AttributeError(name)
        return values[name]

    def __setattr__(self, name: str, value: Any) -> None:
        values = self._var.get(None)
        updated = dict(values) if values else {}  # copy on write: an inherited dict is never mutated
        updated[name] = value
        self._var.set(updated)
