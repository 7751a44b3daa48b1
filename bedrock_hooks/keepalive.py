"""Connection hygiene: no Bedrock call stalls on a pooled connection the network silently dropped.

NAT Gateways, interface VPC endpoints and NLBs forget a TCP flow after 350 s of idleness without
telling either end. The next request written on that pooled connection is black-holed: the client
waits for its whole ``read_timeout`` (60 s by default) before botocore retries on a new connection.
``Config(tcp_keepalive=True)`` only sets ``SO_KEEPALIVE``, whose first probe follows the kernel
default (7,200 s on Linux), far too late. Two independent defences, per Bedrock client:

* **Per-socket keep-alive** (``BEDROCK_HOOKS_KEEPALIVE*``): ``SO_KEEPALIVE`` plus ``TCP_KEEPIDLE`` /
  ``TCP_KEEPINTVL`` / ``TCP_KEEPCNT`` (``TCP_KEEPALIVE`` on macOS) on every socket, so probes keep
  the middlebox's flow entry alive -- no sysctl needed. botocore fixes a client's socket options when
  its endpoint is created, so they are written into the client's *own* ``URLLib3Session`` (its
  ``_socket_options``, the pool managers' ``connection_pool_kw``, existing pools' ``conn_kw``) and
  set with ``setsockopt`` on sockets that are already pooled. No botocore code is patched.
* **Idle-connection eviction** (``BEDROCK_HOOKS_POOL_MAX_IDLE``): a pooled connection idle longer than
  the limit is closed *before* a request goes out on it, so the request opens a fresh connection
  instead of stalling. This is decided per connection, at the exact point urllib3 hands one out
  (``_get_conn``), from a timestamp taken where it takes it back (``_put_conn``). ``before-send``
  would be the wrong place: it runs before urllib3 picks the connection, and urllib3's pool is LIFO,
  so the top connection stays fresh while connections below it age -- only the hand-out point knows
  which connection the request will use. The hook is a per-client subclass of botocore's own pool
  class, installed through the session's ``_pool_classes_by_scheme`` (shared by its proxy managers),
  so other clients keep botocore's classes and pay nothing; the cost on a Bedrock request is one
  clock read and one dict write per hand-out and return (measured: 1-2 us per request, against
  about 1.6 ms for a whole call to a loopback server).

Errors that still happen (RST, ``ConnectionClosedError``, a read timeout on a reused connection) are
retried at once on a fresh connection by the catalog's ``reconnect`` backoff; this module only adds
a note to the final hint saying which of these defences were active on the failing client.

:meth:`ConnectionHygiene.detach` restores the original socket options everywhere (including on
pooled sockets) and botocore's pool classes.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .config import Settings
from .failsafe import report_failure, safe_invoke
from .features import Registrations, Runtime
from .state import STATE_KEY

logger = logging.getLogger("bedrock_hooks.keepalive")

SocketOption = tuple[int, int, int]

#: Linux's upper bounds (MAX_TCP_KEEPIDLE/KEEPINTVL/KEEPCNT); a larger value would make *every*
#: connect() fail with EINVAL, so values are clamped rather than passed through.
_MAX_IDLE = 32767
_MAX_INTERVAL = 32767
_MAX_COUNT = 127

_IDLE_ENTRIES = ("IdleConnectionReset", "ReadTimeout")
_STAMP = "_bedrock_hooks_idle_since"

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(key: str, message: str, *args: Any) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(message, *args)


# -- which socket options ------------------------------------------------------------------------

def _idle_option() -> int | None:
    """The per-socket "idle before first probe" option: TCP_KEEPIDLE (Linux, Windows, BSD) or
    TCP_KEEPALIVE (macOS, where it means the same); None where the platform has neither."""
    for name in ("TCP_KEEPIDLE", "TCP_KEEPALIVE"):
        value = getattr(socket, name, None)
        if value is not None:
            return int(value)
    return None


def keepalive_options(settings: Settings) -> list[SocketOption]:
    """The keep-alive socket options for ``settings``, each proven acceptable to this kernel.

    Every option is first set on a throwaway, unconnected socket: an option the platform rejects is
    dropped with one warning instead of making every connection attempt fail.
    """
    wanted: list[SocketOption] = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    idle = _idle_option()
    if idle is None:
        _warn_once("no-idle", "bedrock-hooks: this platform has no per-socket TCP keep-alive idle option; "
                   "only SO_KEEPALIVE is set, so the first probe follows the OS default. Lower it below 350 s "
                   "(sysctl net.ipv4.tcp_keepalive_time or equivalent) or rely on BEDROCK_HOOKS_POOL_MAX_IDLE.")
    else:
        wanted.append((socket.IPPROTO_TCP, idle, min(settings.keepalive_idle, _MAX_IDLE)))
        interval = getattr(socket, "TCP_KEEPINTVL", None)
        if interval is not None:
            wanted.append((socket.IPPROTO_TCP, int(interval), min(settings.keepalive_interval, _MAX_INTERVAL)))
        count = getattr(socket, "TCP_KEEPCNT", None)
        if count is not None:
            wanted.append((socket.IPPROTO_TCP, int(count), min(settings.keepalive_count, _MAX_COUNT)))
    return _accepted(wanted)


def _accepted(options: list[SocketOption]) -> list[SocketOption]:
    accepted = []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        for level, name, value in options:
            try:
                probe.setsockopt(level, name, value)
            except OSError as exc:
                _warn_once(f"reject-{level}-{name}", "bedrock-hooks: this platform rejects socket option "
                           "(%d, %d, %d) (%s); it is not set", level, name, value, exc)
                continue
            accepted.append((level, name, value))
    return accepted


def merge_options(original: list[SocketOption], extra: list[SocketOption]) -> list[SocketOption]:
    """``original`` with ``extra`` added; an ``extra`` option replaces the same (level, name) pair."""
    keys = {(level, name) for level, name, _ in extra}
    return [opt for opt in original if (opt[0], opt[1]) not in keys] + list(extra)


def _kernel_defaults(options: list[SocketOption]) -> dict[tuple[int, int], int]:
    """What a fresh socket has for each (level, name): the value to go back to on detach."""
    defaults: dict[tuple[int, int], int] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        for level, name, _ in options:
            try:
                defaults[(level, name)] = probe.getsockopt(level, name)
            except OSError:
                pass
    return defaults


def _restoring(ours: list[SocketOption], original: list[SocketOption]) -> list[SocketOption]:
    """The options that take a socket from ``ours`` back to ``original``: the original value of each
    option this module changed, or the kernel default where the original options did not set it."""
    defaults = _kernel_defaults(ours)
    wanted = {(level, name): value for level, name, value in original}
    return [(level, name, wanted.get((level, name), defaults.get((level, name), 0)))
            for level, name, value in ours if (level, name, value) not in original]


def _setsockopts(sock: Any, options: list[SocketOption]) -> None:
    """Apply ``options`` to an open socket; a socket that is closing is simply skipped."""
    for level, name, value in options:
        try:
            sock.setsockopt(level, name, value)
        except (OSError, AttributeError, ValueError):
            return


# -- walking a URLLib3Session ---------------------------------------------------------------------

def _http_session(client: Any) -> Any | None:
    """The client's botocore ``URLLib3Session`` if it has the attributes this module relies on."""
    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    needed = ("_socket_options", "_manager", "_proxy_managers", "_pool_classes_by_scheme")
    supported = session is not None and all(hasattr(session, name) for name in needed)
    pools = getattr(getattr(session, "_manager", None), "pools", None)  # urllib3 1.26 and 2.x
    if not supported or not (hasattr(pools, "_container") and hasattr(pools, "lock")):
        _warn_once("session", "bedrock-hooks: this client's HTTP session (%s) is not botocore's URLLib3Session; "
                   "keep-alive and idle eviction are not applied to it", type(session).__name__)
        return None
    return session


