"""Where state shared between clients lives: in this process (``memory://``) or on Redis (``redis://``).

Pacing buckets, circuit breakers and remembered inference profiles are facts about a quota (an
account, a Region, a model), not about a process: a fleet of workers behind one quota that each keep
their own copy each learn the quota alone, so together they overshoot it. ``BEDROCK_HOOKS_STATE_URL``
chooses where that state lives:

* ``memory://`` (the default): :class:`MemoryStore`, in-process tables under one fork-safe lock,
  bounded and evicting the least recently used scope;
* ``redis://host:port/db`` / ``rediss://`` (extra ``bedrock-hooks[redis]``): :class:`RedisStore`. Every
  process pointing at the same server shares the state. Each update is one Lua script run atomically
  by the server (``EVALSHA``; no read-modify-write race between processes).

State is *data*: a scope's state is a flat mapping of names to floats, and an :class:`Operation` is a
pure Python function over it plus its Lua port. :class:`MemoryStore` runs the Python function,
:class:`RedisStore` the Lua one; tests/test_store_contract.py runs random sequences through both and
asserts they agree, so the two cannot drift.

Redis must never make a call fail or stall: commands have socket timeouts of a few milliseconds, no
retries, and any error (timeout, refused connection, an evicted script, a read-only replica) logs ONE
warning and switches the store to its in-process :class:`MemoryStore` for :data:`RETRY_AFTER` seconds;
then the next operation tries Redis again. A forked child never reuses its parent's connection.

Keys never hold an account ID or access key: ``bedrock-hooks:{<scope hash>}:<family>``, where the
scope hash is a keyed BLAKE2b of the fleet identity (:func:`bedrock_hooks.quota_scope.fleet_identity`),
Region, target and endpoint. The braces are a Redis Cluster hash tag: all families of one scope live
on one shard. Every key has a TTL, so abandoned scopes expire on their own.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from . import process
from .quota_scope import QuotaScope, fleet_identity

logger = logging.getLogger("bedrock_hooks.store")

#: A scope's state: names -> floats (what a Redis hash holds; missing names read as absent).
State = Mapping[str, float]
#: Seconds the store uses in-process state after Redis failed, before it tries Redis again.
RETRY_AFTER = 5.0
#: Entries per family an in-process table keeps (least recently used evicted first).
CAPACITY = 512
#: Models named in the shared "hot" set at most (the most recently marked are kept).
HOT_CAPACITY = 1024
KEY_PREFIX = "bedrock-hooks"
HOT_KEY = KEY_PREFIX + ":{hot}:models"

__all__ = ["CAPACITY", "MemoryStore", "Operation", "RedisBase", "RedisStore", "Store", "redacted", "reset_stores",
           "store_for", "uses_wall_clock"]


@dataclass(frozen=True)
class Operation:
    """One atomic update of a scope's state: ``python(state, now, *args) -> (new_state, results[, extra])``.

    ``lua`` is the same function in Lua, as the body ``local function op(s, now, a) ... return s, {...} end``
    (``s`` the state table, ``a`` the numeric arguments, results a list of numbers; an optional third
    value is seconds the state must live beyond the caller's TTL, e.g. a schedule booked ahead). A
    ``readonly`` operation never writes: it neither creates a scope nor refreshes its TTL.
    """

    name: str
    python: Callable[..., tuple[State, tuple[float, ...]]]
    lua: str
    readonly: bool = False


class Store(Protocol):
    """What features need from shared state. Implementations never raise and never block for long."""

    #: True when other processes see this state (then ``now`` must be wall-clock seconds, see :func:`uses_wall_clock`).
    shared: bool

    def apply(self, op: Operation, family: str, scope: QuotaScope, now: float, args: tuple[float, ...],
              ttl: float) -> tuple[float, ...]: ...

    def get_text(self, family: str, scope: QuotaScope, now: float, ttl: float) -> str | None: ...

    def put_text(self, family: str, scope: QuotaScope, value: str, now: float, ttl: float) -> None: ...

    def hot_models(self, now: float) -> dict[str, float]: ...

    def mark_hot(self, models: tuple[str, ...], until: float, now: float) -> None: ...

    def clear(self, *families: str) -> None: ...

    def down(self) -> bool:
        """True while a shared store is serving from its in-process fallback (Redis failed recently)."""
        ...


# -- in process --------------------------------------------------------------------------------------

class _Table:
    """One family's entries: key -> (expires at, value), least recently used first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: collections.OrderedDict[Any, tuple[float, Any]] = collections.OrderedDict()

    def get(self, key: Any, now: float) -> Any:
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self.entries[key]
            return None
        self.entries.move_to_end(key)  # used: the last to be evicted
        return entry[1]

    def put(self, key: Any, value: Any, expires: float) -> None:
        self.entries[key] = (expires, value)
        self.entries.move_to_end(key)
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)

    def drop(self, key: Any) -> None:
        self.entries.pop(key, None)


