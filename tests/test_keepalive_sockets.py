"""Creating a Bedrock client opens no socket (issue 12 §4: it tripped pytest-socket in langchain-aws).

The keep-alive options are checked on a throwaway socket once per process (per set of options),
lazily, just before the first connection that would use them; the kernel defaults needed on
uninstall come from the same probe.
"""

from __future__ import annotations

import socket
import threading

import pytest

import bedrock_hooks
from bedrock_hooks import keepalive
from bedrock_hooks.keepalive import iter_pooled_sockets
from conftest import converse, make_client, new_session

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="per-socket keep-alive checks need Linux")


class SocketCounter:
    """Counts new sockets (not accepted ones) that the test's own thread constructs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        thread = threading.get_ident()
        counter = self
        real = socket.socket

        class Counting(real):  # type: ignore[misc, valid-type]
            def __init__(self, *args, **kwargs):
                if kwargs.get("fileno") is None and len(args) < 4 and threading.get_ident() == thread:
                    counter.count += 1
                super().__init__(*args, **kwargs)

        monkeypatch.setattr(socket, "socket", Counting)

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


@pytest.fixture
def fresh_process_probe(monkeypatch):
    """As in a new process: nothing probed yet."""
    for name in ("_accepted_cache", "_defaults_cache"):
        monkeypatch.setattr(keepalive, name, {}, raising=False)


def test_creating_a_client_opens_no_socket(server, fake_time, monkeypatch, fresh_process_probe):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), keepalive_idle=19)
    counter = SocketCounter(monkeypatch)
    client = make_client(session, server)
    other = make_client(session, server, service="bedrock")
    assert counter.take() == 0, "client creation opened a socket"
    converse(client)
    assert counter.take() == 2, "first call: one probe socket, one connection"
    second = make_client(session, server)
    assert counter.take() == 0
    converse(second)
    assert counter.take() == 1, "the probe is cached per process: only the connection"
    assert other is not None
    sock = next(iter_pooled_sockets(client))
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 19


def test_uninstall_opens_no_socket_once_probed(server, fake_time, monkeypatch, fresh_process_probe):
    session = new_session()
    installation = bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    converse(client)
    counter = SocketCounter(monkeypatch)
    installation.uninstall()
    assert counter.take() == 0
    with socket.socket() as fresh:
        default = fresh.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
    assert next(iter_pooled_sockets(client)).getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == default


def test_an_option_the_kernel_rejects_is_dropped_before_the_first_connection(server, fake_time, monkeypatch,
                                                                                  fresh_process_probe):
    """The probe is lazy, so its verdict must still reach the options before any connect() uses them."""
    real = socket.socket
    count = getattr(socket, "TCP_KEEPCNT")

    class Rejecting(real):  # type: ignore[misc, valid-type]
        def setsockopt(self, level, name, value, *rest):
            if (level, name) == (socket.IPPROTO_TCP, count):
                raise OSError(22, "Invalid argument")
            return super().setsockopt(level, name, value, *rest)

    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), keepalive_idle=29)
    client = make_client(session, server)
    monkeypatch.setattr(socket, "socket", Rejecting)
    assert converse(client)["ResponseMetadata"]["HTTPStatusCode"] == 200
    monkeypatch.setattr(socket, "socket", real)
    sock = next(iter_pooled_sockets(client))
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 29
    with real() as fresh:
        assert sock.getsockopt(socket.IPPROTO_TCP, count) == fresh.getsockopt(socket.IPPROTO_TCP, count)
    assert len(client._endpoint.http_session._manager.pools._container) == 1, "no second pool"
