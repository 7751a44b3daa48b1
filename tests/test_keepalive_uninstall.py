"""Uninstall while requests are in flight (issue 11, defects 4 and 14), on real sockets.

A thread can be anywhere inside a pool's ``_get_conn`` / ``_put_conn`` when another thread detaches
the client, and a connection can be checked out (carrying the library's keep-alive options) while
the detach walks the pool. Neither may raise into the application, and no socket may come back to
the pool with the library's options once the client is detached.
"""

from __future__ import annotations

import logging
import queue
import socket
import sys
import threading

import pytest

import bedrock_hooks
from bedrock_hooks.keepalive import iter_pooled_sockets
from conftest import converse, make_client, new_session

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="per-socket keep-alive checks need Linux")

OPTIONS = ((socket.SOL_SOCKET, socket.SO_KEEPALIVE), (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", 0)),
           (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", 0)), (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", 0)))
JOIN_TIMEOUT = 30


def read_options(sock) -> tuple[int, ...]:
    return tuple(sock.getsockopt(*opt) for opt in OPTIONS)


def kernel_default() -> tuple[int, ...]:
    with socket.socket() as probe:
        return read_options(probe)


def pooled_options(client) -> list[tuple[int, ...]]:
    socks = list(iter_pooled_sockets(client))
    assert socks, "expected at least one pooled connection"
    return [read_options(sock) for sock in socks]


def only_pool(client):
    (pool,) = client._endpoint.http_session._manager.pools._container.values()
    return pool


def internal_errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "internal error" in r.getMessage()]


def assert_plain_sockets_and_classes(client, original_options, original_classes) -> None:
    """After the last uninstall: botocore's options everywhere, botocore's classes for new pools, and
    any pool that lived through the installation holds a detached (inert) hook."""
    http = client._endpoint.http_session
    assert http._socket_options == original_options
    assert http._manager.connection_pool_kw["socket_options"] == original_options
    assert http._pool_classes_by_scheme == original_classes
    for pool in http._manager.pools._container.values():
        assert pool.conn_kw["socket_options"] == original_options
        assert isinstance(pool, tuple(original_classes.values()))
        if type(pool) not in original_classes.values():
            assert not type(pool)._bh_state.attached, "a pool kept an attached hook after uninstall"
    assert all(opts == kernel_default() for opts in pooled_options(client))


# -- defect 4: a thread inside _get_conn / _put_conn while another thread uninstalls ----------------

def test_uninstall_while_a_thread_is_inside_get_conn_raises_nothing(server, fake_time, caplog):
    """The thread is blocked in urllib3's queue (inside the hooked ``_get_conn``) when uninstall runs."""
    client = make_client(new_session(), server)
    installation = bedrock_hooks.install(client, runtime=fake_time.runtime())
    converse(client)
    pool = only_pool(client)
    inside, release = threading.Event(), threading.Event()
    plain_get = pool.pool.get

    def blocking_get(*args, **kwargs):
        inside.set()
        release.wait(JOIN_TIMEOUT)
        return plain_get(*args, **kwargs)

    pool.pool.get = blocking_get
    result: queue.Queue = queue.Queue()

    def take() -> None:
        try:
            result.put(pool._get_conn())
        except BaseException as exc:  # noqa: BLE001 -- whatever reaches the application
            result.put(exc)

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    assert inside.wait(JOIN_TIMEOUT)
    installation.uninstall()
    release.set()
    thread.join(JOIN_TIMEOUT)
    del pool.pool.get
    conn = result.get_nowait()
    assert not isinstance(conn, BaseException), repr(conn)
    pool._put_conn(conn)
    assert internal_errors(caplog) == []
    assert converse(client)["ResponseMetadata"]["HTTPStatusCode"] == 200


@pytest.mark.parametrize("method", ["_get_conn", "_put_conn"])
def test_pool_method_looked_up_before_uninstall_still_works_after_it(server, fake_time, caplog, method):
    """urllib3 looks a method up, then calls it: uninstall can fall between the two."""
    client = make_client(new_session(), server)
    installation = bedrock_hooks.install(client, runtime=fake_time.runtime())
    converse(client)
    pool = only_pool(client)
    conn = pool._get_conn() if method == "_put_conn" else None
    bound = getattr(pool, method)
    installation.uninstall()
    if method == "_get_conn":
        conn = bound()
        pool._put_conn(conn)
    else:
        bound(conn)
    assert internal_errors(caplog) == []
    assert pooled_options(client) == [kernel_default()]
    assert converse(client)["ResponseMetadata"]["HTTPStatusCode"] == 200


@pytest.fixture
def fast_thread_switches():
    """Switch threads every microsecond (default 5 ms) so the races land inside the pool methods."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def test_install_uninstall_loop_under_load_raises_nothing_and_ends_plain(server, caplog, fast_thread_switches):
    """Callers on four threads while a fifth installs and uninstalls the same client 150 times."""
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    client = make_client(new_session(), server, max_pool_connections=4)
    http = client._endpoint.http_session
    original_options, original_classes = list(http._socket_options), dict(http._pool_classes_by_scheme)
    converse(client)
    stop = threading.Event()
    errors: list[str] = []
    calls = [0]

    def caller() -> None:
        for _ in range(400):
            if stop.is_set():
                return
            try:
                converse(client)
                calls[0] += 1
            except BaseException as exc:  # noqa: BLE001 -- anything is a failure here
                errors.append(f"{type(exc).__module__}.{type(exc).__name__}: {exc}")
                return

    def toggler() -> None:
        try:
            for round_ in range(150):
                installation = bedrock_hooks.install(client, pool_max_idle=0.001 if round_ % 2 else 300)
                installation.uninstall()
        except BaseException as exc:  # noqa: BLE001
            errors.append(f"toggler: {exc!r}")
        finally:
            stop.set()

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(4)]
    threads.append(threading.Thread(target=toggler, daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert errors == [], errors[:5]
    assert internal_errors(caplog) == []
    assert calls[0] > 20
    for _ in range(4):  # each pooled connection comes back through the (detached) hook once
        converse(client)
    assert_plain_sockets_and_classes(client, original_options, original_classes)


# -- defect 14: a connection checked out during uninstall -------------------------------------------

def test_socket_checked_out_during_uninstall_returns_with_botocores_options(server, fake_time):
    client = make_client(new_session(), server)
    installation = bedrock_hooks.install(client, runtime=fake_time.runtime(), keepalive_idle=17)
    converse(client)
    pool = only_pool(client)
    conn = pool._get_conn()  # in use by a request while uninstall walks the pool
    assert read_options(conn.sock)[:2] == (1, 17)
    installation.uninstall()
    pool._put_conn(conn)
    assert pooled_options(client) == [kernel_default()]
    assert conn.socket_options == client._endpoint.http_session._socket_options
    conn.close()  # reconnects with botocore's options too
    converse(client)
    assert pooled_options(client) == [kernel_default()]


def test_reinstall_after_a_detached_pool_applies_the_new_settings(server, fake_time):
    client = make_client(new_session(), server)
    bedrock_hooks.install(client, runtime=fake_time.runtime(), keepalive_idle=21).uninstall()
    converse(client)
    bedrock_hooks.install(client, runtime=fake_time.runtime(), keepalive_idle=23)
    converse(client)
    assert [opts[:2] for opts in pooled_options(client)] == [(1, 23)]
    assert type(only_pool(client))._bh_state.attached
