"""Keep-alive and idle eviction on aiobotocore clients (aiohttp's connector), with REAL aiobotocore.

The options are read back with ``getsockopt`` on the live sockets of the client's aiohttp connector;
eviction is driven through aiohttp's own hand-out clock (``aiohttp.connector.monotonic``, the clock
that decides), never by sleeping; the server's connection ids tell a reused connection from a new one.
The NAT-gateway proof is ``tests/test_natgw_aio.py``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bedrock_hooks import compat, keepalive
from bedrock_hooks.config import load_settings
from bedrock_hooks.keepalive_aio import AioConnectionHygiene, _connectors, iter_connection_sockets
from conftest import CREDS
from tests._requires import require

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="per-socket keep-alive checks need Linux")

REPO = Path(__file__).resolve().parents[1]
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]
IDLE, INTERVAL, COUNT = socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT


@pytest.fixture
def aiobotocore():
    return require("aiobotocore.session", group="aio")


@pytest.fixture(autouse=True)
def fresh_compat():
    compat.reset()
    yield
    compat.reset()


class AioClock:
    """aiohttp's hand-out clock, moved by the test: ``_get`` compares it with the release time."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import aiohttp.connector

        self.offset = 0.0
        real = aiohttp.connector.monotonic
        monkeypatch.setattr(aiohttp.connector, "monotonic", lambda: real() + self.offset)


def attach(client: Any, fake_time: Any, **overrides: Any) -> AioConnectionHygiene:
    """Attach the connection feature as an installation does (the registry's factory, then ``attach``)."""
    feature = keepalive.feature(client, compat.restrict(load_settings(**overrides)), fake_time.runtime())
    assert isinstance(feature, AioConnectionHygiene)
    feature.attach()
    return feature


def with_client(aiobotocore: Any, server: Any, body: Callable[[Any], Any], **config: Any) -> Any:
    """Run ``await body(client)`` on a fresh aiobotocore bedrock-runtime client of the loopback server."""
    from aiobotocore.config import AioConfig

    async def run() -> Any:
        session = aiobotocore.get_session()
        async with session.create_client("bedrock-runtime", region_name="us-east-1", endpoint_url=server.url,
                                         config=AioConfig(read_timeout=5, **config), **CREDS) as client:
            return await body(client)

    return asyncio.run(run())


async def converse(client: Any) -> dict[str, Any]:
    return await client.converse(modelId=MODEL, messages=MESSAGES)


def options_of(sock: Any) -> tuple[int, int, int, int]:
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), sock.getsockopt(socket.IPPROTO_TCP, IDLE),
            sock.getsockopt(socket.IPPROTO_TCP, INTERVAL), sock.getsockopt(socket.IPPROTO_TCP, COUNT))


def kernel_defaults() -> tuple[int, int, int, int]:
    with socket.socket() as sock:
        return options_of(sock)


def connections(server: Any) -> list[int]:
    return [request.connection_id for request in server.requests]


# -- keep-alive ---------------------------------------------------------------------------------------

def test_keepalive_options_are_set_on_the_live_aiohttp_socket(aiobotocore, server, fake_time):
    async def body(client):
        attach(client, fake_time, keepalive_idle=19, keepalive_interval=7, keepalive_count=3)
        await converse(client)
        hooked = [options_of(sock) for sock in iter_connection_sockets(client)]
        return hooked

    async def plain(client):
        await converse(client)
        return [options_of(sock) for sock in iter_connection_sockets(client)]

    assert with_client(aiobotocore, server, body) == [(1, 19, 7, 3)]
    assert with_client(aiobotocore, server, plain) == [kernel_defaults()] != [(1, 19, 7, 3)]