def _managers(http_session: Any) -> list[Any]:
    return [http_session._manager, *list(http_session._proxy_managers.values())]


def _pools(manager: Any) -> list[Any]:
    container = manager.pools
    with container.lock:
        return list(container._container.values())


def _idle_connections(pool: Any) -> list[Any]:
    """Connections waiting in ``pool`` (urllib3 keeps ``None`` placeholders for unopened slots)."""
    queue = getattr(getattr(pool, "pool", None), "queue", None)
    return [conn for conn in list(queue or ()) if conn is not None]


def _rekey(manager: Any, old: list[SocketOption], new: list[SocketOption]) -> None:
    """Keep existing pools reachable after ``connection_pool_kw['socket_options']`` changed.

    urllib3 keys its pools by their settings, socket options included; without this, the next
    request would build a second pool for the same host and abandon the warm one (and its open
    sockets) until the LRU container dropped it. The container's own ``__setitem__``/``__delitem__``
    would close the pool, hence the direct edit of its ordered dict under its lock.
    """
    container = manager.pools
    old_key, new_key = tuple(old), tuple(new)
    with container.lock:
        inner = container._container
        items = list(inner.items())
        taken = {key for key, _ in items}
        rekeyed = []
        for key, pool in items:
            if getattr(key, "key_socket_options", None) == old_key and hasattr(key, "_replace"):
                candidate = key._replace(key_socket_options=new_key)
                if candidate not in taken:
                    key = candidate
            rekeyed.append((key, pool))
        inner.clear()
        inner.update(rekeyed)


