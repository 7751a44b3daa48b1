"""The autouse fixture of the tests that touch process-wide state (import it into the test module).

Routers (circuits, remembered profiles) and rate-limiter buckets live for the whole process; each test
starts and ends with none, whatever the last uninstall does.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bedrock_hooks import fallbacks, ratelimit


@pytest.fixture(autouse=True)
def fresh_shared_state() -> Iterator[None]:
    fallbacks.reset_routers()
    ratelimit.reset()
    yield
    fallbacks.reset_routers()
    ratelimit.reset()


def throttle_from_two_threads(clients: list, fake_time, call) -> None:
    """A storm that engages the rate limiter: 20 throttled calls from this thread over a second (one thread
    alone does not engage it), then one from a second thread while the first is still alive (a finished
    thread's id may be reused by the next one)."""
    import threading

    for _ in range(20):
        call(clients[0])
        fake_time.now += 0.05
    release, first_done = threading.Event(), threading.Event()

    def first() -> None:
        call(clients[0])
        first_done.set()
        release.wait(5)

    t = threading.Thread(target=first)
    t.start()
    first_done.wait(5)
    second = threading.Thread(target=call, args=(clients[1],))
    second.start()
    second.join()
    release.set()
    t.join()
