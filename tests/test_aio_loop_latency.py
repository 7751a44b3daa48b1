"""The event loop never stalls for the library (issue 13): a latency probe during a throttling storm.

Many tasks share one aiobotocore client that the server mostly throttles. A plain aiobotocore client and a
hooked one (two sessions, both warmed up, both alive for the whole test) take turns running the same storm,
round after round, with backoff injected on both sides so that no round waits for real. Every callback
the event loop runs is timed (``asyncio.Handle._run``: one step of one task, i.e. everything a response's
handlers do before the task's next ``await``); the longest one is the longest stall any piece of code
caused the loop, and the hooks' must stay within 1 ms of plain aiobotocore's.

The time is the loop thread's own CPU time (``time.thread_time``): on a loaded 2-core machine the wall
clock adds tens of ms of preemption to either side. (A first version measured the gap between two ticks
of a probe task; that gap sums every callback of one loop iteration, so it depended on how many answers
arrived together and varied by several ms between identical rounds: flaky at a 1 ms bound.) A handler
that *blocked* (``time.sleep`` in a backoff) uses no CPU, so blocking is caught apart: the hooked client's
sync ``Runtime.sleep`` raises if it is ever called, and the wall-clock timer is checked to see a 5 ms
blocking wait.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import bedrock_hooks
from bedrock_hooks.features import Runtime
from bedrock_hooks.testing import Reply
from _aio import aconverse, aio_botocore_time, aio_client, aiobotocore_session  # noqa: F401 (fixture)

TASKS, CALLS, ROUNDS = 10, 3, 11  # more rounds: each side's least stall is less at the mercy of a noisy one
ALLOWED = 0.001  # seconds: the hooks' longest stall may exceed plain aiobotocore's by at most this


async def _yielding_backoff(seconds: float) -> None:
    await asyncio.sleep(0)  # injected backoff: yields to the loop like a real wait, ends at once


async def _blocking_backoff(seconds: float) -> None:
    time.sleep(0.005)  # what a blocking handler would do to the loop


def _no_blocking_sleep(seconds: float) -> None:
    raise AssertionError(f"an async client slept {seconds}s with the blocking Runtime.sleep")


class _CallbackTimer:
    """The longest single callback the event loop ran (``asyncio.Handle._run``), timed on ``clock``.

    A callback is one step of one task: everything a response's handlers do before the task's next
    ``await``. The loop can run nothing else meanwhile, so the longest callback is the longest stall any
    one piece of code caused; unlike the gap between two ticks of a probe task, it does not depend on
    how many tasks' answers happened to arrive in the same loop iteration (noise of several ms).
    """

    def __init__(self, clock) -> None:
        self.clock = clock
        self.worst = 0.0

    def install(self, monkeypatch) -> None:
        original = asyncio.events.Handle._run
        timer = self

        def timed(handle) -> None:
            started = timer.clock()
            try:
                original(handle)
            finally:
                timer.worst = max(timer.worst, timer.clock() - started)

        monkeypatch.setattr(asyncio.events.Handle, "_run", timed)


async def _longest_stall_during_a_storm(client, timer: _CallbackTimer) -> float:
    async def worker(n: int) -> None:
        for i in range(CALLS):
            try:
                await aconverse(client, text=f"{n}-{i}")
            except Exception:
                pass

    timer.worst = 0.0
    await asyncio.gather(*(worker(n) for n in range(TASKS)))
    return timer.worst


def _throttle_two_of_three():
    count = [0]

    def handler(request):
        count[0] += 1
        return None if count[0] % 3 == 0 else Reply.throttling()

    return handler


async def _side_by_side(server, hooked_runtime: Runtime, timer: _CallbackTimer) -> tuple[list[float], list[float]]:
    plain_session, hooked_session = aiobotocore_session(), aiobotocore_session()
    bedrock_hooks.install(hooked_session, runtime=hooked_runtime, rate_limit=False)
    plain, hooked = [], []
    async with aio_client(plain_session, server, max_pool_connections=TASKS) as plain_client, \
            aio_client(hooked_session, server, max_pool_connections=TASKS) as hooked_client:
        for client in (plain_client, hooked_client):  # warm: pools, models, error classes, first-call imports
            await _longest_stall_during_a_storm(client, timer)
        for _ in range(ROUNDS):
            plain.append(await _longest_stall_during_a_storm(plain_client, timer))
            hooked.append(await _longest_stall_during_a_storm(hooked_client, timer))
    return plain, hooked


def test_the_hooks_add_no_loop_stall_during_a_throttling_storm(server, monkeypatch):
    server.handler = _throttle_two_of_three()
    runtime = Runtime(sleep=_no_blocking_sleep, async_sleep=_yielding_backoff)
    timer = _CallbackTimer(time.thread_time)
    timer.install(monkeypatch)
    plain, hooked = asyncio.run(_side_by_side(server, runtime, timer))
    print(f"longest callback (CPU) over {ROUNDS} rounds (min / median): plain {min(plain) * 1e3:.2f} / "
          f"{statistics.median(plain) * 1e3:.2f} ms, hooked {min(hooked) * 1e3:.2f} / "
          f"{statistics.median(hooked) * 1e3:.2f} ms")
    assert min(hooked) <= min(plain) + ALLOWED, (plain, hooked)


def test_the_probe_sees_a_handler_that_blocks_the_loop(server, monkeypatch):
    server.handler = _throttle_two_of_three()
    timer = _CallbackTimer(time.perf_counter)  # a blocked loop uses no CPU: the wall clock sees it
    timer.install(monkeypatch)
    _, blocked = asyncio.run(_side_by_side(server, Runtime(async_sleep=_blocking_backoff), timer))
    assert min(blocked) >= 0.004  # a 5 ms blocking wait shows up on the wall clock
