"""A rate-limiter bucket whose pacing state is the fleet's: one schedule for every process on one quota.

:class:`~bedrock_hooks.ratelimit.Bucket` changes its scope's :mod:`~bedrock_hooks.pacing` state in one
place, ``_apply``. :class:`FleetBucket` sends each change to a shared store instead (Redis: one Lua
script per change, :mod:`bedrock_hooks.pacing_ops`), so the sends of four processes are spaced on one
GCRA schedule and the rate is learned from the answers all of them get. It also keeps applying the
same change to its own copy, this process's view: that copy answers while the store is down (Redis
failed: the bucket goes on as an in-process bucket, whose state has followed every change this
process made) and says when the bucket may be forgotten.

Shared state needs one time base across processes and hosts, so times sent to the store are
wall-clock seconds: the caller's clock (monotonic) shifted by ``wall() - clock()`` measured when the
bucket was made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from typing import NamedTuple

from . import pacing, pacing_ops
from .quota_scope import QuotaScope
from .ratelimit import Bucket
from .store import Store, store_for


class FleetBucket(Bucket):
    """A :class:`~bedrock_hooks.ratelimit.Bucket` whose answers come from the shared state of its scope."""

    def __init__(self, clock: Callable[[], float], config: pacing.PacingConfig, *, scope: QuotaScope,
                 store: Store, wall: Callable[[], float]) -> None:
        super().__init__(clock, config)
        self.scope = scope
        self.store = store
        self._offset = wall() - clock()
        self._args = pacing_ops.config_args(config)
        self._ttl = pacing_ops.ttl(config)
        #: Last time (caller's clock) the shared state said "engaged": a process the fleet paces may see
        #: no throttle of its own for a while, and must not forget its bucket (and stop pacing) for that.
        self.shared_engaged_at = pacing.NEVER

    def _wall(self, t: float) -> float:
        return t if t <= pacing.NEVER else t + self._offset

    def _apply(self, operation: Callable[..., tuple[pacing.State, Any]], *args: Any) -> Any:
        local = super()._apply(operation, *args)  # this process's view: kept in step, used while the store is down
        if self.store.down():
            return local
        if operation is pacing.reserve:
            cost, now, max_wait = args
            op, shared = pacing_ops.RESERVE, (cost, max_wait)
        elif operation is pacing.settle:
            delta, now = args
            op, shared = pacing_ops.SETTLE, (delta,)
        elif operation is pacing.observe:
            throttled, sent_at, now = args
            op, shared = pacing_ops.OBSERVE, (1.0 if throttled else 0.0, self._wall(sent_at))
        else:  # an operation this bucket does not know how to share: this process's view
            return local
        result, engaged = self.store.apply(op, pacing_ops.FAMILY, self.scope, self._wall(now),
                                           (*shared, *self._args), self._ttl)
        if self.store.down():  # it failed just now: the store answered from elsewhere; ours has the history
            return local
        if engaged:
            self.shared_engaged_at = now
        return result

    @property
    def engaged(self) -> bool:
        return super().engaged or self.shared_engaged_at > self.clock() - self.config.reset_after

    def quiet(self, now: float) -> bool:
        return super().quiet(now) and now - self.shared_engaged_at > self.config.reset_after


class Fleet(NamedTuple):
    """Where a rate limiter's buckets share their state: a shared store, and the wall clock it needs."""

    store: Store
    wall: Callable[[], float]

    def bucket(self, scope: QuotaScope, clock: Callable[[], float], config: pacing.PacingConfig) -> Bucket:
        """A :class:`FleetBucket`, or a plain bucket for a scope only this process can name (no fleet key)."""
        key = getattr(self.store, "key", None)
        if key is None or key(pacing_ops.FAMILY, scope) is None:
            return Bucket(clock, config)
        return FleetBucket(clock, config, scope=scope, store=self.store, wall=self.wall)


def fleet_of(settings: Any, runtime: Any, is_async: bool) -> Fleet | None:
    """The fleet a rate limiter paces with, or None (``memory://``; async clients: an event loop must never
    wait on a blocking Redis socket, so they keep this process's own buckets)."""
    if is_async:
        return None
    store = store_for(settings)
    return Fleet(store, runtime.wall) if store.shared else None