class MemoryStore:
    """In-process state: one table per family, each bounded at ``capacity`` scopes, LRU eviction.

    Bounded because scopes are made by traffic (a model rotation, rotating credentials), and LRU
    because a scope in use must not be evicted by a stream of one-off ones: with first-in-first-out,
    a remembered inference profile in constant use was forgotten after 512 newer ones, and every call
    for it paid a wasted 400 again.
    """

    shared = False

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._lock = process.lock()
        self._tables: dict[str, _Table] = {}

    def table(self, family: str) -> _Table:
        """Under the lock (or in tests)."""
        table = self._tables.get(family)
        if table is None:
            table = self._tables[family] = _Table(self.capacity)
        return table

    def apply(self, op: Operation, family: str, scope: Any, now: float, args: tuple[float, ...],
              ttl: float) -> tuple[float, ...]:
        with self._lock:
            table = self.table(family)
            state = table.get(scope, now) or {}
            new, results, *extra = op.python(state, now, *args)
            if not op.readonly:
                if new:
                    table.put(scope, dict(new), now + ttl + max(0.0, extra[0] if extra else 0.0))
                else:
                    table.drop(scope)
            return tuple(float(r) for r in results)

    def get_text(self, family: str, scope: Any, now: float, ttl: float) -> str | None:
        with self._lock:
            table = self.table(family)
            value = table.get(scope, now)
            if value is not None:
                table.put(scope, value, now + ttl)  # used: its TTL starts again, as on Redis
            return value

    def put_text(self, family: str, scope: Any, value: str, now: float, ttl: float) -> None:
        with self._lock:
            self.table(family).put(scope, value, now + ttl)

    def hot_models(self, now: float) -> dict[str, float]:
        return {}  # the router's own hot set is the whole truth in one process

    def down(self) -> bool:
        return False

    def mark_hot(self, models: tuple[str, ...], until: float, now: float) -> None:
        return None

    def clear(self, *families: str) -> None:
        with self._lock:
            for family in families or list(self._tables):
                self._tables.pop(family, None)

    def snapshot(self, family: str, now: float) -> list[tuple[Any, Any]]:
        """The live ``(scope, value)`` entries of ``family``, least recently used first."""
        with self._lock:
            return [(key, value) for key, (expires, value) in self.table(family).entries.items() if expires > now]

    def size(self, family: str) -> int:
        with self._lock:
            return len(self.table(family).entries)


# -- on Redis ----------------------------------------------------------------------------------------

#: Shared Lua around every :class:`Operation`: read the hash, run ``op``, write it back with its TTL.
#: Numbers travel as ``%.17g`` text (exact for doubles; Redis would truncate a Lua number to an integer).
_LUA_PRELUDE = """
local function num(x)
  if x == 'inf' then return math.huge elseif x == '-inf' then return -math.huge end
  return tonumber(x)
end
local function txt(v)
  if v == math.huge then return 'inf' elseif v == -math.huge then return '-inf' end
  return string.format('%.17g', v)
end
"""
_LUA_APPLY = """
local raw = redis.call('HGETALL', KEYS[1])
local s = {}
for i = 1, #raw, 2 do s[raw[i]] = num(raw[i + 1]) end
local now, ttl, readonly = num(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local a = {}
for i = 4, #ARGV do a[#a + 1] = num(ARGV[i]) end
local new, out, extra = op(s, now, a)
if extra and extra > 0 then ttl = ttl + math.ceil(extra * 1000) end
if not readonly then
  redis.call('DEL', KEYS[1])
  local flat = {}
  for k, v in pairs(new) do flat[#flat + 1] = k; flat[#flat + 1] = txt(v) end
  if #flat > 0 then
    redis.call('HSET', KEYS[1], unpack(flat))
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
end
local res = {}
for i = 1, #out do res[i] = txt(out[i]) end
return res
"""
#: GET that restarts the TTL of a value in use (GETEX needs Redis 6.2; this runs on any Redis with Lua).
_LUA_TOUCH = """
local v = redis.call('GET', KEYS[1])
if v then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return v
"""
#: Name models in the fleet's hot set (score: until when), forget passed ones, keep the newest HOT_CAPACITY.
_LUA_MARK_HOT = """
local upto, now, cap, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 5, #ARGV do
  local old = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if not old or tonumber(old) < tonumber(upto) then redis.call('ZADD', KEYS[1], upto, ARGV[i]) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n > cap then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - cap - 1) end
redis.call('PEXPIRE', KEYS[1], ttl)
return n
"""


