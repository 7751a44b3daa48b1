"""The event loop never stalls for the library (issue 13): a latency probe during a throttling storm.

A real asyncio task ticks as fast as the loop lets it and records the longest gap between two ticks
while many tasks share one aiobotocore client that the server mostly throttles. Plain aiobotocore and
the hooked client run the same storm side by side in this test (backoff injected for both, so no round
waits for real): the hooks' longest stall stays within 1 ms of plain aiobotocore's. Rounds alternate
and each side's least longest stall over the rounds is compared: a loaded machine's scheduling
noise only ever adds to a stall, and hits both sides alike. A handler that
blocked (``time.sleep`` in a backoff) would show as a stall of at least that sleep: the probe is
checked against exactly that.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import bedrock_hooks
from bedrock_hooks.features import Runtime
from bedrock_hooks.testing import Reply
from _aio import aconverse, aio_botocore_time, aio_client, aiobotocore_session  # noqa: F401 (fixture)

TASKS, CALLS, ROUNDS = 10, 3, 7
ALLOWED = 0.001  # seconds: the hooks' longest stall may exceed plain aiobotocore's by at most this


async def _yielding_backoff(seconds: float) -> None:
    await asyncio.sleep(0)  # injected backoff: yields to the loop like a real wait, ends at once


def _blocking_backoff(seconds: float):
    async def sleep(_: float) -> None:
        time.sleep(0.005)  # what a blocking handler would do to the loop
    return sleep


async def _storm(client) -> None:
    async def worker(n: int) -> None:
        for i in range(CALLS):
            try:
                await aconverse(client, text=f"{n}-{i}")
            except Exception:
                pass

    await asyncio.gather(*(worker(n) for n in range(TASKS)))


async def _longest_stall(session, server, install: Runtime | None) -> float:
    if install is not None:
        bedrock_hooks.install(session, runtime=install, rate_limit=False)
    async with aio_client(session, server, max_pool_connections=TASKS) as client:
        await aconverse(client)  # warm: connection pool, model loading, first-call imports
        stop = asyncio.Event()
        worst = 0.0

        async def probe() -> None:
            nonlocal worst
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0)
                now = time.perf_counter()
                worst, last = max(worst, now - last), now

        ticker = asyncio.create_task(probe())
        await asyncio.sleep(0)
        await _storm(client)
        stop.set()
        await ticker
    if install is not None:
        bedrock_hooks.uninstall(session)
    return worst


def _throttle_two_of_three():
    count = [0]

    def handler(request):
        count[0] += 1
        return None if count[0] % 3 == 0 else Reply.throttling()

    return handler


def test_the_hooks_add_no_loop_stall_during_a_throttling_storm(server):
    server.handler = _throttle_two_of_three()
    plain, hooked = [], []
    for _ in range(ROUNDS):
        plain.append(asyncio.run(_longest_stall(aiobotocore_session(), server, None)))
        hooked.append(asyncio.run(_longest_stall(aiobotocore_session(), server,
                                                 Runtime(async_sleep=_yielding_backoff))))
    print(f"longest stall over {ROUNDS} rounds (min / median): plain {min(plain) * 1e3:.2f} / "
          f"{statistics.median(plain) * 1e3:.2f} ms, hooked {min(hooked) * 1e3:.2f} / {statistics.median(hooked) * 1e3:.2f} ms")
    # Noise only ever adds to a stall, so the least of the rounds is each side's own longest stall
    assert min(hooked) <= min(plain) + ALLOWED, (plain, hooked)


def test_the_probe_sees_a_handler_that_blocks_the_loop(server):
    server.handler = _throttle_two_of_three()
    stall = asyncio.run(_longest_stall(aiobotocore_session(), server, Runtime(async_sleep=_blocking_backoff(0))))
    assert stall >= 0.004  # a 5 ms blocking wait shows up: the comparison above can fail
