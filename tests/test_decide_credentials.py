"""Expired-token remedy (issue 11 #6): one refresh for a herd, botocore's refresh lock and re-check.

32 threads hitting ExpiredToken at once used to call the credential provider 26 times (18 at once):
the remedy called ``_protected_refresh()`` directly, skipping botocore's ``_refresh_lock`` and its
"is a refresh still needed?" check. Now one thread refreshes, the others wait and reuse the result.
"""

from __future__ import annotations

import datetime
import threading

from botocore.credentials import RefreshableCredentials

import bedrock_hooks
from bedrock_hooks.features import Runtime
from bedrock_hooks.testing import Reply
from conftest import converse, make_client, new_session

EXPIRED = Reply.error(403, "ExpiredTokenException", "The security token included in the request is expired")
THREADS = 32


class Provider:
    """A credential provider counting its calls; keys AKID0 (the initial ones), AKID1, AKID2..."""

    def __init__(self) -> None:
        self.calls = 0
        self.concurrent = self.most_concurrent = 0
        self._lock = threading.Lock()

    def metadata(self, n: int) -> dict[str, str]:
        expiry = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).isoformat()
        return {"access_key": f"AKID{n}", "secret_key": "s3cr3t", "token": f"tok{n}", "expiry_time": expiry}

    def __call__(self) -> dict[str, str]:
        with self._lock:
            self.calls += 1
            self.concurrent += 1
            self.most_concurrent = max(self.most_concurrent, self.concurrent)
            n = self.calls
        try:
            return self.metadata(n)
        finally:
            with self._lock:
                self.concurrent -= 1


def refreshable_session(provider: Provider):
    session = new_session()
    session._session._credentials = RefreshableCredentials.create_from_metadata(provider.metadata(0), provider,
                                                                                "assume-role")
    return session


def expire_key(server, key: str, times: int | None = None) -> None:
    """The server rejects requests signed with ``key`` (``times`` times at most)."""
    left = [times]

    def handler(request):
        if f"Credential={key}/" not in request.headers.get("Authorization", ""):
            return None
        if left[0] is not None:
            if left[0] <= 0:
                return None
            left[0] -= 1
        return EXPIRED

    server.handler = handler


def test_expired_token_herd_refreshes_once(server, fake_time):
    provider = Provider()
    session = refreshable_session(provider)
    bedrock_hooks.install(session, runtime=Runtime(sleep=fake_time.sleep))  # the real clock: a real herd
    client = make_client(session, server, max_pool_connections=THREADS)
    expire_key(server, "AKID0")
    barrier = threading.Barrier(THREADS)
    results: list[object] = []

    def call() -> None:
        barrier.wait()
        try:
            results.append(converse(client)["ResponseMetadata"]["RetryAttempts"])
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert provider.calls == 1
    assert len(results) == THREADS and all(r in (0, 1) for r in results), results
    retried = [r for r in server.requests if "Credential=AKID1/" in r.headers["Authorization"]]
    assert len(retried) == THREADS


def test_a_later_expiry_refreshes_again(server, fake_time):
    """Reuse covers one herd, not the credentials' lifetime: the next expiry gets its own refresh."""
    provider = Provider()
    session = refreshable_session(provider)
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    expire_key(server, "AKID0", times=1)
    converse(client)
    fake_time.now += 600
    expire_key(server, "AKID1", times=1)
    converse(client)
    assert provider.calls == 2
    assert "Credential=AKID2/" in server.requests[-1].headers["Authorization"]
