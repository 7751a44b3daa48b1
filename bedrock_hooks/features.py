"""What every per-client feature shares: the injectable runtime, the registration bookkeeping, the protocol.

A feature is attached to one Bedrock client and must leave plain botocore behind when detached.
Features register only on that client's own emitter, through :class:`Registrations`, so detaching
removes exactly what they added and nothing another plugin (OpenTelemetry, X-Ray) put there.
"""

from __future__ import annotations

import importlib
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from . import aio


class Feature(Protocol):
    """Something attached to one client; detaching must restore plain botocore."""

    def attach(self) -> None: ...

    def detach(self) -> None: ...


@dataclass(frozen=True)
class Runtime:
    """Injectable time and randomness: tests drive retries without sleeping.

    ``sleep`` serves botocore clients; ``async_sleep`` (a coroutine function) serves aiobotocore
    clients, whose waits must never block the event loop.
    """

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    async_sleep: Callable[[float], Awaitable[None]] = aio.sleep
    wall: Callable[[], float] = time.time
    rng: random.Random | None = None


#: A factory for one per-client feature; returns None when settings disable the feature.
FeatureFactory = Callable[[Any, Any, Runtime], "Feature | None"]


class FeatureSpec(NamedTuple):
    """One entry of the feature registry: where its factory lives, loaded on first use.

    Modelled on the OpenTelemetry botocore instrumentation's extension registry: a fixed table of
    names to lazily imported code, so ``import bedrock_hooks`` imports no feature module and the
    order features attach in is data, not a sequence of ``append`` calls scattered over a module.
    """

    name: str
    module: str  #: module inside the ``bedrock_hooks`` package
    factory: str = "feature"  #: its :data:`FeatureFactory`
    reset: str | None = None  #: its process-wide state reset, run when the last installation goes

    def load(self) -> FeatureFactory:
        return getattr(importlib.import_module(f"{__package__}.{self.module}"), self.factory)

    def reset_state(self) -> None:
        """Forget process-wide learned state; nothing to do when the module was never imported."""
        module = sys.modules.get(f"{__package__}.{self.module}")
        if self.reset and module is not None:
            getattr(module, self.reset)()


#: Every per-client feature, in attach order (immutable). Retry decisions come first: the other
#: features read the call state they keep.
REGISTRY: tuple[FeatureSpec, ...] = (
    FeatureSpec("retry", "retry"),  # error-specific retry decisions and hints
    FeatureSpec("connections", "keepalive"),  # per-socket keep-alive and idle-connection eviction
    FeatureSpec("streams", "streaming"),  # mid-stream errors: hints and transparent re-issue
    FeatureSpec("fallbacks", "fallbacks", reset="reset_routers"),  # models, inference profiles, Regions, circuits
    FeatureSpec("rate-limit", "ratelimit", reset="reset"),  # process-wide pacing when throttled
)


class ClientFeature:
    """The small base of every per-client feature: what it knows of its client, and a clean detach.

    A feature registers its handlers through ``self._registrations``, so the default :meth:`detach`
    removes exactly those and nothing another plugin put on the same emitter.
    """

    def __init__(self, client: Any, settings: Any, runtime: Runtime | None = None) -> None:
        self.settings = settings
        self.runtime = runtime or Runtime()
        self.service = client.meta.service_model.service_id.hyphenize()  #: the event-name form
        self.region = client.meta.region_name or ""
        self.events = client.meta.events
        #: An aiobotocore client: handlers must return awaitables instead of blocking (:mod:`.aio`).
        self.is_async = aio.is_async(client)
        self._signer = getattr(client, "_request_signer", None)
        self._registrations = Registrations(self.events)

    def attach(self) -> None:
        raise NotImplementedError

    def detach(self) -> None:
        self._registrations.remove_all()


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
