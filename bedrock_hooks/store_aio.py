"""Shared state on Redis for async clients: :class:`AsyncRedisStore`, :class:`~bedrock_hooks.store.RedisStore`
over ``redis.asyncio``.

An event loop must never wait on a blocking socket, so an aiobotocore client cannot use the sync store;
this one is awaited instead. Everything else is the sync store's: the same keys (its :meth:`key`), the
same Lua scripts (:func:`~bedrock_hooks.store.lua_source` of each :class:`~bedrock_hooks.store.Operation`),
so sync and async processes of one fleet book on one schedule; the same socket timeouts and no retries;
the same circuit (:meth:`down`, one warning per outage naming the server without credentials, then the
in-process :attr:`fallback` for ``retry_after`` seconds). A forked child never reuses its parent's
connections.

An asyncio connection belongs to the loop that opened it, so the store keeps one client (one
connection pool) per running event loop: a store used from two loops (two threads, or ``asyncio.run``
twice) never hands one loop's connection to the other. A closed loop's client is dropped when the next
loop connects.

Pacing uses :meth:`apply`; the fallback router (:mod:`bedrock_hooks.fallbacks`) uses :meth:`apply` for
circuits and :meth:`get_text` / :meth:`put_text` / :meth:`hot_models` / :meth:`mark_hot` for remembered
inference profiles and the fleet's hot models, as sync clients use the sync store's.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any

from . import process
from .quota_scope import QuotaScope
from .store import (_LUA_MARK_HOT, _LUA_TOUCH, HOT_KEY, RETRY_AFTER, Operation, RedisBase, _Down, _stores,
                    _stores_lock, _text, lua_source)

__all__ = ["AsyncRedisStore", "aio_store_for"]

#: Round trips one operation may take at worst (connect, EVALSHA, and SCRIPT LOAD + EVALSHA after an
#: evicted script): the bound on the whole awaited operation is this many ``timeout`` s.
ROUND_TRIPS = 4
#: Event loops (so client pools) one store keeps at most; the least recently made is dropped first.
MAX_LOOPS = 64
#: In a forked child: the parent's clients, held so that they are never collected (``_forget_connections``).
_INHERITED: list[Any] = []


class AsyncRedisStore(RedisBase):
    """Shared state on Redis for async clients: every operation is awaited, never blocks the loop, never raises.

    ``timeout`` bounds each socket operation (connect included), as in :class:`RedisStore`; the awaited
    operation as a whole is also bounded, at :data:`ROUND_TRIPS` x ``timeout``.
    """

    def __init__(self, url: str, *, salt: str = "", timeout: float = 0.005, retry_after: float = RETRY_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        # The sync store's keys, circuit and warning (RedisBase), not a copy of them: both kinds of client
        # of one fleet must name a scope alike, and fail alike.
        super().__init__(url, salt=salt, timeout=timeout, retry_after=retry_after, clock=clock)
        #: id(loop) -> (weak reference to the loop, its client, its registered scripts)
        self._clients: dict[int, tuple[Any, Any, dict[str, Any]]] = {}
        process.after_fork_in_child(self._forget_connections)

    # -- one client per event loop -----------------------------------------------------------------
    def _forget_connections(self) -> None:
        """In a forked child: the parent's sockets (and loops) are not ours to use, nor to close. The
        forgotten clients stay referenced (:data:`_INHERITED`), never collected here: collecting a client
        whose loop is still open runs its transport's close, which unregisters the socket from the loop's
        epoll instance -- an instance the child shares with the parent, so the parent's loop stopped
        hearing from its connection (its next read timed out)."""
        _INHERITED.extend(self._clients.values())
        self._clients = {}

    def _connected(self) -> tuple[Any, dict[str, Any]] | None:
        """(the running loop's client, its scripts), or None while Redis is known down."""
        if self.down():
            return None
        import asyncio

        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._clients.get(id(loop))
            if entry is None or entry[0]() is not loop:
                for ident, (ref, _, _) in list(self._clients.items()):
                    held = ref()
                    if held is None or held.is_closed():  # its sockets go with it (no loop left to close them on)
                        del self._clients[ident]
                while len(self._clients) >= MAX_LOOPS:
                    del self._clients[next(iter(self._clients))]
                entry = self._clients[id(loop)] = (weakref.ref(loop), self._new_client(), {})
        return entry[1], entry[2]

    def _new_client(self) -> Any:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        return redis.asyncio.Redis.from_url(self.url, socket_timeout=self.timeout,
                                            socket_connect_timeout=self.timeout, retry=Retry(NoBackoff(), 0),
                                            retry_on_timeout=False, health_check_interval=0)

    async def _run(self, name: str, source: str, keys: list[str], args: list[str]) -> Any:
        """Run a script on Redis; raises on any failure (the caller falls back)."""
        import asyncio

        connected = self._connected()
        if connected is None:
            raise _Down()
        client, scripts = connected
        script = scripts.get(name)
        if script is None:
            script = scripts[name] = client.register_script(source)
        return await asyncio.wait_for(script(keys=keys, args=args, client=client), ROUND_TRIPS * self.timeout)

    async def _command(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """One plain command (``SET``, ``ZRANGEBYSCORE``) on Redis, bounded like :meth:`_run`; raises on failure."""
        import asyncio

        connected = self._connected()
        if connected is None:
            raise _Down()
        return await asyncio.wait_for(getattr(connected[0], name)(*args, **kwargs), ROUND_TRIPS * self.timeout)

    # -- operations --------------------------------------------------------------------------------
    async def apply(self, op: Operation, family: str, scope: QuotaScope, now: float, args: tuple[float, ...],
                    ttl: float) -> tuple[float, ...]:
        """:meth:`RedisStore.apply`, awaited: the same script on the same key, or the fallback's answer."""
        key = self.key(family, scope)
        if key is not None:
            try:
                argv = [_text(now), str(max(1, int(ttl * 1000))), "1" if op.readonly else "0"]
                out = await self._run(op.name, lua_source(op), [key], argv + [_text(a) for a in args])
                return tuple(float(v) for v in out)
            except Exception as exc:  # a timeout is asyncio.TimeoutError (an Exception); cancellation propagates
                self._fell_back(exc)
        return self.fallback.apply(op, family, scope, now, args, ttl)

    # -- what the fallback router needs (circuits use :meth:`apply`) ------------------------------------
    async def get_text(self, family: str, scope: QuotaScope, now: float, ttl: float) -> str | None:
        """:meth:`RedisStore.get_text`, awaited: the value, its TTL started again; or the fallback's."""
        key = self.key(family, scope)
        if key is not None:
            try:
                return self._decoded(await self._run("touch", _LUA_TOUCH, [key], [self._px(ttl)]))
            except Exception as exc:
                self._fell_back(exc)
        return self.fallback.get_text(family, scope, now, ttl)

    async def put_text(self, family: str, scope: QuotaScope, value: str, now: float, ttl: float) -> None:
        """:meth:`RedisStore.put_text`, awaited: kept in process too, so an outage keeps what was learned."""
        key = self.key(family, scope)
        self.fallback.put_text(family, scope, value, now, ttl)
        if key is None:
            return
        try:
            await self._command("set", key, value, px=int(self._px(ttl)))
        except Exception as exc:
            self._fell_back(exc)

    async def hot_models(self, now: float) -> dict[str, float]:
        """:meth:`RedisStore.hot_models`, awaited: the fleet's hot models -> until when ({} while Redis fails)."""
        try:
            return self._hot_rows(await self._command("zrangebyscore", HOT_KEY, _text(now), "+inf", withscores=True))
        except Exception as exc:
            self._fell_back(exc)
            return {}

    async def mark_hot(self, models: tuple[str, ...], until: float, now: float) -> None:
        """:meth:`RedisStore.mark_hot`, awaited."""
        if not models:
            return
        try:
            await self._run("mark_hot", _LUA_MARK_HOT, [HOT_KEY], self._hot_argv(models, until, now))
        except Exception as exc:
            self._fell_back(exc)

    def clear(self, *families: str) -> None:
        """Forget this process's fallback state (never the fleet's shared state)."""
        self.fallback.clear(*families)


def aio_store_for(settings: Any) -> AsyncRedisStore | None:
    """The process's async store for ``settings.state_url`` (one per URL, salt and timeout), or None when
    the state is not on Redis. Kept with the sync stores, so :func:`~bedrock_hooks.store.reset_stores`
    forgets its in-process state too."""
    url = getattr(settings, "state_url", "memory://") or "memory://"
    if not url.lower().startswith(("redis://", "rediss://")):
        return None
    salt, timeout = getattr(settings, "state_salt", ""), float(getattr(settings, "state_timeout", 0.005))
    key: Any = ("aio", url, salt, timeout)
    with _stores_lock:
        found = _stores.get(key)
        if found is None:
            found = _stores[key] = AsyncRedisStore(url, salt=salt, timeout=timeout)
        return found
