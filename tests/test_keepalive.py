"""Keep-alive socket options and idle-connection eviction, checked on real sockets (issue 3).

Every assertion about socket options reads them back with ``getsockopt`` from the socket urllib3
really connected to the loopback :class:`BedrockServer`; connection reuse is proven by the
server's ``connection_id``; eviction runs on the injectable ``Runtime.clock`` (no long sleeps).
"""

from __future__ import annotations

import logging
import socket
import threading

import pytest
from botocore.exceptions import ConnectionClosedError

import bedrock_hooks
from bedrock_hooks import keepalive
from bedrock_hooks.keepalive import iter_pooled_sockets
from bedrock_hooks.testing import Reply
from conftest import converse, make_client, new_session

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="per-socket keep-alive checks need Linux")

KEEPALIVE = (socket.SOL_SOCKET, socket.SO_KEEPALIVE)
IDLE = (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", 0))
INTERVAL = (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", 0))
COUNT = (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", 0))


def options(client) -> list[tuple[int, int, int, int]]:
    """(SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT) of every pooled, connected socket."""
    socks = list(iter_pooled_sockets(client))
    assert socks, "expected at least one pooled connection"
    return [tuple(sock.getsockopt(*opt) for opt in (KEEPALIVE, IDLE, INTERVAL, COUNT)) for sock in socks]


def kernel_default() -> tuple[int, int, int, int]:
    with socket.socket() as probe:
        return tuple(probe.getsockopt(*opt) for opt in (KEEPALIVE, IDLE, INTERVAL, COUNT))


def pools(client) -> list:
    return list(client._endpoint.http_session._manager.pools._container.values())


def connection_ids(server) -> list[int]:
    return [r.connection_id for r in server.requests]


# -- 1. per-socket keep-alive ---------------------------------------------------------------------

def test_bedrock_socket_carries_keepalive_and_non_bedrock_client_is_untouched(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), keepalive_idle=7, keepalive_interval=3,
                          keepalive_count=5)
    bedrock = make_client(session, server)
    other = make_client(session, server, service="lambda")  # a non-Bedrock client on the same server
    converse(bedrock)
    other.list_functions()
    assert options(bedrock) == [(1, 7, 3, 5)]
    assert options(other) == [kernel_default()]
    assert other._endpoint.http_session._socket_options == [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    assert all(type(p).__module__.startswith("botocore") for p in pools(other))


def test_defaults_put_the_first_probe_at_45s(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    converse(client)
    assert options(client) == [(1, 45, 15, 4)]


def test_existing_client_and_its_pooled_connection_get_the_options(server, fake_time):
    client = make_client(new_session(), server)
    converse(client)
    assert options(client) == [kernel_default()]
    bedrock_hooks.install(client, runtime=fake_time.runtime(), keepalive_idle=11)
    assert options(client) == [(1, 11, 15, 4)]  # setsockopt on the already-open socket
    converse(client)
    first, second = connection_ids(server)
    assert first == second, "the warm pooled connection must stay in use after install(client)"
    assert len(pools(client)) == 1, "re-keyed: no second pool for the same host"


def test_uninstall_restores_the_original_options_everywhere(server, fake_time):
    client = make_client(new_session(), server)
    http = client._endpoint.http_session
    original = list(http._socket_options)
    original_classes = dict(http._pool_classes_by_scheme)
    proxy = http._get_proxy_manager("http://127.0.0.1:9")  # an existing proxy manager (never connects)
    installation = bedrock_hooks.install(client, runtime=fake_time.runtime(), keepalive_idle=9)
    converse(client)
    assert options(client) == [(1, 9, 15, 4)]
    tunnel = proxy.connection_from_host("bedrock.invalid", 443, scheme="https")  # a new pool, never connected
    assert (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1) in tunnel._get_conn().socket_options
    installation.uninstall()
    assert options(client) == [kernel_default()]
    assert http._socket_options == original
    assert http._manager.connection_pool_kw["socket_options"] == original
    assert proxy.connection_pool_kw["socket_options"] == original
    assert http._pool_classes_by_scheme == original_classes
    assert all(p.conn_kw["socket_options"] == original for p in pools(client))
    # Pools that lived through the installation keep an inert hook (swapping __class__ back under a
    # running _get_conn crashed it: issue 11, defect 4); pools created from now on are botocore's own.
    assert all(isinstance(p, tuple(original_classes.values())) and not type(p)._bh_state.attached
               for p in pools(client) if type(p) not in original_classes.values())
    assert tunnel._get_conn().socket_options == original
    assert type(proxy.connection_from_host("other.invalid", 443, scheme="https")) in original_classes.values()
    fake_time.now += 10_000  # far past the eviction limit: a detached hook evicts nothing
    converse(client)
    assert len(set(connection_ids(server))) == 1, "detach keeps the warm connection"


def test_detach_keeps_botocores_own_tcp_keepalive(server, fake_time):
    client = make_client(new_session(), server, tcp_keepalive=True)
    converse(client)
    default = kernel_default()
    assert options(client) == [(1, *default[1:])]
    installation = bedrock_hooks.install(client, runtime=fake_time.runtime(), keepalive_idle=5)
    assert options(client) == [(1, 5, 15, 4)]
    installation.uninstall()
    assert options(client) == [(1, *default[1:])]  # SO_KEEPALIVE stays on, the OS defaults come back


def test_connection_checked_out_during_install_gets_the_options_when_returned(server, fake_time):
    client = make_client(new_session(), server)
    converse(client)
    pool = pools(client)[0]
    conn = pool._get_conn()  # in use: not in the pool while install() runs
    bedrock_hooks.install(client, runtime=fake_time.runtime(), keepalive_idle=13)
    pool._put_conn(conn)
    assert options(client) == [(1, 13, 15, 4)]


def test_out_of_range_values_are_clamped_not_fatal(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), keepalive_idle=10**6, keepalive_count=10**4)
    client = make_client(session, server)
    converse(client)
    assert options(client) == [(1, 32767, 15, 127)]


def test_platform_without_per_socket_idle_warns_once_and_falls_back(server, fake_time, monkeypatch, caplog):
    monkeypatch.setattr(keepalive, "_idle_option", lambda: None)
    monkeypatch.setattr(keepalive, "_warned", set())
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    for _ in range(2):
        make_client(session, server)
    warnings = [r for r in caplog.records if "no per-socket TCP keep-alive idle option" in r.getMessage()]
    assert len(warnings) == 1
    client = make_client(session, server)
    converse(client)
    assert options(client) == [(1, *kernel_default()[1:])]


def test_keepalive_off_leaves_socket_options_alone(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), keepalive=False)
    client = make_client(session, server)
    converse(client)
    assert options(client) == [kernel_default()]


def test_both_off_attaches_nothing(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), keepalive=False, pool_max_idle=0)
    client = make_client(session, server)
    converse(client)
    assert all(type(p).__module__.startswith("botocore") for p in pools(client))


# -- 2. idle-connection eviction ------------------------------------------------------------------

def test_connection_idle_past_the_limit_is_replaced_before_use(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    converse(client)
    fake_time.now += 299
    converse(client)
    fake_time.now += 301
    converse(client)
    first, second, third = connection_ids(server)
    assert first == second != third


def test_eviction_is_per_connection_not_per_pool(server, fake_time):
    """urllib3's pool is LIFO: the bottom connection ages while the top one is reused."""
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), keepalive=False)
    client = make_client(session, server)

    def concurrently() -> None:
        server.handler = lambda request: Reply.delay(0.3)  # overlap, so two connections are in use
        threads = [threading.Thread(target=converse, args=(client,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        server.handler = None

    concurrently()  # t=1000: two connections go back to the pool
    both = set(connection_ids(server))
    assert len(both) == 2
    fake_time.now += 200
    converse(client)  # t=1200: only the top connection is used
    top = connection_ids(server)[-1]
    (bottom,) = both - {top}
    fake_time.now += 150  # t=1350: bottom idle 350 s, top idle 150 s
    concurrently()
    latest = set(connection_ids(server)[-2:])
    assert top in latest and bottom not in latest and len(latest) == 2


def test_eviction_off(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), pool_max_idle=0)
    client = make_client(session, server)
    converse(client)
    fake_time.now += 10_000
    converse(client)
    assert len(set(connection_ids(server))) == 1


# -- 3. resets and timeouts that still happen -----------------------------------------------------

@pytest.mark.parametrize("fault", [Reply.reset(), Reply.close()], ids=["rst", "fin"])
def test_reset_is_retried_at_once_on_a_new_connection(server, fake_time, fault):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    converse(client)
    server.script(fault, Reply.ok())
    response = converse(client)
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert fake_time.sleeps == []  # immediate
    ids = connection_ids(server)
    assert ids[0] == ids[1] != ids[2]


def test_read_timeout_on_reused_connection_is_retried_at_once(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server, read_timeout=0.5)
    converse(client)
    server.script(Reply.delay(3), Reply.ok())
    response = converse(client)
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert fake_time.sleeps == []
    ids = connection_ids(server)
    assert ids[0] == ids[1] != ids[2]


def test_final_failure_hint_explains_the_idle_timeout_and_what_was_done(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), max_attempts=3)
    client = make_client(session, server)
    server.default = Reply.reset()
    with pytest.raises(ConnectionClosedError) as caught:
        converse(client)
    assert len(server.requests) == 3
    assert len(fake_time.sleeps) == 1  # first retry at once, then backoff
    info = caught.value.bedrock_hooks
    assert info["entry"] == "IdleConnectionReset"
    assert "350 s" in info["cause"]
    (note,) = info["details"]["notes"]
    assert note == "This client sent TCP keep-alive probes after 45s idle and closed pooled connections idle >300s."
    message = str(caught.value)
    assert "[bedrock-hooks] IdleConnectionReset" in message and "350 s" in message
    assert "retried at once on a fresh connection" in message and note in message


def test_no_note_for_unrelated_errors(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    server.script(Reply.validation())
    with pytest.raises(Exception) as caught:
        converse(client)
    assert "notes" not in (caught.value.response.get("BedrockHooks", {}).get("details") or {})