# -- the eviction hook ----------------------------------------------------------------------------

class _HygienicPool:
    """Mixin for botocore's pool classes: per-connection idle eviction and late socket options.

    Subclassed once per client with its settings as class attributes (``_bh_max_idle``,
    ``_bh_clock``, ``_bh_options``), because urllib3 creates pools itself and passes nothing else.
    """

    _bh_max_idle: float = 0.0
    _bh_clock: Callable[[], float]
    _bh_options: list[SocketOption] | None = None
    _bh_base: type = object

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        if self._bh_max_idle:
            try:  # inline rather than safe_invoke: this runs on every request
                since = conn.__dict__.pop(_STAMP, None)
                if since is not None and self._bh_clock() - since > self._bh_max_idle:
                    _evict(conn, self._bh_clock() - since, self._bh_max_idle)
            except Exception as exc:
                report_failure("pool-get", exc)
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            try:
                conn.__dict__[_STAMP] = self._bh_clock()
                if self._bh_options is not None and conn.socket_options is not self._bh_options:
                    _adopt(conn, self._bh_options)
            except Exception as exc:
                report_failure("pool-put", exc)
        super()._put_conn(conn)  # type: ignore[misc]


def _evict(conn: Any, idle: float, max_idle: float) -> None:
    """Close ``conn`` (urllib3 reconnects it on use): it sat in the pool longer than ``max_idle``."""
    if getattr(conn, "sock", None) is None:
        return
    logger.debug("bedrock-hooks: closing pooled connection to %s idle %.1fs (> %gs) before reuse",
                 getattr(conn, "host", "?"), idle, max_idle)
    conn.close()


def _adopt(conn: Any, options: list[SocketOption]) -> None:
    """Give a connection that was checked out while the client was attached the keep-alive options."""
    conn.socket_options = options
    sock = getattr(conn, "sock", None)
    if sock is not None:
        _setsockopts(sock, options)


# -- the per-client feature -------------------------------------------------------------------------

