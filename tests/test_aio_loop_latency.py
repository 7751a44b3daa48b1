"""The event loop never stalls for the library (issue 13): a latency probe during a throttling storm.

A real asyncio task ticks as fast as the loop lets it and records the longest gap between two ticks
while many tasks share one aiobotocore client that the server mostly throttles. A plain aiobotocore
client and a hooked one (two sessions, both warmed up, both alive for the whole test) take turns running
the same storm, round after round, with backoff injected on both sides so that no round waits for real:
the hooks' longest stall stays within 1 ms of plain aiobotocore's.

A stall is measured twice. On the wall clock, which includes the time the OS gave other processes: on
a loaded 2-core machine that noise is tens of ms, so the comparison uses the event-loop thread's own
CPU time between two ticks (``time.thread_time``), i.e. the synchronous work the loop did in one go,
which preemption does not inflate; each side's least longest stall over the rounds is compared. A
handler that *blocked* (``time.sleep`` in a backoff) uses no CPU, so blocking is caught apart: the
hooked client's sync ``Runtime.sleep`` raises if it is ever called, and the wall-clock probe is
checked to see a 5 ms blocking wait.
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


async def _blocking_backoff(seconds: float) -> None:
    time.sleep(0.005)  # what a blocking handler would do to the loop


def _no_blocking_sleep(seconds: float) -> None:
    raise AssertionError(f"an async client slept {seconds}s with the blocking Runtime.sleep")


async def _longest_stall_during_a_storm(client, clock=time.thread_time) -> float:
    stop = asyncio.Event()
    worst = 0.0

    async def probe() -> None:
        nonlocal worst
        last = clock()
        while not stop.is_set():
            await asyncio.sleep(0)
            now = clock()
            worst, last = max(worst, now - last), now

    async def worker(n: int) -> None:
        for i in range(CALLS):
            try:
                await aconverse(client, text=f"{n}-{i}")
            except Exception:
                pass

    ticker = asyncio.create_task(probe())
    await asyncio.sleep(0)
    await asyncio.gather(*(worker(n) for n in range(TASKS)))
    stop.set()
    await ticker
    return worst


def _throttle_two_of_three():
    count = [0]

    def handler(request):
        count[0] += 1
        return None if count[0] % 3 == 0 else Reply.throttling()

    return handler


async def _side_by_side(server, hooked_runtime: Runtime, clock=time.thread_time) -> tuple[list[float], list[float]]:
    plain_session, hooked_session = aiobotocore_session(), aiobotocore_session()
    bedrock_hooks.install(hooked_session, runtime=hooked_runtime, rate_limit=False)
    plain, hooked = [], []
    async with aio_client(plain_session, server, max_pool_connections=TASKS) as plain_client, \
            aio_client(hooked_session, server, max_pool_connections=TASKS) as hooked_client:
        for client in (plain_client, hooked_client):  # warm: pools, models, error classes, first-call imports
            await _longest_stall_during_a_storm(client)
        for _ in range(ROUNDS):
            plain.append(await _longest_stall_during_a_storm(plain_client, clock))
            hooked.append(await _longest_stall_during_a_storm(hooked_client, clock))
    return plain, hooked


def test_the_hooks_add_no_loop_stall_during_a_throttling_storm(server):
    server.handler = _throttle_two_of_three()
    runtime = Runtime(sleep=_no_blocking_sleep, async_sleep=_yielding_backoff)
    plain, hooked = asyncio.run(_side_by_side(server, runtime))
    print(f"longest CPU stall over {ROUNDS} rounds (min / median): plain {min(plain) * 1e3:.2f} / "
          f"{statistics.median(plain) * 1e3:.2f} ms, hooked {min(hooked) * 1e3:.2f} / "
          f"{statistics.median(hooked) * 1e3:.2f} ms")
    assert min(hooked) <= min(plain) + ALLOWED, (plain, hooked)


def test_the_probe_sees_a_handler_that_blocks_the_loop(server):
    server.handler = _throttle_two_of_three()
    _, blocked = asyncio.run(_side_by_side(server, Runtime(async_sleep=_blocking_backoff), time.perf_counter))
    assert min(blocked) >= 0.004  # a 5 ms blocking wait shows up on the wall clock
