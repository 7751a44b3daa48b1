"""The expired-token herd across several clients of one session (issue 11, defect 6).

A session hands the same refreshable credentials object to every client it creates; a web service
typically has a few clients (one per worker pool) and many threads. Every client's herd must share
one provider call, and clients of another session keep their own credentials.
"""

from __future__ import annotations

import threading

import bedrock_hooks
from bedrock_hooks.features import Runtime
from conftest import converse, make_client
from test_decide_credentials import Provider, expire_key, refreshable_session

CLIENTS, THREADS_PER_CLIENT = 4, 8


def test_herd_over_several_clients_of_one_session_refreshes_once(server, fake_time):
    provider = Provider()
    session = refreshable_session(provider)
    bedrock_hooks.install(session, runtime=Runtime(sleep=fake_time.sleep))  # the real clock: a real herd
    clients = [make_client(session, server, max_pool_connections=THREADS_PER_CLIENT) for _ in range(CLIENTS)]
    expire_key(server, "AKID0")
    barrier = threading.Barrier(CLIENTS * THREADS_PER_CLIENT)
    results: list[object] = []

    def call(client) -> None:
        barrier.wait()
        try:
            results.append(converse(client)["ResponseMetadata"]["RetryAttempts"])
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=call, args=(client,)) for client in clients for _ in range(THREADS_PER_CLIENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert provider.calls == 1
    assert len(results) == len(threads) and all(r in (0, 1) for r in results), results
