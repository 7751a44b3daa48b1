"""What every per-client feature shares: the injectable runtime, the registration bookkeeping, the protocol.

A feature is attached to one Bedrock client and must leave plain botocore behind when detached.
Features register only on that client's own emitter, through :class:`Registrations`, so detaching
removes exactly what they added and nothing another plugin (OpenTelemetry, X-Ray) put there.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class Feature(Protocol):
    """Something attached to one client; detaching must restore plain botocore."""

    def attach(self) -> None: ...

    def detach(self) -> None: ...


@dataclass(frozen=True)
class Runtime:
    """Injectable time and randomness: tests drive retries without sleeping."""

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    wall: Callable[[], float] = time.time
    rng: random.Random | None = None


#: A factory for one per-client feature; returns None when settings disable the feature.
FeatureFactory = Callable[[Any, Any, Runtime], "Feature | None"]


class Registrations:
    """The handlers one feature put on one client's emitter, so that detaching removes exactly those."""

    def __init__(self, events: Any) -> None:
        self.events = events
        self._items: list[tuple[str, Callable[..., Any], str]] = []

    def add(self, event: str, handler: Callable[..., Any], unique_id: str, *, first: bool = False) -> None:
        register = self.events.register_first if first else self.events.register
        register(event, handler, unique_id=unique_id)
        self._items.append((event, handler, unique_id))

    def remove_all(self) -> None:
        for event, handler, unique_id in reversed(self._items):
            self.events.unregister(event, handler, unique_id=unique_id)
        self._items.clear()
