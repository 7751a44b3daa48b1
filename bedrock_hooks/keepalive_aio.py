"""Connection hygiene for aiobotocore clients: keep-alive and idle eviction on aiohttp's connector.

aiobotocore sends through aiohttp (``AIOHTTPSession``), which ignores botocore's ``socket_options`` and
pools connections in one ``aiohttp.TCPConnector`` per proxy URL, built lazily at the first request from
the session's ``_connector_args``. The two defences of :mod:`.keepalive` map onto public arguments of
that connector:

* **Per-socket keep-alive**: ``socket_factory`` (aiohttp 3.12+) creates every socket the connector
  connects, as aiohappyeyeballs would (or through the application's own factory), and sets the same
  options as for sync clients (:func:`.keepalive.keepalive_options`, probed once per process at the
  first socket) before it connects.
* **Idle eviction**: aiohttp itself closes, at hand-out (``_get``), a pooled connection idle longer
  than the connector's ``keepalive_timeout`` -- the sync rule, decided at the same point. The library
  only lowers that limit to ``BEDROCK_HOOKS_POOL_MAX_IDLE`` where it is higher
  (:func:`.keepalive.eviction_limit`): aiobotocore's default 12 s stays, a
  ``connector_args={"keepalive_timeout": 600}`` becomes 300 s.

Attach replaces the session's ``_connector_args`` with a copy carrying both (the application's
``AioConfig`` dict, shared by its other clients, is never changed): creating a client opens no socket
and touches no connector. Connectors that already exist (``install(client)`` on a client in use) get
the factory and the limit, and ``setsockopt`` on their pooled and in-flight sockets. Detach puts all
of it back -- the session's arguments, each connector's factory and limit, the kernel defaults on every
socket of the client -- and a factory a connector might still hold only creates plain sockets.

The private names are probed by :mod:`.compat` (``aio-connections``): a missing one leaves
aiobotocore's connections exactly as they are, and only them. The httpx backend
(``AioConfig(http_session_cls=HttpxSession)``) is not covered: one warning says so.
"""

from __future__ import annotations

import socket
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from . import compat, process
from .config import Settings
from .failsafe import report_failure, safe_invoke
from .features import Runtime
from .keepalive import (IdleDefences, SocketOption, _restoring, _setsockopts, _warn_once, eviction_limit,
                        keepalive_options)

_ABSENT = object()


class _SocketFactory:
    """The ``socket_factory`` of one client's connectors: a socket as aiohappyeyeballs makes it (or as the
    application's factory does), with the keep-alive options while the client is attached."""

    __slots__ = ("state", "wrapped")

    def __init__(self, state: AioConnectionHygiene, wrapped: Callable[[Any], socket.socket] | None) -> None:
        self.state = state
        self.wrapped = wrapped

    def __call__(self, addr_info: Any) -> socket.socket:
        if self.wrapped is not None:
            sock = self.wrapped(addr_info)
        else:
            family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
            sock = socket.socket(family=family, type=type_, proto=proto)
        if self.state.attached:
            safe_invoke("aio-socket", self.state.adopt, sock)
        return sock