def lua_source(op: Operation) -> str:
    """The whole script :class:`RedisStore` registers for ``op``."""
    return _LUA_PRELUDE + op.lua + _LUA_APPLY


def _text(value: float) -> str:
    return repr(float(value))  # 17 significant digits, 'inf' for infinity: both sides read it exactly


def redacted(url: str) -> str:
    """``scheme://host:port/db`` of a state URL: never its user name or password (for logs and ``doctor``)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"
    except ValueError:
        return "<unparsable state URL>"


class RedisBase:
    """What the sync and the async Redis stores share, so that both kinds of client of one fleet name a
    scope alike and fail alike: the URL, the keyed scope hash, the in-process fallback and its circuit."""

    shared = True

    def __init__(self, url: str, *, salt: str = "", timeout: float = 0.005, retry_after: float = RETRY_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.where = redacted(url)
        self.timeout = timeout
        self.retry_after = retry_after
        self.clock = clock
        self.fallback = MemoryStore()
        self._salt = hashlib.blake2b(salt.encode("utf-8", "replace"), digest_size=32).digest()
        self._lock = process.lock()
        self._down_until = float("-inf")
        self.failures = 0  #: Redis errors seen (tests, ``doctor``)

    def key(self, family: str, scope: QuotaScope) -> str | None:
        """``bedrock-hooks:{<scope hash>}:<family>``; None for a scope only this process can name."""
        identity = fleet_identity(scope.account)
        if identity is None:
            return None
        material = "\x1f".join((identity, scope.region, scope.target, scope.endpoint)).encode("utf-8", "replace")
        digest = hashlib.blake2b(material, key=self._salt, digest_size=16).hexdigest()
        return f"{KEY_PREFIX}:{{{digest}}}:{family}"

    def down(self) -> bool:
        return self.clock() < self._down_until

    # -- what both stores send and read (one code path for the sync and the async client) -------------
    @staticmethod
    def _px(ttl: float) -> str:
        """A TTL in milliseconds, at least one (Redis refuses 0)."""
        return str(max(1, int(ttl * 1000)))

    @staticmethod
    def _hot_argv(models: tuple[str, ...], until: float, now: float) -> list[str]:
        """ARGV of :data:`_LUA_MARK_HOT` (the hot set lives as long as its latest entry, at most a day)."""
        ttl = max(1, int(min(max(until - now, 1.0), 86400.0) * 1000))
        return [_text(until), _text(now), str(HOT_CAPACITY), str(ttl), *models]

    @staticmethod
    def _decoded(value: Any) -> Any:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

    @classmethod
    def _hot_rows(cls, rows: Any) -> dict[str, float]:
        """``ZRANGEBYSCORE ... WITHSCORES`` rows of :data:`HOT_KEY` -> {model form: until when}."""
        return {cls._decoded(m): float(s) for m, s in rows}

    def _failed(self, exc: BaseException) -> None:
        """One warning per outage; in-process state until :attr:`retry_after` seconds have passed."""
        self.failures += 1
        with self._lock:
            first = self.clock() >= self._down_until
            self._down_until = self.clock() + self.retry_after
        logger.debug("bedrock-hooks: shared state at %s: %s", self.where, exc, exc_info=exc)
        if first:
            logger.warning("bedrock-hooks: shared state at %s unavailable (%s); using in-process state, "
                           "retrying in %gs", self.where, type(exc).__name__, self.retry_after)

    def _fell_back(self, exc: BaseException) -> None:
        if not isinstance(exc, _Down):
            self._failed(exc)


class RedisStore(RedisBase):
    """State on a Redis server, shared by every process that points at it; in-process while Redis fails.

    Commands time out after ``timeout`` seconds (connect included) and are never retried by redis-py:
    a stalled server costs a call at most one timeout, then the store serves from its
    :attr:`fallback` for :data:`RETRY_AFTER` seconds. A failure is logged once per outage, naming the
    server without credentials.
    """

    def __init__(self, url: str, *, salt: str = "", timeout: float = 0.005, retry_after: float = RETRY_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(url, salt=salt, timeout=timeout, retry_after=retry_after, clock=clock)
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        process.after_fork_in_child(self._forget_connection)

    # -- the connection and its circuit --------------------------------------------------------------
    def _forget_connection(self) -> None:
        """In a forked child: the parent's sockets are not ours to use (replies would interleave)."""
        self._client = None
        self._scripts = {}

    def _connected(self) -> Any:
        """The client, or None while Redis is known down (then the caller uses the fallback)."""
        if self.clock() < self._down_until:
            return None
        client = self._client
        if client is None:
            with self._lock:
                client = self._client
                if client is None:
                    client = self._client = self._new_client()
        return client

    def _new_client(self) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis.from_url(self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
                                    retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0)

    def _script(self, name: str, source: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._client.register_script(source)
        return script

    def _run(self, name: str, source: str, keys: list[str], args: list[str]) -> Any:
        """Run a script on Redis; raises on any failure (the callers fall back)."""
        client = self._connected()
        if client is None:
            raise _Down()
        return self._script(name, source)(keys=keys, args=args, client=client)

    # -- operations --------------------------------------------------------------------------------
    def apply(self, op: Operation, family: str, scope: QuotaScope, now: float, args: tuple[float, ...],
              ttl: float) -> tuple[float, ...]:
        key = self.key(family, scope)
        if key is not None:
            try:
                argv = [_text(now), str(max(1, int(ttl * 1000))), "1" if op.readonly else "0"]
                out = self._run(op.name, lua_source(op), [key], argv + [_text(a) for a in args])
                return tuple(float(v) for v in out)
            except Exception as exc:
                self._fell_back(exc)
        return self.fallback.apply(op, family, scope, now, args, ttl)

    def get_text(self, family: str, scope: QuotaScope, now: float, ttl: float) -> str | None:
        key = self.key(family, scope)
        if key is not None:
            try:
                return self._decoded(self._run("touch", _LUA_TOUCH, [key], [self._px(ttl)]))
            except Exception as exc:
                self._fell_back(exc)
        return self.fallback.get_text(family, scope, now, ttl)

    def put_text(self, family: str, scope: QuotaScope, value: str, now: float, ttl: float) -> None:
        key = self.key(family, scope)
        self.fallback.put_text(family, scope, value, now, ttl)  # also here: an outage keeps what we learned
        if key is None:
            return
        try:
            client = self._connected()
            if client is None:
                raise _Down()
            client.set(key, value, px=int(self._px(ttl)))
        except Exception as exc:
            self._fell_back(exc)

    def hot_models(self, now: float) -> dict[str, float]:
        """Models with a remembered profile or an open circuit somewhere in the fleet -> until when."""
        try:
            client = self._connected()
            if client is None:
                return {}
            return self._hot_rows(client.zrangebyscore(HOT_KEY, _text(now), "+inf", withscores=True))
        except Exception as exc:
            self._fell_back(exc)
            return {}

    def mark_hot(self, models: tuple[str, ...], until: float, now: float) -> None:
        if not models:
            return
        try:
            self._run("mark_hot", _LUA_MARK_HOT, [HOT_KEY], self._hot_argv(models, until, now))
        except Exception as exc:
            self._fell_back(exc)

    def clear(self, *families: str) -> None:
        """Forget this process's fallback state (never the fleet's shared state)."""
        self.fallback.clear(*families)


class _Down(Exception):
    """Redis is known down: use the fallback without trying (and without another warning)."""


# -- one store per configuration -------------------------------------------------------------------

_stores: dict[tuple[str, str, float], Any] = {}
_stores_lock = process.lock()
_memory = MemoryStore()


def store_for(settings: Any) -> Store:
    """The process's store for ``settings.state_url``: one per (URL, salt, timeout), made on first use."""
    url = getattr(settings, "state_url", "memory://") or "memory://"
    if not url.lower().startswith(("redis://", "rediss://")):
        return _memory
    key = (url, getattr(settings, "state_salt", ""), float(getattr(settings, "state_timeout", 0.005)))
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = RedisStore(url, salt=key[1], timeout=key[2])
        return store


def uses_wall_clock(store: Store) -> bool:
    """Shared state needs one time base for every process: wall-clock seconds, not a monotonic clock."""
    return bool(getattr(store, "shared", False))


def reset_stores(*families: str) -> None:
    """Forget in-process state of ``families`` (all when none) in every store; never the fleet's."""
    _memory.clear(*families)
    with _stores_lock:
        for store in _stores.values():
            store.clear(*families)