class ConnectionHygiene:
    """Keep-alive socket options and idle eviction on one Bedrock client; detach restores botocore."""

    def __init__(self, client: Any, settings: Settings, runtime: Runtime | None = None) -> None:
        self.settings = settings
        self.runtime = runtime or Runtime()
        self.service = client.meta.service_model.service_id.hyphenize()
        self.events = client.meta.events
        self.http_session = _http_session(client)
        self._original_options: list[SocketOption] | None = None
        self._options: list[SocketOption] | None = None
        self._original_classes: dict[str, type] = {}
        self._classes: dict[type, type] = {}
        self._registrations = Registrations(self.events)

    # -- attach / detach --------------------------------------------------------------------------
    def attach(self) -> None:
        if self.http_session is None:
            return
        if self.settings.keepalive:
            extra = keepalive_options(self.settings)
            if extra:
                self._original_options = list(self.http_session._socket_options)
                self._options = merge_options(self._original_options, extra)
                self._set_options(self._original_options, self._options, fresh_sockets=True)
        self._install_pool_classes()
        if self.settings.hints:
            self._registrations.add(f"after-call-error.{self.service}", self.on_after_call_error,
                                    f"bedrock-hooks-keepalive-note-{self.service}", first=True)

    def detach(self) -> None:
        self._registrations.remove_all()
        if self.http_session is None:
            return
        safe_invoke("detach", self._restore_pool_classes)
        if self._options is not None and self._original_options is not None:
            self._set_options(self._options, self._original_options, fresh_sockets=False)
            self._options = None

    # -- socket options ---------------------------------------------------------------------------
    def _set_options(self, old: list[SocketOption], new: list[SocketOption], *, fresh_sockets: bool) -> None:
        """Point the session, its managers, pools and pooled connections at ``new`` options.

        ``fresh_sockets`` (attach): open pooled sockets get ``new`` via setsockopt. On detach they
        get back the original value of every option this module set, or the kernel's default for a
        socket where the original options did not set it.
        """
        session = self.http_session
        session._socket_options = new
        on_socket = [opt for opt in new if opt not in old] if fresh_sockets else _restoring(old, new)
        for manager in _managers(session):
            manager.connection_pool_kw["socket_options"] = new
            safe_invoke("rekey-pools", _rekey, manager, old, new)
            for pool in _pools(manager):
                self._set_pool_options(pool, new, on_socket)

    @staticmethod
    def _set_pool_options(pool: Any, options: list[SocketOption], on_socket: list[SocketOption]) -> None:
        conn_kw = getattr(pool, "conn_kw", None)
        if isinstance(conn_kw, dict):
            conn_kw["socket_options"] = options
        for conn in _idle_connections(pool):
            conn.socket_options = options
            sock = getattr(conn, "sock", None)
            if sock is not None:
                _setsockopts(sock, on_socket)

    # -- pool classes -----------------------------------------------------------------------------
    def _hygienic_class(self, base: type) -> type:
        cls = self._classes.get(base)
        if cls is None:
            attrs = {"_bh_max_idle": float(self.settings.pool_max_idle), "_bh_clock": staticmethod(self.runtime.clock),
                     "_bh_options": self._options, "_bh_base": base, "__module__": __name__}
            cls = self._classes[base] = type(f"BedrockHooks{base.__name__}", (_HygienicPool, base), attrs)
        return cls

    def _install_pool_classes(self) -> None:
        """New pools (main and proxy managers share this dict) and existing ones get the hook."""
        if not self.settings.pool_max_idle and self._options is None:
            return
        by_scheme = self.http_session._pool_classes_by_scheme
        self._original_classes = dict(by_scheme)
        for scheme, base in self._original_classes.items():
            by_scheme[scheme] = self._hygienic_class(base)
        for manager in _managers(self.http_session):
            for pool in _pools(manager):
                if not isinstance(pool, _HygienicPool):
                    pool.__class__ = self._hygienic_class(type(pool))

    def _restore_pool_classes(self) -> None:
        if not self._original_classes:
            return
        self.http_session._pool_classes_by_scheme.update(self._original_classes)
        self._original_classes = {}
        mine = set(self._classes.values())
        for manager in _managers(self.http_session):
            for pool in _pools(manager):
                if type(pool) in mine:
                    pool.__class__ = type(pool)._bh_base
                for conn in _idle_connections(pool):
                    conn.__dict__.pop(_STAMP, None)

    # -- the note on a final idle/reset failure ---------------------------------------------------
    def on_after_call_error(self, exception: BaseException | None = None, context: Any = None, **kwargs: Any) -> None:
        """Runs just before the hint is built: say which defences were active on this client."""
        try:
            state = context.get(STATE_KEY) if isinstance(context, dict) else None
            classification = getattr(state, "classification", None)
            if classification is None or classification.entry.name not in _IDLE_ENTRIES:
                return
            note = self.describe()
            if note not in state.notes:
                state.notes.append(note)
        except Exception as exc:
            report_failure("keepalive-note", exc)

    def describe(self) -> str:
        """One short sentence on what this client does against idle drops (hints, ``doctor``)."""
        s = self.settings
        probes = f"sent TCP keep-alive probes after {s.keepalive_idle}s idle" if self._options else "had TCP keep-alive off"
        evict = f"closed pooled connections idle >{s.pool_max_idle:g}s" if s.pool_max_idle else "had idle eviction off"
        return f"This client {probes} and {evict}."


def feature(client: Any, settings: Settings, runtime: Runtime) -> ConnectionHygiene | None:
    """The FEATURES factory: nothing to attach when both keep-alive and eviction are off."""
    if not settings.keepalive and not settings.pool_max_idle:
        return None
    return ConnectionHygiene(client, settings, runtime)


def iter_pooled_sockets(client: Any) -> Iterator[Any]:
    """Open sockets waiting in ``client``'s pools (tests and ``doctor`` inspect their options)."""
    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    if session is None:
        return
    for manager in _managers(session):
        for pool in _pools(manager):
            for conn in _idle_connections(pool):
                if getattr(conn, "sock", None) is not None:
                    yield conn.sock