class AioConnectionHygiene(IdleDefences):
    """Keep-alive socket options and the idle limit on one aiobotocore client's aiohttp connectors."""

    def __init__(self, client: Any, settings: Settings, runtime: Runtime | None = None) -> None:
        super().__init__(client, settings, runtime)
        self.http_session = _aiohttp_session(client)
        self.attached = False
        self.options: list[SocketOption] | None = None  # narrowed in place by the lazy probe
        self._probed = False
        self._original_args: dict[str, Any] = {}
        self._args: dict[str, Any] | None = None
        #: connector -> the idle limit it had before attach (connectors that existed at attach).
        self._limits: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._lock = process.lock()

    # -- attach / detach --------------------------------------------------------------------------
    def attach(self) -> None:
        if self.http_session is None:
            return
        original = self.http_session._connector_args
        args = dict(original or {})
        if self.settings.keepalive:
            self.options = keepalive_options(self.settings, probe=False)  # no socket before the first connection
            args["socket_factory"] = _SocketFactory(self, args.get("socket_factory"))
        configured = args.get("keepalive_timeout", _ABSENT)
        if configured is not _ABSENT and not args.get("force_close"):  # aiohttp forbids a limit with force_close
            limit = eviction_limit(self.settings, configured)
            self.max_idle = limit or 0.0
            args["keepalive_timeout"] = limit
        if args == dict(original or {}):
            return  # keep-alive off and aiohttp's own limit already the lower one: nothing to change
        self._original_args, self._args = original, args
        self.attached = True
        self.http_session._connector_args = args
        for connector in _connectors(self.http_session):
            self._adopt_connector(connector)
        self._register_note()

    def _restore(self) -> None:
        if self.http_session._connector_args is self._args:  # never undo someone else's change
            self.http_session._connector_args = self._original_args
        for connector in _connectors(self.http_session):
            safe_invoke("detach", self._release_connector, connector)

    # -- connectors and sockets -------------------------------------------------------------------
    def adopt(self, sock: Any) -> None:
        """Give one socket the keep-alive options (a new one before it connects, or one already in use)."""
        options = self._settled()
        if options:
            _setsockopts(sock, options)

    def _settled(self) -> list[SocketOption]:
        """The options this kernel accepts, probed at the first socket that needs them (once per process)."""
        if not self._probed and self.options is not None:
            try:
                self.options[:] = keepalive_options(self.settings)
            except Exception as exc:  # no socket to probe with (a sandbox): set nothing rather than fail connects
                report_failure("keepalive-probe", exc)
                self.options[:] = []
            self._probed = True
        return self.options or []

    def _adopt_connector(self, connector: Any) -> None:
        """A connector that existed at attach: our factory, our limit, our options on its open sockets."""
        args = self._args or {}
        if "socket_factory" in args:
            connector._socket_factory = _SocketFactory(self, connector._socket_factory)
        if "keepalive_timeout" in args and not getattr(connector, "_force_close", False):
            self._limits[connector] = connector._keepalive_timeout
            connector._keepalive_timeout = eviction_limit(self.settings, connector._keepalive_timeout)
        if self.options:
            for sock in _connector_sockets(connector):
                self.adopt(sock)

    def _release_connector(self, connector: Any) -> None:
        """Plain aiohttp again: the factory and limit it had (or the session's), kernel defaults on its sockets."""
        factory = connector._socket_factory
        if isinstance(factory, _SocketFactory) and factory.state is self:
            connector._socket_factory = factory.wrapped
        if self._args is not None and "keepalive_timeout" in self._args:
            before = self._limits.pop(connector, self._original_args.get("keepalive_timeout"))
            if connector._keepalive_timeout == eviction_limit(self.settings, before):
                connector._keepalive_timeout = before
        if self.options and self._probed:
            restoring = _restoring(list(self.options), [])
            for sock in _connector_sockets(connector):
                _setsockopts(sock, restoring)


def _aiohttp_session(client: Any) -> Any | None:
    """The client's aiobotocore ``AIOHTTPSession`` if it has what this module relies on."""
    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    if isinstance(getattr(session, "_connector_args", None), dict) and hasattr(session, "_sessions"):
        return session
    _warn_once("aio-session", "bedrock-hooks: this aiobotocore client's HTTP session (%s) is not aiobotocore's "
               "AIOHTTPSession (the httpx backend?); keep-alive and idle eviction are not applied to it",
               type(session).__name__)
    return None


def _connectors(http_session: Any) -> list[Any]:
    """The aiohttp connectors the session has built so far (one per proxy URL; none before the first call)."""
    sessions = list((http_session._sessions or {}).values())
    return [connector for connector in (getattr(s, "connector", None) for s in sessions) if connector is not None]


def _connector_sockets(connector: Any) -> Iterator[Any]:
    """The sockets of a connector's pooled and in-flight connections (asyncio ``TransportSocket`` objects)."""
    protocols = [proto for conns in list(connector._conns.values()) for proto, _ in list(conns)]
    for proto in protocols + list(connector._acquired):
        transport = getattr(proto, "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            yield sock


def iter_connection_sockets(client: Any) -> Iterator[Any]:
    """Open sockets of ``client``'s aiohttp connectors, pooled or in use (tests and ``doctor`` read them)."""
    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    if session is not None and hasattr(session, "_sessions"):
        for connector in _connectors(session):
            yield from _connector_sockets(connector)


def feature(client: Any, settings: Settings, runtime: Runtime) -> AioConnectionHygiene | None:
    """The factory :func:`.keepalive.feature` hands aiobotocore clients to; None where aiohttp lacks a hook."""
    if not compat.available(compat.AIO_CONNECTIONS):
        return None
    return AioConnectionHygiene(client, settings, runtime)