def test_attaching_opens_no_socket_and_builds_no_connector(aiobotocore, server, fake_time, monkeypatch):
    for name in ("_accepted_cache", "_defaults_cache"):  # as in a new process: nothing probed yet
        monkeypatch.setattr(keepalive, name, {})
    made = []
    real = socket.socket

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            if kwargs.get("fileno") is None and len(args) < 4:
                made.append(1)
            super().__init__(*args, **kwargs)

    async def body(client):
        monkeypatch.setattr(socket, "socket", Counting)
        attach(client, fake_time)
        before = (len(made), _connectors(client._endpoint.http_session))
        await converse(client)
        return before, len(made)

    before, after = with_client(aiobotocore, server, body)
    assert before == (0, [])
    assert after == 2  # the first call: one throwaway probe socket (once per process), one connection


def test_an_application_socket_factory_is_kept_and_gets_the_options(aiobotocore, server, fake_time):
    made = []

    def factory(addr_info):
        sock = socket.socket(addr_info[0], addr_info[1], addr_info[2])
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        made.append(sock)
        return sock

    async def body(client):
        # where AioConfig(connector_args={"socket_factory": ...}) ends (aiobotocore 3.x; 2.x's AioConfig rejects it)
        http_session = client._endpoint.http_session
        http_session._connector_args = {**http_session._connector_args, "socket_factory": factory}
        attach(client, fake_time, keepalive_idle=21)
        await converse(client)
        return [(options_of(s)[:2], s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                for s in iter_connection_sockets(client)]

    assert with_client(aiobotocore, server, body) == [((1, 21), 1)]
    assert len(made) == 1


def test_a_client_in_use_gets_the_options_on_its_pooled_socket(aiobotocore, server, fake_time):
    async def body(client):
        await converse(client)
        before = [options_of(s) for s in iter_connection_sockets(client)]
        attach(client, fake_time, keepalive_idle=23)
        after = [options_of(s)[:2] for s in iter_connection_sockets(client)]
        await converse(client)
        return before, after

    before, after = with_client(aiobotocore, server, body)
    assert before == [kernel_defaults()] and after == [(1, 23)]
    assert len(set(connections(server))) == 1  # the same, now probing, connection is reused


# -- idle eviction ------------------------------------------------------------------------------------

def _two_calls_apart(aiobotocore, server, fake_time, monkeypatch, idle: float, hooked: bool, **config):
    clock = AioClock(monkeypatch)

    async def body(client):
        if hooked:
            attach(client, fake_time, keepalive=False, pool_max_idle=30)
        await converse(client)
        clock.offset += idle
        await converse(client)
        return _connectors(client._endpoint.http_session)[0]._keepalive_timeout

    limit = with_client(aiobotocore, server, body, **config)
    return len(set(connections(server))), limit


@pytest.mark.parametrize("idle,hooked,expected", [
    (31, True, (2, 30.0)),  # idle past pool_max_idle: closed at hand-out, the call opens a fresh connection
    (29, True, (1, 30.0)),  # below: reused
    (31, False, (1, 600)),  # plain aiobotocore with the application's 600 s limit: the stale one is reused
], ids=["evicted", "reused-below-limit", "plain-reuses"])
def test_a_connection_idle_past_the_limit_is_evicted_before_reuse(aiobotocore, server, fake_time, monkeypatch,
                                                                  idle, hooked, expected):
    limit = {"keepalive_timeout": 600}
    assert _two_calls_apart(aiobotocore, server, fake_time, monkeypatch, idle, hooked,
                            connector_args=limit) == expected
    assert limit == {"keepalive_timeout": 600}  # the application's AioConfig dict is never changed


def test_aiobotocore_s_own_lower_limit_is_never_raised(aiobotocore, server, fake_time, monkeypatch):
    # aiobotocore's default keepalive_timeout (12 s) is below pool_max_idle: it stays, and applies
    assert _two_calls_apart(aiobotocore, server, fake_time, monkeypatch, 13, True) == (2, 12)


def test_force_close_keeps_working(aiobotocore, server, fake_time):
    async def body(client):
        feature = attach(client, fake_time)
        await converse(client)
        await converse(client)
        return feature.max_idle

    max_idle = with_client(aiobotocore, server, body, connector_args={"force_close": True, "keepalive_timeout": None})
    assert max_idle == 0.0 and len(set(connections(server))) == 2


# -- detach -------------------------------------------------------------------------------------------

def test_detach_restores_plain_aiobotocore(aiobotocore, server, fake_time, monkeypatch):
    clock = AioClock(monkeypatch)

    async def body(client):
        http_session = client._endpoint.http_session
        original = http_session._connector_args
        feature = attach(client, fake_time, keepalive_idle=19, pool_max_idle=5)
        await converse(client)
        connector = _connectors(http_session)[0]
        hooked = ([options_of(s)[:2] for s in iter_connection_sockets(client)], connector._keepalive_timeout)
        feature.detach()
        restored = [options_of(s) for s in iter_connection_sockets(client)]
        state = (http_session._connector_args is original, connector._keepalive_timeout, connector._socket_factory)
        clock.offset += 13  # past aiobotocore's own 12 s: aiohttp replaces the connection, with a plain socket
        await converse(client)
        fresh = [options_of(s) for s in iter_connection_sockets(client)]
        return hooked, restored, state, fresh, feature._registrations._items

    hooked, restored, state, fresh, registrations = with_client(aiobotocore, server, body)
    assert hooked == ([(1, 19)], 5.0)
    assert restored == [kernel_defaults()] and fresh == [kernel_defaults()]
    assert state == (True, 12, None)
    assert len(set(connections(server))) == 2 and registrations == []


def test_a_factory_left_on_a_connector_after_detach_makes_plain_sockets(aiobotocore, server, fake_time):
    async def body(client):
        feature = attach(client, fake_time, keepalive_idle=19)
        factory = client._endpoint.http_session._connector_args["socket_factory"]
        feature.detach()
        sock = factory((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 0)))
        with sock:
            return options_of(sock)

    assert with_client(aiobotocore, server, body) == kernel_defaults()


