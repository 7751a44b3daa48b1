"""A rate-limiter bucket whose pacing state is the fleet's: one schedule for every process on one quota.

:class:`~bedrock_hooks.ratelimit.Bucket` changes its scope's :mod:`~bedrock_hooks.pacing` state in one
place, ``_apply``. :class:`FleetBucket` sends each change to a shared store instead (Redis: one Lua
script per change, :mod:`bedrock_hooks.pacing_ops`), so the sends of four processes are spaced on one
GCRA schedule and the rate is learned from the answers all of them get. It also keeps applying the
same change to its own copy, this process's view: that copy answers while the store is down (Redis
failed: the bucket goes on as an in-process bucket, whose state has followed every change this
process made) and says when the bucket may be forgotten. Async clients (aiobotocore) book on the same
state through :class:`~bedrock_hooks.store_aio.AsyncRedisStore`, awaited: same keys, same scripts.

Shared state needs one time base across processes and hosts, so times sent to the store are
wall-clock seconds: the caller's clock (monotonic) shifted by ``wall() - clock()`` measured when the
bucket was made.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from . import pacing, pacing_ops, telemetry
from .model_limits import ModelLimits
from .quota_scope import QuotaScope
from .ratelimit import Bucket
from .store import Operation, Store, store_for
from .store_aio import aio_store_for
from .tokens import Usage


class FleetBucket(Bucket):
    """A :class:`~bedrock_hooks.ratelimit.Bucket` whose answers come from the shared state of its scope.

    Sync clients change it through :class:`Bucket`'s methods (their :meth:`_apply` waits on the sync
    ``store``, a few ms at most). Async clients use the ``*_async`` methods: each applies the change to
    this process's copy at once and returns an awaitable that books it on the shared state through
    ``aio_store`` (:class:`~bedrock_hooks.store_aio.AsyncRedisStore`) and resolves to the fleet's answer,
    so an event loop never waits on a blocking socket. One bucket serves both kinds of client of a process.
    """

    def __init__(self, clock: Callable[[], float], config: pacing.PacingConfig, *, scope: QuotaScope,
                 store: Store, wall: Callable[[], float], aio_store: Any = None) -> None:
        super().__init__(clock, config)
        self.scope = scope
        self.store = store
        self.aio_store = aio_store
        self._offset = wall() - clock()
        self._args = pacing_ops.config_args(config)
        self._ttl = pacing_ops.ttl(config)
        #: Last time (caller's clock) the shared state said "engaged": a process the fleet paces may see
        #: no throttle of its own for a while, and must not forget its bucket (and stop pacing) for that.
        self.shared_engaged_at = pacing.NEVER

    @property
    def shares_async(self) -> bool:
        """Whether async clients book on the shared state too (else only on this process's copy)."""
        return self.aio_store is not None

    def _wall(self, t: float) -> float:
        return t if t <= pacing.NEVER else t + self._offset

    def _shared(self, operation: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Operation, tuple[float, ...],
                                                                                    float] | None:
        """(the store operation, its own arguments, the caller's ``now``) of a pacing change; None for one
        this bucket does not know how to share."""
        if operation is pacing.reserve:
            cost, now, max_wait = args
            return pacing_ops.RESERVE, (cost, max_wait), now
        if operation is pacing.settle:
            delta, now = args
            return pacing_ops.SETTLE, (delta,), now
        if operation is pacing.observe:
            throttled, sent_at, now = args
            return pacing_ops.OBSERVE, (1.0 if throttled else 0.0, self._wall(sent_at)), now
        return None

    def _apply(self, operation: Callable[..., tuple[pacing.State, Any]], *args: Any) -> Any:
        local = super()._apply(operation, *args)  # this process's view: kept in step, used while the store is down
        shared = None if self.store.down() else self._shared(operation, args)
        if shared is None:
            return local
        op, own, now = shared
        result, engaged = self.store.apply(op, pacing_ops.FAMILY, self.scope, self._wall(now),
                                           (*own, *self._args), self._ttl)
        return self._answer(self.store, local, result, engaged, now)

    def _answer(self, store: Any, local: Any, result: float, engaged: float, now: float) -> Any:
        if store.down():  # it failed just now: the store answered from elsewhere; ours has the history
            return local
        if engaged:
            self.shared_engaged_at = now
        return result

    # -- async clients -----------------------------------------------------------------------------
    def _apply_async(self, operation: Callable[..., tuple[pacing.State, Any]], *args: Any) -> Awaitable[Any]:
        """This process's copy changed now; the awaitable books the change on the shared state (the fleet's
        answer), or resolves to this copy's answer while the store is down."""
        local = Bucket._apply(self, operation, *args)  # never self._apply: that one waits on the sync store
        return self._share(operation, args, local)

    async def _share(self, operation: Callable[..., Any], args: tuple[Any, ...], local: Any) -> Any:
        store = self.aio_store
        shared = None if store is None or store.down() else self._shared(operation, args)
        if shared is None:
            return local
        op, own, now = shared
        result, engaged = await store.apply(op, pacing_ops.FAMILY, self.scope, self._wall(now),
                                            (*own, *self._args), self._ttl)
        return self._answer(store, local, result, engaged, now)

    def before_send_async(self, now: float, max_wait: float = float("inf"), cost: float = 1.0) -> Awaitable[float]:
        """:meth:`Bucket.before_send` for an async client: resolves to the seconds to wait for the slot."""
        pending = self._apply_async(pacing.reserve, cost, now, max_wait)
        self._local.reserved = now
        return pending

    def settle_async(self, now: float, delta: float) -> Awaitable[Any]:
        """:meth:`Bucket.settle` for an async client."""
        return self._apply_async(pacing.settle, delta, now)

    def settle_usage_async(self, now: float, usage: Usage, limits: ModelLimits, booked: float) -> Awaitable[Any]:
        """:meth:`Bucket.settle_usage` for an async client."""
        return self.settle_async(now, self._learn_output(usage, limits, booked))

    def on_response_async(self, now: float, throttled: bool, sent_at: float) -> Awaitable[Any]:
        """:meth:`Bucket.on_response` for an async client (``sent_at`` given: :data:`pacing.NEVER` if unknown)."""
        was_engaged = self._state["engaged"]
        pending = self._apply_async(pacing.observe, throttled, sent_at, now)
        if self._state["engaged"] and not was_engaged:
            telemetry.rate_limit_engaged()
        return pending

    @property
    def engaged(self) -> bool:
        return super().engaged or self.shared_engaged_at > self.clock() - self.config.reset_after

    def quiet(self, now: float) -> bool:
        return super().quiet(now) and now - self.shared_engaged_at > self.config.reset_after


class Fleet(NamedTuple):
    """Where a rate limiter's buckets share their state: a shared store, the wall clock it needs, and the
    same state's async store (for async clients; None: they book on this process's copy only)."""

    store: Store
    wall: Callable[[], float]
    aio_store: Any = None

    def bucket(self, scope: QuotaScope, clock: Callable[[], float], config: pacing.PacingConfig) -> Bucket:
        """A :class:`FleetBucket`, or a plain bucket for a scope only this process can name (no fleet key)."""
        key = getattr(self.store, "key", None)
        if key is None or key(pacing_ops.FAMILY, scope) is None:
            return Bucket(clock, config)
        return FleetBucket(clock, config, scope=scope, store=self.store, wall=self.wall, aio_store=self.aio_store)


def fleet_of(settings: Any, runtime: Any, is_async: bool) -> Fleet | None:
    """The fleet a rate limiter paces with, or None (``memory://``: this process's own buckets).

    Sync and async clients get the same fleet: its buckets book through the sync store for the one and
    the async store for the other, so a bucket either kind of client made serves both, and an event
    loop never waits on a blocking Redis socket."""
    store = store_for(settings)
    return Fleet(store, runtime.wall, aio_store_for(settings)) if store.shared else None
