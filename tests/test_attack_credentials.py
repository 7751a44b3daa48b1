"""The expired-token herd across several clients of one session, and with a failing provider (issue 11, #6).

A session hands the same refreshable credentials object to every client it creates; a web service
typically has a few clients (one per worker pool) and many threads. Every client's herd must share
one provider call. When that call fails (STS unreachable, an SSO session expired), the herd must
share the failure too: each waiter calling the failing provider again, one after the other under
botocore's refresh lock, stalled the last thread for threads x the provider's timeout, where plain
botocore fails every call at once.
"""

from __future__ import annotations

import threading

from botocore.exceptions import ClientError

import bedrock_hooks
from bedrock_hooks.features import Runtime
from conftest import converse, make_client
from test_decide_credentials import Provider, expire_key, refreshable_session

CLIENTS, THREADS_PER_CLIENT = 4, 8


class FailingProvider(Provider):
    """A provider whose refresh fails (after the initial keys), as when STS or SSO is unreachable."""

    def __call__(self) -> dict[str, str]:
        super().__call__()
        raise RuntimeError("the credential provider is unreachable")


def herd(clients, threads_per_client: int) -> list[object]:
    """Every client called by ``threads_per_client`` threads at once; what each call returned or raised."""
    barrier = threading.Barrier(len(clients) * threads_per_client)
    results: list[object] = []

    def call(client) -> None:
        barrier.wait()
        try:
            results.append(converse(client)["ResponseMetadata"]["RetryAttempts"])
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=call, args=(client,)) for client in clients for _ in range(threads_per_client)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == len(threads)
    return results


def test_herd_over_several_clients_of_one_session_refreshes_once(server, fake_time):
    provider = Provider()
    session = refreshable_session(provider)
    bedrock_hooks.install(session, runtime=Runtime(sleep=fake_time.sleep))  # the real clock: a real herd
    clients = [make_client(session, server, max_pool_connections=THREADS_PER_CLIENT) for _ in range(CLIENTS)]
    expire_key(server, "AKID0")
    results = herd(clients, THREADS_PER_CLIENT)
    assert provider.calls == 1
    assert all(r in (0, 1) for r in results), results


def test_a_failing_refresh_is_shared_by_the_herd(server, fake_time):
    provider = FailingProvider()
    session = refreshable_session(provider)
    bedrock_hooks.install(session, runtime=Runtime(sleep=fake_time.sleep))  # the real clock: a real herd
    client = make_client(session, server, max_pool_connections=THREADS_PER_CLIENT * CLIENTS)
    expire_key(server, "AKID0")
    results = herd([client], THREADS_PER_CLIENT * CLIENTS)
    assert provider.calls == 1  # not once per waiting thread
    assert all(isinstance(r, ClientError) for r in results), results
    info = results[0].response["BedrockHooks"]
    assert info["entry"] == "ExpiredToken"
    assert any("refresh failed" in note for note in info["details"]["notes"]), info["details"]
