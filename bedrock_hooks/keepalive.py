"""Connection hygiene: no Bedrock call stalls on a pooled connection the network silently dropped.

NAT Gateways, interface VPC endpoints and NLBs forget a TCP flow after 350 s of idleness without
telling either end. The next request written on that pooled connection is black-holed: the client
waits for its whole ``read_timeout`` (60 s by default) before botocore retries on a new connection.
``Config(tcp_keepalive=True)`` only sets ``SO_KEEPALIVE``, whose first probe follows the kernel
default (7,200 s on Linux), far too late. Two independent defences, per Bedrock client:

* **Per-socket keep-alive** (``BEDROCK_HOOKS_KEEPALIVE*``): ``SO_KEEPALIVE`` plus ``TCP_KEEPIDLE`` /
  ``TCP_KEEPINTVL`` / ``TCP_KEEPCNT`` (``TCP_KEEPALIVE`` on macOS) on every socket, so probes keep
  the middlebox's flow entry alive -- no sysctl needed. The options are given to each connection
  by the pool hook below as urllib3 hands it out (before it connects), and with ``setsockopt`` to
  sockets already pooled at attach. botocore's ``_socket_options`` and urllib3's pool keyword
  arguments are left alone: they are part of urllib3's pool keys, so changing them under requests
  in flight made pools appear that detach never saw. Whether the kernel accepts each option is
  probed once per process on a throwaway socket, lazily, at the first connection that needs it:
  creating a client opens no socket (pytest-socket and similar guards stay quiet).
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

:meth:`ConnectionHygiene.detach` gives every pooled connection botocore's options back and puts
botocore's classes back for pools created afterwards. A pool that lived through the installation
keeps its subclass, inert: swapping ``__class__`` back while another thread is inside ``_get_conn``
broke that request, so the subclass stays, forwards to botocore's class, and hands back botocore's
options to any connection that was checked out during detach (issue 11, defects 4 and 14).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

from . import process, telemetry
from .aio import is_async
from .config import MAX_KEEPALIVE_COUNT, MAX_KEEPALIVE_IDLE, MAX_KEEPALIVE_INTERVAL, Settings
from .failsafe import report_failure, safe_invoke
from .features import ClientFeature, Runtime
from .classification import facts_from_exception
from .state import call_state, classify_attempt

logger = logging.getLogger("bedrock_hooks.keepalive")

SocketOption = tuple[int, int, int]

_IDLE_ENTRIES = frozenset({"IdleConnectionReset", "ReadTimeout", "TruncatedResponse"})
_STAMP = "_bedrock_hooks_idle_since"

_warned: set[str] = set()
_warned_lock = process.lock()


def _warn_once(key: str, message: str, *args: Any) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(message, *args)


# -- which socket options (probed once per process, lazily) ------------------------------------------

#: Per process: whether this kernel accepts each option, and each (level, name)'s value on a fresh
#: socket (what detach goes back to). Filled by :func:`_probe`, never at client creation.
_accepted_cache: dict[SocketOption, bool] = {}
_defaults_cache: dict[tuple[int, int], int] = {}
_probe_lock = process.lock()


def _idle_option() -> int | None:
    """The per-socket "idle before first probe" option: TCP_KEEPIDLE (Linux, Windows, BSD) or
    TCP_KEEPALIVE (macOS, where it means the same); None where the platform has neither."""
    for name in ("TCP_KEEPIDLE", "TCP_KEEPALIVE"):
        value = getattr(socket, name, None)
        if value is not None:
            return int(value)
    return None


def wanted_options(settings: Settings) -> list[SocketOption]:
    """The keep-alive socket options ``settings`` ask for; no socket opened.

    Clamped to Linux's limits (a larger value fails every connect() with EINVAL) also here, for
    :class:`Settings` built directly rather than parsed.
    """
    wanted: list[SocketOption] = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    idle = _idle_option()
    if idle is None:
        _warn_once("no-idle", "bedrock-hooks: this platform has no per-socket TCP keep-alive idle option; "
                   "only SO_KEEPALIVE is set, so the first probe follows the OS default. Lower it below 350 s "
                   "(sysctl net.ipv4.tcp_keepalive_time or equivalent) or rely on BEDROCK_HOOKS_POOL_MAX_IDLE.")
        return wanted
    wanted.append((socket.IPPROTO_TCP, idle, min(settings.keepalive_idle, MAX_KEEPALIVE_IDLE)))
    for name, value, limit in (("TCP_KEEPINTVL", settings.keepalive_interval, MAX_KEEPALIVE_INTERVAL),
                               ("TCP_KEEPCNT", settings.keepalive_count, MAX_KEEPALIVE_COUNT)):
        option = getattr(socket, name, None)
        if option is not None:
            wanted.append((socket.IPPROTO_TCP, int(option), min(value, limit)))
    return wanted


def keepalive_options(settings: Settings, *, probe: bool = True) -> list[SocketOption]:
    """The keep-alive options for ``settings`` that this kernel accepts.

    An option the platform rejects is dropped with one warning instead of making every connection
    attempt fail. ``probe=False`` opens no socket: options this process has not probed yet are
    returned as asked for (the caller must :func:`_probe` them before a connection uses them).
    """
    wanted = wanted_options(settings)
    if probe:
        _probe(wanted)
    return [option for option in wanted if _accepted_cache.get(option, True)]


def _probed(options: list[SocketOption]) -> bool:
    return all(option in _accepted_cache for option in options)


def _probe(options: list[SocketOption]) -> None:
    """Try each option not yet probed on one throwaway, unconnected socket (at most once per option
    per process), reading the kernel default of its (level, name) first."""
    with _probe_lock:
        todo = [option for option in options if option not in _accepted_cache]
        if not todo:
            return
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            for level, name, value in todo:
                if (level, name) not in _defaults_cache:
                    try:
                        _defaults_cache[(level, name)] = probe.getsockopt(level, name)
                    except OSError:
                        pass
                try:
                    probe.setsockopt(level, name, value)
                except OSError as exc:
                    _warn_once(f"reject-{level}-{name}", "bedrock-hooks: this platform rejects socket option "
                               "(%d, %d, %d) (%s); it is not set", level, name, value, exc)
                    _accepted_cache[(level, name, value)] = False
                    continue
                _accepted_cache[(level, name, value)] = True


def eviction_limit(settings: Settings, configured: float | None = None) -> float | None:
    """The idle limit past which a pooled connection is closed before reuse, for both HTTP stacks.

    ``BEDROCK_HOOKS_POOL_MAX_IDLE`` (0: no limit of the library's), or the stack's own ``configured``
    limit where that is lower (aiohttp's ``keepalive_timeout``: aiobotocore's 12 s is never raised).
    None: no limit at all. urllib3 has no limit of its own; aiohttp applies the limit at hand-out itself.
    """
    limits = [limit for limit in (float(settings.pool_max_idle) or None, configured) if limit is not None]
    return min(limits) if limits else None


def merge_options(original: list[SocketOption], extra: list[SocketOption]) -> list[SocketOption]:
    """``original`` with ``extra`` added; an ``extra`` option replaces the same (level, name) pair."""
    keys = {(level, name) for level, name, _ in extra}
    return [opt for opt in original if (opt[0], opt[1]) not in keys] + list(extra)


def _restoring(ours: list[SocketOption], original: list[SocketOption]) -> list[SocketOption]:
    """The options that take a socket from ``ours`` back to ``original``: the original value of each
    option this module changed, or the kernel default where the original options did not set it."""
    changed = [option for option in ours if option not in original]
    _probe(changed)  # cached: only opens a socket if no connection ever used these options
    wanted = {(level, name): value for level, name, value in original}
    return [(level, name, wanted.get((level, name), _defaults_cache.get((level, name), 0)))
            for level, name, _ in changed]


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


# -- the pool hook ------------------------------------------------------------------------------------

class _HygienicPool:
    """Mixin for botocore's pool classes: per-connection idle eviction and late socket options.

    Subclassed once per attached client, because urllib3 creates pools itself and passes nothing
    else: ``_bh_base`` is botocore's class, ``_bh_state`` the client's :class:`ConnectionHygiene`,
    ``_bh_clock`` its clock. A pool's class is set to such a subclass while attached and is never
    swapped back: another thread may be inside ``_get_conn``/``_put_conn`` at any moment, and
    swapping ``__class__`` under it broke that call (issue 11, defect 4). Detach disables the state
    instead; the subclass then only forwards to botocore's class and takes every connection that
    still carries this library's socket options back to botocore's as it passes (defect 14).
    """

    _bh_base: type = object
    _bh_state: ConnectionHygiene
    _bh_clock: Callable[[], float]

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = self._bh_base._get_conn(self, timeout)  # type: ignore[attr-defined]
        state = self._bh_state
        if state.ready:
            try:  # inline rather than safe_invoke: this runs on every request
                if state.max_idle:
                    since = conn.__dict__.pop(_STAMP, None)
                    if since is not None and self._bh_clock() - since > state.max_idle:
                        _evict(conn, self._bh_clock() - since, state.max_idle, state)
                options = state.options
                if options is not None and conn.socket_options is not options:
                    _adopt(conn, options)  # a new connection, before it connects
            except Exception as exc:
                report_failure("pool-get", exc)
        elif state.attached or conn.socket_options is not state.original:
            safe_invoke("pool-get", state.on_handout, self, conn)  # the first hand-out, or detached
        return conn

    def _put_conn(self, conn: Any) -> None:
        state = self._bh_state
        if conn is not None and state.attached:
            try:
                if state.max_idle:
                    conn.__dict__[_STAMP] = self._bh_clock()
                options = state.options
                if options is not None and conn.socket_options is not options:
                    _adopt(conn, options)
            except Exception as exc:
                report_failure("pool-put", exc)
        self._bh_base._put_conn(self, conn)  # type: ignore[attr-defined]
        if conn is not None and not state.attached and conn.socket_options is not state.original:
            safe_invoke("pool-put", state.release, conn)  # detached before or while this ran


def _botocore_class(cls: type) -> type:
    """The botocore class under one of this module's pool subclasses (``cls`` itself otherwise)."""
    return cls._bh_base if issubclass(cls, _HygienicPool) else cls


def _evict(conn: Any, idle: float, max_idle: float, state: Any = None) -> None:
    """Close ``conn`` (urllib3 reconnects it on use): it sat in the pool longer than ``max_idle``."""
    if getattr(conn, "sock", None) is None:
        return
    logger.debug("bedrock-hooks: closing pooled connection to %s idle %.1fs (> %gs) before reuse",
                 getattr(conn, "host", "?"), idle, max_idle)
    conn.close()
    telemetry.connection_evicted(getattr(state, "settings", None), getattr(state, "service", "bedrock-runtime"))


def _adopt(conn: Any, options: list[SocketOption]) -> None:
    """Give ``conn`` the keep-alive options: for its next connect, and now if its socket is open."""
    conn.socket_options = options
    sock = getattr(conn, "sock", None)
    if sock is not None:
        _setsockopts(sock, options)


# -- the per-client feature -------------------------------------------------------------------------

class IdleDefences(ClientFeature):
    """What both HTTP stacks' hygiene features share: the note on a final idle/reset failure."""

    options: list[SocketOption] | None = None
    max_idle: float = 0.0  #: the idle limit that applies to this client's pooled connections (0: none)
    attached = False
    _lock: Any

    def detach(self) -> None:
        """Remove the handlers, switch the state off (hooks that outlive detach read it), then restore."""
        super().detach()
        if not self.attached:
            return
        with self._lock:
            self._switch_off()
        self._restore()

    def _switch_off(self) -> None:
        self.attached = False

    def _restore(self) -> None:
        raise NotImplementedError

    def _register_note(self) -> None:
        if self.settings.hints:
            self._registrations.add(f"after-call-error.{self.service}", self.on_after_call_error,
                                    f"bedrock-hooks-keepalive-note-{self.service}", first=True)

    def on_after_call_error(self, exception: BaseException | None = None, context: Any = None, **kwargs: Any) -> None:
        """Runs just before the hint is built: say which defences were active on this client."""
        try:
            if exception is None or not isinstance(context, dict):
                return
            # The exception's own classification, shared with the hint that follows: with retry decisions
            # off, no earlier handler of this call classified anything.
            classification = classify_attempt(context, exception, lambda: facts_from_exception(exception))
            if classification is not None and classification.entry.name in _IDLE_ENTRIES:
                call_state(context).note(self.describe())
        except Exception as exc:
            report_failure("keepalive-note", exc)

    def describe(self) -> str:
        """One short sentence on what this client does against idle drops (hints, ``doctor``)."""
        s = self.settings
        probes = f"sent TCP keep-alive probes after {s.keepalive_idle}s idle" if self.options else "had TCP keep-alive off"
        evict = f"closed pooled connections idle >{self.max_idle:g}s" if self.max_idle else "had idle eviction off"
        return f"This client {probes} and {evict}."


class ConnectionHygiene(IdleDefences):
    """Keep-alive socket options and idle eviction on one Bedrock client; detach restores botocore.

    It is also the state the client's pool subclasses consult on every hand-out and return:
    ``attached``, ``ready`` (attached and the options probed), ``max_idle`` and ``options`` are plain
    attributes that detach switches off but never removes, so a pool method already running on
    another thread always finds them.

    The options reach connections only through the pool hook (each connection as it is handed out,
    and those already pooled at attach), never through botocore's ``_socket_options`` or urllib3's
    pool keyword arguments: those are part of urllib3's pool keys, and changing them under requests
    in flight created pools that detach could not see.
    """

    def __init__(self, client: Any, settings: Settings, runtime: Runtime | None = None) -> None:
        super().__init__(client, settings, runtime)
        self.http_session = _http_session(client)
        self.attached = False
        self.ready = False
        self.max_idle = eviction_limit(settings) or 0.0
        #: botocore's options (what every connection goes back to) and the library's, as lists.
        self.original: list[SocketOption] = []
        self.options: list[SocketOption] | None = None
        self._wanted: list[SocketOption] = []
        self._original_classes: dict[str, type] = {}
        self._classes: dict[type, type] = {}
        self._lock = process.lock()

    # -- attach / detach --------------------------------------------------------------------------
    def attach(self) -> None:
        if self.http_session is None:
            return
        self.original = self.http_session._socket_options
        probed = True
        if self.settings.keepalive:
            warm = any(True for _ in _open_sockets(self.http_session))  # setsockopt on them below
            extra = keepalive_options(self.settings, probe=warm)
            self._wanted, probed = extra, _probed(extra)
            if extra:
                self.options = merge_options(list(self.original or ()), extra)
        if not self.max_idle and self.options is None:
            return
        self.attached, self.ready = True, probed
        self._install_pool_classes()
        for conn in self._idle_connections():
            conn.__dict__.pop(_STAMP, None)  # a stamp from an earlier installation's clock
            if self.options is not None:
                _adopt(conn, self.options)
        self._register_note()

    def _switch_off(self) -> None:
        self.attached = self.ready = False

    def _restore(self) -> None:
        safe_invoke("detach", self._restore_pool_classes)
        for conn in self._idle_connections():
            safe_invoke("detach", self.release, conn)

    def _idle_connections(self) -> list[Any]:
        return [conn for manager in _managers(self.http_session) for pool in _pools(manager)
                for conn in _idle_connections(pool)]

    # -- what the pool hook calls off the fast path -----------------------------------------------
    def on_handout(self, pool: Any, conn: Any) -> None:
        """A connection handed out while not ``ready``: probe before its first connect, or clean it."""
        if self.attached:
            self._settle()
            if self.options is not None:
                _adopt(conn, self.options)
        else:
            self.release(conn)

    def release(self, conn: Any) -> None:
        """Take a connection that passes a detached hook back to botocore's socket options.

        Compared by value: the connection may carry the options of another, earlier installation.
        Its idle stamp goes too; one left on a connection that was checked out during detach is
        never read by a detached hook and is dropped by the next attach.
        """
        conn.__dict__.pop(_STAMP, None)
        current = conn.socket_options
        if current is self.original or current == self.original:
            return
        conn.socket_options = self.original
        sock = getattr(conn, "sock", None)
        if sock is not None and current:
            _setsockopts(sock, _restoring(list(current), list(self.original or ())))

    def _settle(self) -> None:
        """The lazy probe (once per process): drop in place any option this kernel rejects, before a
        connection uses it. Every holder of the options list sees the change at once."""
        try:
            _probe(self._wanted)
        except Exception as exc:  # no socket to probe with (a sandbox): botocore's own options are safe
            report_failure("keepalive-probe", exc)
        with self._lock:
            if not self.attached:
                return
            accepted = [option for option in self._wanted if _accepted_cache.get(option)]
            if self.options is not None and accepted != self._wanted:
                self.options[:] = merge_options(list(self.original or ()), accepted)
            self._wanted, self.ready = accepted, True

    # -- pool classes -----------------------------------------------------------------------------
    def _hygienic_class(self, base: type) -> type:
        cls = self._classes.get(base)
        if cls is None:
            attrs = {"_bh_base": base, "_bh_state": self, "_bh_clock": staticmethod(self.runtime.clock),
                     "__module__": __name__}
            cls = self._classes[base] = type(f"BedrockHooks{base.__name__}", (_HygienicPool, base), attrs)
        return cls

    def _install_pool_classes(self) -> None:
        """New pools (main and proxy managers share this dict) and existing ones get the hook.

        A pool still carrying the hook of an earlier, detached installation is moved to this one.
        """
        by_scheme = self.http_session._pool_classes_by_scheme
        self._original_classes = {scheme: _botocore_class(cls) for scheme, cls in by_scheme.items()}
        for scheme, base in self._original_classes.items():
            by_scheme[scheme] = self._hygienic_class(base)
        for manager in _managers(self.http_session):
            for pool in _pools(manager):
                pool.__class__ = self._hygienic_class(_botocore_class(type(pool)))

    def _restore_pool_classes(self) -> None:
        """botocore's classes for pools created from now on; live pools keep the (now inert) hook."""
        by_scheme = self.http_session._pool_classes_by_scheme
        for scheme, base in self._original_classes.items():
            if by_scheme.get(scheme) is self._classes.get(base):  # never undo someone else's change
                by_scheme[scheme] = base
        self._original_classes = {}


def feature(client: Any, settings: Settings, runtime: Runtime) -> ConnectionHygiene | None:
    """The FEATURES factory: nothing to attach when both keep-alive and eviction are off.

    An aiobotocore client gets :mod:`.keepalive_aio` (imported only then: no aiohttp for sync clients)."""
    if not settings.keepalive and not settings.pool_max_idle:
        return None
    if is_async(client):
        from .keepalive_aio import feature as aio_feature

        return aio_feature(client, settings, runtime)
    return ConnectionHygiene(client, settings, runtime)


def iter_pooled_sockets(client: Any) -> Iterator[Any]:
    """Open sockets waiting in ``client``'s pools (tests and ``doctor`` inspect their options)."""
    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    if session is not None:
        yield from _open_sockets(session)


def _open_sockets(session: Any) -> Iterator[Any]:
    for manager in _managers(session):
        for pool in _pools(manager):
            for conn in _idle_connections(pool):
                if getattr(conn, "sock", None) is not None:
                    yield conn.sock
