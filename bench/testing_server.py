"""How promptly the loopback test server (``bedrock_hooks.testing``) reacts: the figures its tests used to assert.

``tests/test_testing_server.py`` asserts behaviour (a held delay is interrupted by ``stop()``, four
clients are served at once, an idle connection is closed); how *fast* that happens depends on the
machine, so it is measured here instead:

* ``stop()`` while a reply is holding a 30 s delay (and while an idle keep-alive connection is open);
* four concurrent calls whose replies are each delayed 0.2 s (wall time vs the 0.2 s of one call);
* how long a client with ``read_timeout=0.3`` takes to give up on a stalled reply.

Usage: ``python bench/testing_server.py [--runs N] [--smoke]``.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import botocore.exceptions  # noqa: E402
from botocore.config import Config  # noqa: E402

from bedrock_hooks.testing import BedrockServer, Reply  # noqa: E402

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]


def _ms(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1e3


def _converse(client: Any) -> Any:
    return client.converse(modelId=MODEL, messages=MESSAGES)


def stop_during_delay() -> float:
    """ms that ``stop()`` takes while one connection is inside a 30 s ``Reply.delay``."""
    server = BedrockServer().start()
    server.script(Reply.delay(30))
    client = server.client(config=Config(retries={"total_max_attempts": 1}, read_timeout=0.1))
    try:
        _converse(client)
    except botocore.exceptions.ReadTimeoutError:
        pass
    return _ms(server.stop)


def stop_with_idle_connection() -> float:
    """ms that ``stop()`` takes with an idle, never-used TCP connection open."""
    server = BedrockServer().start()
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=2)
    deadline = time.monotonic() + 2
    while server.open_connections == 0 and time.monotonic() < deadline:
        time.sleep(0.001)  # until the server accepted it and its thread waits for a request
    try:
        return _ms(server.stop)
    finally:
        idle.close()


def read_timeout_latency() -> float:
    """ms until a client with ``read_timeout=0.3`` raises on a stalled reply (0.3 s is the floor)."""
    with BedrockServer() as server:
        server.script(Reply.delay(30))
        client = server.client(config=Config(retries={"total_max_attempts": 1}, read_timeout=0.3))

        def call() -> None:
            try:
                _converse(client)
            except botocore.exceptions.ReadTimeoutError:
                pass

        return _ms(call)


def parallel_delayed_calls(delay: float = 0.2, clients: int = 4) -> float:
    """ms for ``clients`` concurrent calls each delayed ``delay`` s (``delay`` * 1000 if fully parallel)."""
    with BedrockServer(default=Reply.delay(delay)) as server:
        client = server.client(config=Config(retries={"total_max_attempts": 1}, read_timeout=5))
        _converse(client)  # warm: service model parsed, one pooled connection

        def run() -> None:
            threads = [threading.Thread(target=_converse, args=(client,)) for _ in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        return _ms(run)


MEASURES: dict[str, Callable[[], float]] = {
    "stop() during a 30 s delay": stop_during_delay,
    "stop() with an idle connection": stop_with_idle_connection,
    "read_timeout=0.3 raises after": read_timeout_latency,
    "4 concurrent calls delayed 0.2 s each": parallel_delayed_calls,
}


def run(smoke: bool = False, runs: int = 10) -> dict[str, dict[str, float]]:
    """Median, min and max of each measure over ``runs`` repeats (2 when ``smoke``)."""
    runs = 2 if smoke else max(1, runs)
    results = {}
    for name, measure in MEASURES.items():
        samples = [measure() for _ in range(runs)]
        results[name] = {"median_ms": round(statistics.median(samples), 1), "min_ms": round(min(samples), 1),
                         "max_ms": round(max(samples), 1), "runs": runs}
    return results


def table(results: dict[str, dict[str, float]]) -> str:
    rows = [f"| {name} | {r['median_ms']:.1f} ms | {r['min_ms']:.1f}–{r['max_ms']:.1f} ms |"
            for name, r in results.items()]
    return "\n".join(["| measure | median | range |", "|---|---:|---:|", *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = run(smoke=args.smoke, runs=args.runs)
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