def test_attach_again_after_detach_and_detach_after_the_client_closed(aiobotocore, server, fake_time):
    async def run():
        session = aiobotocore.get_session()
        async with session.create_client("bedrock-runtime", region_name="us-east-1", endpoint_url=server.url,
                                         **CREDS) as client:
            attach(client, fake_time, keepalive_idle=19).detach()
            await converse(client)
            second = attach(client, fake_time, keepalive_idle=29)
            again = [options_of(s)[:2] for s in iter_connection_sockets(client)]
        second.detach()  # the session is closed: nothing left to restore, nothing raised
        return again, client._endpoint.http_session._connector_args

    again, args = asyncio.run(run())
    assert again == [(1, 29)] and "socket_factory" not in args


# -- where it does not apply ----------------------------------------------------------------------------

def test_the_httpx_backend_is_left_alone_with_one_warning(aiobotocore, server, fake_time, caplog, monkeypatch):
    """Not covered yet: one warning, then plain aiobotocore (group ``httpx``: the aio environment installs it)."""
    require("httpx", group="httpx")
    httpxsession = require("aiobotocore.httpxsession", group="httpx")
    monkeypatch.setattr(keepalive, "_warned", set())
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")

    async def body(client):
        feature = attach(client, fake_time)
        await converse(client)
        return feature.attached

    with pytest.warns(DeprecationWarning) if httpxsession.HTTPX_IS_LEGACY else _nothing():
        attached = with_client(aiobotocore, server, body, http_session_cls=httpxsession.HttpxSession)
    warnings = [r.getMessage() for r in caplog.records if "HttpxSession" in r.getMessage()]
    assert attached is False and len(warnings) == 1, warnings
    assert len(server.requests) == 1


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_without_socket_factory_only_the_aio_feature_is_off(aiobotocore, server, fake_time, caplog, monkeypatch):
    """aiohttp before 3.12 has no ``socket_factory``: aio clients keep plain connections, sync ones keep theirs."""
    from aiohttp.connector import TCPConnector

    real = TCPConnector.__init__

    def old_init(self, *args, verify_ssl=True, **kwargs):  # the signature of an aiohttp without the argument
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TCPConnector, "__init__", old_init)
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")

    async def body(client):
        feature = keepalive.feature(client, compat.restrict(load_settings()), fake_time.runtime())
        await converse(client)
        return feature, http_args(client)

    def http_args(client):
        return client._endpoint.http_session._connector_args

    feature, args = with_client(aiobotocore, server, body)
    assert feature is None and "socket_factory" not in args
    warnings = [r.getMessage() for r in caplog.records if r.name == "bedrock_hooks.compat"]
    assert len(warnings) == 1 and "TCPConnector(socket_factory=)" in warnings[0] and "aiobotocore" in warnings[0]
    assert compat.missing(compat.CONNECTIONS) is None  # the sync clients' keep-alive stays on


