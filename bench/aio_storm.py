"""Benchmark: an async throttling storm — 200 concurrent tasks on one aiobotocore client.

The server (own process, ``_serve.py``'s ``storm`` scenario) admits ``--rate`` requests/s through one
token bucket (``--burst`` deep) and answers 429 ThrottlingException beyond it. ``--tasks`` asyncio tasks
share one aiobotocore client and call Converse back to back for ``--duration`` seconds; a call counts as
a success when it returns within ``--deadline`` seconds (bedrock-hooks is told the same deadline through
``retry_deadline``).

Compared side by side in one run, in rotating order: plain aiobotocore in ``standard`` and ``adaptive``
retry modes, and bedrock-hooks installed on a ``standard`` and on an ``adaptive`` client. Reported per
mode: success rate, requests the server received, wasted requests (answered 429) per success, p50/p99
latency of all calls, and the event loop's longest stall: the longest single callback the loop ran (one
step of one task: everything a response's handlers do before the task's next ``await``), in the loop
thread's CPU time (preemption by other processes on a shared machine does not count), and the same on
the wall clock (which also sees a handler that blocked the loop by sleeping). The longest callback is often
a garbage-collection pause, plain aiobotocore's included, so the 99th and 99.9th percentiles of callback CPU
time are reported beside it.

    python bench/aio_storm.py            # ~1 min
    python bench/aio_storm.py --smoke    # seconds; numbers mean nothing

Importable: ``run(smoke=True)`` returns the result dict, ``table(result)`` the markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CREDS, MESSAGES, MODEL, ServerProcess, error_code, markdown_table, percentile  # noqa: E402

#: mode -> (aiobotocore retry mode, install bedrock-hooks on the client?)
MODES: dict[str, tuple[str, bool]] = {
    "aiobotocore standard": ("standard", False),
    "aiobotocore adaptive": ("adaptive", False),
    "bedrock-hooks (standard client)": ("standard", True),
    "bedrock-hooks (adaptive client)": ("adaptive", True),
}
FULL = {"duration": 8.0, "tasks": 200, "rate": 60.0, "burst": 10.0, "service_ms": 20.0, "deadline": 10.0,
        "repeats": 2, "pool": 100}
SMOKE = {"duration": 0.6, "tasks": 20, "rate": 30.0, "burst": 5.0, "service_ms": 5.0, "deadline": 3.0,
         "repeats": 1, "pool": 20}


class _CallbackTimer:
    """The longest callback the event loop runs while installed (``asyncio.Handle._run``), CPU and wall."""

    def __init__(self) -> None:
        self.cpu = self.wall = 0.0
        self.cpus: list[float] = []  #: every callback's CPU time (for percentiles: the max is often a GC pause)
        self._original: Any = None

    def __enter__(self) -> _CallbackTimer:
        self._original = original = asyncio.events.Handle._run
        timer = self

        def timed(handle: Any) -> None:
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                original(handle)
            finally:
                spent = time.thread_time() - cpu
                timer.cpus.append(spent)
                timer.cpu = max(timer.cpu, spent)
                timer.wall = max(timer.wall, time.perf_counter() - wall)

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.events.Handle._run = self._original  # type: ignore[method-assign]


async def _load(client: Any, p: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    records: list[tuple[bool, float, str]] = []
    end = loop.time() + p["duration"]

    async def worker() -> None:
        while loop.time() < end:
            t0 = loop.time()
            try:
                await client.converse(modelId=MODEL, messages=MESSAGES)
                outcome = "ok"
            except Exception as exc:  # every failure counts, whatever aiobotocore raised
                outcome = error_code(exc)
            latency = loop.time() - t0
            if outcome == "ok" and latency > p["deadline"]:
                outcome = "late"
            records.append((outcome == "ok", latency, outcome))

    t0 = time.monotonic()
    with _CallbackTimer() as timer:
        await asyncio.gather(*(worker() for _ in range(int(p["tasks"]))))
    wall = time.monotonic() - t0
    ok = [lat for good, lat, _ in records if good]
    every = [lat for _, lat, _ in records]
    return {"calls": len(records), "successes": len(ok), "success_rate": len(ok) / len(records) if records else 0.0,
            "wall_s": wall, "p50_ms": percentile(every, 50) * 1e3, "p99_ms": percentile(every, 99) * 1e3,
            "loop_stall_cpu_ms": timer.cpu * 1e3, "loop_stall_wall_ms": timer.wall * 1e3,
            "callback_cpu_p99_ms": percentile(timer.cpus, 99) * 1e3, "callback_cpu_p999_ms": percentile(timer.cpus, 99.9) * 1e3}


async def _one(server: ServerProcess, mode: tuple[str, bool], p: dict[str, Any]) -> dict[str, Any]:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    import bedrock_hooks

    retry_mode, hooked = mode
    config = AioConfig(retries={"mode": retry_mode}, max_pool_connections=int(p["pool"]), read_timeout=30)
    async with get_session().create_client("bedrock-runtime", region_name="us-east-1", endpoint_url=server.url,
                                           config=config, **CREDS) as client:
        installation = bedrock_hooks.install(client, retry_deadline=p["deadline"]) if hooked else None
        try:
            if installation is not None and not installation.active:
                raise RuntimeError(f"bedrock-hooks did not install on the aiobotocore client: {installation.reason}")
            server.scenario("ok")
            await client.converse(modelId=MODEL, messages=MESSAGES)  # first-call costs (models, endpoint) not timed
            server.scenario("storm", rate=p["rate"], burst=p["burst"], service_ms=p["service_ms"])
            result = await _load(client, p)
        finally:
            bedrock_hooks.uninstall(client)
    stats = server.stats()
    result["requests"] = stats["requests"]
    result["wasted"] = stats["requests"] - stats["outcomes"].get("ok", 0)
    result["wasted_per_success"] = result["wasted"] / result["successes"] if result["successes"] else float("inf")
    return result


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = {key: sum(r[key] for r in runs) for key in ("calls", "successes", "requests", "wasted", "wall_s")}
    out["success_rate"] = out["successes"] / out["calls"] if out["calls"] else 0.0
    out["wasted_per_success"] = out["wasted"] / out["successes"] if out["successes"] else float("inf")
    for key in ("p50_ms", "p99_ms", "callback_cpu_p99_ms", "callback_cpu_p999_ms"):
        out[key] = sum(r[key] for r in runs) / len(runs)
    for key in ("loop_stall_cpu_ms", "loop_stall_wall_ms"):
        out[key] = max(r[key] for r in runs)
    out["repeats"] = len(runs)
    return out


def run(*, smoke: bool = False, only: tuple[str, ...] = (), **overrides: Any) -> dict[str, Any]:
    p = dict(SMOKE if smoke else FULL)
    p.update({k: v for k, v in overrides.items() if v is not None})
    names = [name for name in MODES if not only or name in only]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with ServerProcess() as server:
        for rep in range(int(p["repeats"])):
            for name in names if rep % 2 == 0 else names[::-1]:  # rotate: drift hits every mode alike
                runs[name].append(asyncio.run(_one(server, MODES[name], p)))
                time.sleep(0.2)
    return {"params": p, "modes": {name: _merge(r) for name, r in runs.items()}}


def table(result: dict[str, Any]) -> str:
    rows = [[name, f"{r['success_rate'] * 100:.1f}%", r["successes"], r["requests"], r["wasted"],
             f"{r['wasted_per_success']:.2f}", f"{r['p50_ms']:,.0f} ms", f"{r['p99_ms']:,.0f} ms",
             f"{r['callback_cpu_p99_ms']:.2f} / {r['callback_cpu_p999_ms']:.2f} / {r['loop_stall_cpu_ms']:.1f} ms",
             f"{r['loop_stall_wall_ms']:.1f} ms"]
            for name, r in result["modes"].items()]
    return markdown_table(["mode", "success rate", "successes", "requests sent", "wasted (429)",
                           "429s / success", "p50", "p99", "loop callback CPU p99 / p99.9 / max",
                           "longest callback (wall)"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", action="store_true")
    for key in ("duration", "tasks", "rate", "deadline"):
        parser.add_argument(f"--{key}", type=float)
    args = parser.parse_args()
    result = run(smoke=args.smoke, duration=args.duration, tasks=args.tasks, rate=args.rate, deadline=args.deadline)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