def test_sync_clients_never_import_aiohttp_and_aio_rows_are_probed_once_aiobotocore_is_imported(aiobotocore):
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, "tests")
        from bedrock_hooks import compat
        from bedrock_hooks.testing import BedrockServer
        import bedrock_hooks
        from conftest import converse, make_client, new_session

        with BedrockServer() as server:
            session = new_session()
            bedrock_hooks.install(session)
            converse(make_client(session, server))
        pending = [row.pending for row in compat.report() if "aio" in row.internal]
        print(pending, "aiohttp" in sys.modules)
        import aiobotocore.session
        print([(row.pending, row.ok) for row in compat.report() if "aio" in row.internal])
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = sum(1 for check in compat.CHECKS if check.loaded == "aiobotocore")  # keep-alive's, streams'
    assert out.stdout.splitlines() == [f"{['aiobotocore'] * rows} False", f"{[(None, True)] * rows}"]


# -- through install() ----------------------------------------------------------------------------------

def test_install_on_an_aio_session_hooks_its_connections_and_uninstall_restores_them(aiobotocore, server, fake_time):
    import bedrock_hooks
    from bedrock_hooks.installation import attached_features

    async def run():
        session = aiobotocore.get_session()
        installation = bedrock_hooks.install(session, runtime=fake_time.runtime(), keepalive_idle=19)
        async with session.create_client("bedrock-runtime", region_name="us-east-1", endpoint_url=server.url,
                                         **CREDS) as client:
            kinds = [type(f).__name__ for f in attached_features(client)]
            await converse(client)
            hooked = [options_of(s)[:2] for s in iter_connection_sockets(client)]
            installation.uninstall()
            plain = [options_of(s) for s in iter_connection_sockets(client)]
            return kinds, hooked, plain, client._endpoint.http_session._connector_args

    kinds, hooked, plain, args = asyncio.run(run())
    assert "AioConnectionHygiene" in kinds
    assert hooked == [(1, 19)] and plain == [kernel_defaults()] and args == {"keepalive_timeout": 12}


def test_a_reset_on_a_reused_aio_connection_is_retried_at_once_as_an_idle_reset(aiobotocore, server, fake_time):
    """aiobotocore reports it as EndpointConnectionError around aiohttp's ClientOSError raised from the
    ConnectionResetError: it was taken for a connect failure (backoff, a wrong hint) instead of the reset it is."""
    import bedrock_hooks
    from bedrock_hooks.testing import Reply

    async def run():
        session = aiobotocore.get_session()
        bedrock_hooks.install(session, runtime=fake_time.runtime(), max_attempts=2)
        async with session.create_client("bedrock-runtime", region_name="us-east-1", endpoint_url=server.url,
                                         **CREDS) as client:
            await converse(client)
            server.script(Reply.reset())
            retried = await converse(client)
            server.script(Reply.reset(), Reply.reset())
            with pytest.raises(Exception) as raised:
                await converse(client)
            return retried, raised.value

    retried, error = asyncio.run(run())
    assert retried["ResponseMetadata"]["RetryAttempts"] == 1
    assert fake_time.sleeps == []  # each first reconnect is immediate: no backoff (a connect failure backs off)
    assert "[bedrock-hooks] IdleConnectionReset" in str(error), str(error)
    assert "This client sent TCP keep-alive probes after 45s idle and closed pooled connections idle >12s" in str(error)
